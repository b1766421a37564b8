"""`--precision` and `--compile`: what auto means on this machine, that bf16 autocast really runs
the matrix products in bf16 (and training still learns), and that a compiled forward trains to the
same numbers as the eager one."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from harness.options import RunConfig  # noqa: E402
from harness.errors import BenchError  # noqa: E402
from harness.train.loop import train
from harness.types import TrainItem  # noqa: E402
from harness.backends.precision import autocast, resolved_precision  # noqa: E402

SMALL = ("--train-samples", "24", "--eval-samples", "16", "--validation-samples", "8", "--eval-batch-size", "8",
         "--batch-size", "8", "--max-length", "96")


def test_auto_is_fp32_on_a_cpu_and_bf16_only_when_asked():
    cpu = torch.device("cpu")
    assert resolved_precision("auto", cpu) == "fp32"
    assert resolved_precision("bf16", cpu) == "bf16"
    with pytest.raises(BenchError, match="unknown --precision 'fp8'; choose one of: auto, fp32, bf16"):
        resolved_precision("fp8", cpu)
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with autocast("bf16", cpu):
        assert layer(x).dtype == torch.bfloat16
    with autocast("auto", cpu):
        assert layer(x).dtype == torch.float32


def test_unknown_precision_is_one_clear_error(bench, data_dir, tiny_model, tmp_path):
    code, _, err = bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", tmp_path,
                         "--precision", "half")
    assert code == 2 and "unknown --precision 'half'; choose one of: auto, fp32, bf16" in err
    assert not (tmp_path / "bench.sqlite").exists()


def test_bf16_run_records_its_precision_and_trains(bench, data_dir, tiny_model, tmp_path):
    code, out, err = bench("run", "sst2", "--models", tiny_model("llama"), "--data-dir", data_dir, "--results", tmp_path,
                           *SMALL, "--precision", "bf16", "--method", "full", "--lr", "1e-3")
    assert code == 0, err
    with sqlite3.connect(tmp_path / "bench.sqlite") as db:
        infos = {stage: json.loads(info) for stage, info in db.execute("SELECT stage, info FROM stages")}
    assert {info["precision"] for info in infos.values()} == {"bf16"}
    curve = [json.loads(line) for line in next((tmp_path / "runs").iterdir()).joinpath(
        "finetune", "curves.jsonl").read_text().splitlines()]
    losses = [point["loss"] for point in curve if "loss" in point]
    assert losses and all(loss == loss and loss < 10 for loss in losses)  # finite, not diverged


def _items(vocab: int, n: int = 16) -> list[TrainItem]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        ids = torch.randint(3, vocab, (8 + i % 5,), generator=generator).tolist()
        rows.append(TrainItem(ids, lm_labels=ids))
    return rows


def test_compiled_training_matches_eager(tiny_model):
    """torch.compile must change the speed, not the model: the same steps give the same losses."""
    from transformers import AutoModelForCausalLM

    folder = tiny_model("gpt2")
    config = RunConfig(task="sst2", model="tiny", method="full", lr=1e-3, batch_size=4, epochs=1.0,
                       evals_per_epoch=1, warmup_ratio=0.0)
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        # No dropout: compiled kernels draw their masks from another random stream.
        model = AutoModelForCausalLM.from_pretrained(folder, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        vocab = model.config.vocab_size
        result = train(model, _items(vocab), replace(config, compile=compiled), 0, lambda m: {"loss": 0.0},
                       log=lambda _: None)
        losses[compiled] = [point["loss"] for point in result.curves if "loss" in point]
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_new_settings_leave_earlier_run_names_unchanged():
    """Runs stored before --precision/--compile/--train-seed/--lm-eval existed keep their digest (and
    so resume) when the new settings are left at their defaults; setting one names a new run."""
    import hashlib

    config = RunConfig(task="sst2", model="m")
    later = ("precision", "compile", "train_seed", "lm_eval", "lm_eval_include", "lm_eval_limit", "fsdp",
             "gradient_checkpointing", "backend", "tensor_parallel")
    earlier = {k: v for k, v in config.to_dict().items() if k not in later}
    expected = hashlib.sha256(json.dumps(earlier, sort_keys=True, default=str).encode()).hexdigest()[:10]
    assert config.digest() == expected
    assert replace(config, precision="bf16").digest() != expected
    assert replace(config, compile=True).digest() != expected
    assert replace(config, train_seed=1).digest() != expected
    assert replace(config, lm_eval=("mytask",)).digest() != expected
