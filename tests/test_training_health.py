"""Training health: a NaN/inf loss stops the run with one clear line and keeps the last good
training state; running out of device memory splits the batch instead of dying."""
from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

ARGS = ("--train-samples", "64", "--eval-samples", "8", "--validation-samples", "8", "--batch-size", "8",
        "--max-length", "64", "--evals-per-epoch", "4")


def _run(bench: Any, tiny_model: Any, data_dir: Path, results: Path, *extra: Any) -> tuple[int, str, str]:
    return bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", results,
                 *ARGS, *extra)


def test_nan_loss_stops_and_keeps_the_last_good_state(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_FAULTS", "nan@train-step=5")
    results = tmp_path / "results"
    code, out, err = _run(bench, tiny_model, data_dir, results)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: training loss became nan at step 5")
    assert "the last good training state (step 4) is kept in" in last and "lower --lr" in last
    state = next((results / "runs").iterdir()) / "train_state"
    assert (state / "state.json").is_file() and json.loads((state / "state.json").read_text())["loop"]["step"] == 4
    with sqlite3.connect(results / "bench.sqlite") as db:
        assert [s for (s,) in db.execute("SELECT stage FROM stages")] == ["baseline:prompt"]  # nothing half-done
    monkeypatch.delenv("BENCH_FAULTS")
    code, out, err = _run(bench, tiny_model, data_dir, results)  # the fault gone, the run resumes from step 4
    assert code == 0 and "resuming fine-tuning from its checkpoint at step 4" in err


def test_exploding_learning_rate_is_stopped_not_trained_on(bench: Any, tiny_model: Any, data_dir: Path,
                                                           tmp_path: Path) -> None:
    code, _, err = _run(bench, tiny_model, data_dir, tmp_path / "results", "--lr", "1e30", "--max-grad-norm", "1e30",
                        "--optimizer", "sgd", "--method", "full")
    assert code == 2 and "error: training loss became nan at step 1" in err and "lower --lr (now 1e+30)" in err


def test_an_update_that_breaks_the_model_is_never_kept_as_a_good_state(bench: Any, tiny_model: Any, data_dir: Path,
                                                                       tmp_path: Path) -> None:
    """AdamW at lr 1e30: the first loss is finite, the first update is not; the validation after it
    must stop the run instead of saving that state as one to resume from."""
    results = tmp_path / "results"
    code, _, err = _run(bench, tiny_model, data_dir, results, "--lr", "1e30", "--train-samples", "32")
    assert code == 2, err
    assert "error: the model's weights or outputs became inf/nan by step 1" in err and "lower --lr" in err
    assert not (next((results / "runs").iterdir()) / "train_state").exists()


def test_out_of_memory_backs_off_the_batch(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_FAULTS", "oom@train-step=2")
    results = tmp_path / "results"
    code, out, err = _run(bench, tiny_model, data_dir, results)
    assert code == 0, err
    assert "out of memory: batch now runs as 2 pieces of ~4 examples" in err
    with sqlite3.connect(results / "bench.sqlite") as db:
        info = json.loads(db.execute("SELECT info FROM stages WHERE stage='finetune'").fetchone()[0])
    assert info["oom_backoff_pieces"] == 2 and info["steps"] == 8


def test_out_of_memory_in_evaluation_halves_the_eval_batch(bench: Any, tiny_model: Any, data_dir: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = {}
    for name, faults in (("reference", ""), ("oom", "oom@eval-batch=32,oom@eval-batch=16")):
        monkeypatch.setenv("BENCH_FAULTS", faults)
        code, _, err = bench("eval", "sst2", "--model", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                             tmp_path / name, "--eval-samples", "24", "--eval-batch-size", "32" if faults else "8")
        assert code == 0, err
        with sqlite3.connect(tmp_path / name / "bench.sqlite") as db:
            info = json.loads(db.execute("SELECT info FROM stages").fetchone()[0])
            found[name] = (info["eval_batch_size"], db.execute("SELECT label FROM predictions ORDER BY idx").fetchall())
    assert found["oom"][0] == 8 and found["oom"][1] == found["reference"][1]  # 32 -> 16 -> 8, same predictions


@pytest.mark.parametrize("grad_accum, steps", [(1, 8), (3, 3)])  # 8 batches: 3 + 3 + a short last step of 2
def test_one_epoch_trains_on_every_sequence_once(grad_accum: int, steps: int, bench: Any, tiny_model: Any,
                                                 data_dir: Path, tmp_path: Path) -> None:
    """One epoch sees every training sequence once, whatever the accumulation (its last step may
    gather fewer batches; it never borrows from a next epoch): the tokens counted are their lengths
    summed (padding never counts), and the FLOPs are 6 x parameters x those tokens."""
    from harness.cli import _overrides, build_parser
    from harness.task.data import run_splits
    from harness.backends.models import load_tokenizer
    from harness.run.runner import plan
    from harness.task.registry import get_task
    from harness.run.stages import train_items

    extra = ("--epochs", "1", "--grad-accum", str(grad_accum))
    code, _, err = _run(bench, tiny_model, data_dir, tmp_path / "results", *extra)
    assert code == 0, err
    with sqlite3.connect(tmp_path / "results" / "bench.sqlite") as db:
        (run_id,) = db.execute("SELECT run_id FROM stages WHERE stage='finetune'").fetchone()
        info = json.loads(db.execute("SELECT info FROM stages WHERE stage='finetune'").fetchone()[0])
    # the run's own plan, from the same command line
    args = build_parser().parse_args(["run", "sst2", "--models", str(tiny_model("gpt2")), *ARGS, *extra])
    spec = get_task("sst2")
    (planned,) = plan(spec, [args.models[0]], _overrides(args), "quick")
    assert planned.run_id == run_id
    splits = run_splits(spec, dataclasses.asdict(planned.config), data_dir)
    items = train_items(spec, planned.ref, planned.config, load_tokenizer(planned.ref), splits.train)
    assert len(items) == 64 and info["train_tokens"] == sum(len(item.input_ids) for item in items)
    assert info["steps"] == steps and info["epochs"] == 1.0
    assert info["train_flops"] == 6.0 * info["params"]["total"] * info["train_tokens"] > 0
    assert info["train_tflops_per_s"] > 0


def test_a_short_last_step_averages_its_batches(tiny_model: Any) -> None:
    """--grad-accum 4 over an epoch of 2 identical batches is one step on their average gradient:
    the same update as that one batch with --grad-accum 1 (not half of it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.options import RunConfig
    from harness.train.loop import train
    from harness.types import TrainItem

    item = TrainItem([5, 6, 7, 8, 9, 10], lm_labels=[5, 6, 7, 8, 9, 10])
    weights = []
    for items, accum in (([item, item], 4), ([item], 1)):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model("gpt2"), resid_pdrop=0.0, embd_pdrop=0.0,
                                                     attn_pdrop=0.0)
        config = RunConfig(task="sst2", model="tiny", method="full", optimizer="sgd", lr=0.1, batch_size=1,
                           grad_accum=accum, epochs=1.0, warmup_ratio=0.0, max_grad_norm=1e9)
        result = train(model, items, config, 0, lambda m: {"loss": 0.0}, log=lambda _: None)
        assert result.steps == 1 and result.epochs == 1.0
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    moved = torch.cat([p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(tiny_model("gpt2")).parameters()])
    assert not torch.equal(weights[1], moved)  # the step did something
    assert torch.allclose(weights[0], weights[1], atol=1e-6)


@pytest.mark.parametrize("scores, note", [
    ((0.7, 0.3), "  restoring the weights of step 1 (best val f1_macro 0.7000; last, step 2: 0.3000)"),
    ((0.3, 0.7), None),  # the last step is the best: nothing to say
])
def test_restoring_an_earlier_step_is_logged(tiny_model: Any, scores: tuple[float, ...], note: str | None) -> None:
    """The log's last validation line is the last step's, but the model that is evaluated next is
    the best step's: a line says so (with or without --patience), and nothing when they agree."""
    from transformers import AutoModelForCausalLM

    from harness.options import RunConfig
    from harness.train.loop import train
    from harness.types import TrainItem

    item = TrainItem([5, 6, 7, 8, 9, 10], lm_labels=[5, 6, 7, 8, 9, 10])
    model = AutoModelForCausalLM.from_pretrained(tiny_model("gpt2"))
    config = RunConfig(task="sst2", model="tiny", method="full", batch_size=1, epochs=1.0, evals_per_epoch=2)
    given = iter(scores)
    lines: list[str] = []
    result = train(model, [item, item], config, 0, lambda m: {"f1_macro": next(given)}, log=lines.append,
                   criterion="f1_macro")
    assert result.steps == 2 and result.best_step == (1 if note else 2)
    restoring = [line for line in lines if "restoring" in line]
    assert restoring == ([note] if note else [])
