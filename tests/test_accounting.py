"""Training accounting is honest: training seconds (and so tokens/s) hold forward, backward and
optimizer steps only; validation and state saves are counted apart; every table says which stage
peaked where."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("torch")

from harness.options import RunConfig  # noqa: E402
from harness.train.loop import train
from harness.types import TrainItem  # noqa: E402


def test_validation_time_is_not_training_time(tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model("gpt2"), dtype=torch.float32)
    items = [TrainItem(list(range(5, 5 + n)), lm_labels=[-100] * 3 + list(range(8, 5 + n))) for n in range(6, 22)]
    config = dataclasses.replace(RunConfig(task="sst2", model="tiny"), batch_size=4, epochs=1.0, evals_per_epoch=4)
    pause = 0.4

    def slow_validation(_model: Any) -> dict[str, float]:
        time.sleep(pause)  # a validation pass that takes real time
        return {"loss": 1.0}

    started = time.perf_counter()
    result = train(model, items, config, 0, slow_validation, log=lambda _: None, state_dir=tmp_path / "state")
    wall = time.perf_counter() - started
    evaluations = 4  # 4 steps, a validation after each
    assert result.steps == 4 and result.validation_seconds >= evaluations * pause
    assert result.train_seconds <= wall - evaluations * pause  # none of the sleeping is training time
    assert result.tokens_per_second == pytest.approx(result.train_tokens / result.train_seconds)


def test_before_after_tables_show_validation_seconds_and_each_stages_peak(bench: Any, tiny_model: Any,
                                                                           data_dir: Path, tmp_path: Path) -> None:
    code, out, err = bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                           tmp_path / "results", "--train-samples", "16", "--eval-samples", "8",
                           "--validation-samples", "8")
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("| task"))
    assert "| train s | val s | train tok/s | peak MB base/train/eval |" in header
    row = next(line for line in out.splitlines() if line.startswith("| sst2"))
    peaks = row.rstrip(" |").rsplit("| ", 1)[-1].split("/")
    assert len(peaks) == 3 and all(float(peak) > 0 for peak in peaks)
