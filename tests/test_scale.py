"""Stores and eval sets at realistic scale: hundreds of runs in one store, full test sets. Work is
checked by counting it (comparisons, rows), never by timing; benchmarks/ prints the timings."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from harness.report.leaderboard import settings_labels


@dataclass(frozen=True)
class _Row:
    run_id: str
    task: str = "sst2"
    model: str = "m"
    method: str = "lora"
    baseline: str = "prompt 0-shot"


class _Counted:
    """A config value that counts how often it is compared."""

    comparisons = 0

    def __init__(self, value: object):
        self.value = value

    def __eq__(self, other: object) -> bool:
        _Counted.comparisons += 1
        return isinstance(other, _Counted) and self.value == other.value

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.value)

    def __str__(self) -> str:
        return str(self.value)


def test_settings_labels_name_what_differs_within_each_model_and_method():
    configs = {"a": {"lr": 1e-3, "rank": 4, "seed": 0}, "b": {"lr": 1e-4, "rank": 4, "seed": 0},
               "c": {"lr": 1e-4, "rank": 4, "seed": 0, "patience": 2}, "solo": {"lr": 1e-3}}
    rows = [_Row("a"), _Row("b"), _Row("c"), _Row("solo", model="other"), _Row("a", baseline="head (untrained)")]
    assert settings_labels(rows, configs) == ["lr=0.001, patience=—", "lr=0.0001, patience=—",
                                              "lr=0.0001, patience=2", "", ""]


def test_settings_labels_compare_each_config_once_per_key_not_with_every_peer():
    """A 120-cell sweep of one model x method: every row was compared with all its peers for every
    key of every peer (120**3 comparisons a key), which made `bench report` of a store with a
    few hundred runs of one model x method take minutes."""
    runs, keys = 120, 3
    configs = {f"r{i}": {"lr": _Counted(i % 8), "rank": _Counted(i // 8), "seed": _Counted(0)} for i in range(runs)}
    rows = [_Row(run_id) for run_id in configs]
    _Counted.comparisons = 0
    labels = settings_labels(rows, configs)
    assert labels[9] == "lr=1, rank=1"
    assert _Counted.comparisons <= 2 * runs * keys, _Counted.comparisons


class _BatchSizes:
    """A tokenizer that records how many texts each call encodes."""

    def __init__(self, tokenizer):
        self.tokenizer, self.sizes = tokenizer, []

    def __call__(self, texts, *args, **kwargs):
        self.sizes.append(1 if isinstance(texts, str) else len(texts))
        return self.tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_prompts_of_a_full_test_set_are_encoded_chunk_by_chunk_with_the_same_ids(tiny_model, monkeypatch):
    """One tokenizer call over every eval text held all their whole encodings at once (full IMDB
    test: +1.3 to +2.7 GB of peak memory for prompts that keep 128 tokens each). Chunks give the
    same token ids, long examples clipped as before."""
    transformers = pytest.importorskip("transformers")
    from harness.task import prompts
    from harness.task.registry import get_task
    from harness.types import Example

    spec = get_task("imdb")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model("gpt2"))
    words = "a rather long and tedious story about nothing at all told twice over".split()
    examples = [Example(f"e{i}", (" ".join(words[: 1 + i % len(words)] * (1 + i % 7)),), label=i % 2)
                for i in range(23)]
    whole = prompts.build_contexts(spec, tokenizer, examples, [], 32)
    assert any(len(" ".join(e.texts).split()) > 32 for e in examples), "the test needs clipped examples"
    monkeypatch.setattr(prompts, "ENCODE_CHUNK", 5)
    counting = _BatchSizes(tokenizer)
    assert prompts.build_contexts(spec, counting, examples, [], 32) == whole
    assert max(counting.sizes) <= 5, counting.sizes


@pytest.mark.parametrize("family, fields, segments", [("bert", 2, True), ("bert", 1, True), ("gpt2", 2, False)])
def test_head_inputs_are_encoded_chunk_by_chunk_with_the_same_ids(tiny_model, monkeypatch, family, fields, segments):
    """Classification heads' inputs (single texts and sentence pairs, with segment ids where the
    tokenizer makes them) come out the same chunk by chunk, never all texts in one call."""
    transformers = pytest.importorskip("transformers")
    from harness.task import prompts
    from harness.backends.hf import encode_for_head
    from harness.types import Example

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model(family))
    if segments:  # as BERT's own tokenizer does (the tiny one makes none)
        tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    words = "a rather long and tedious story about nothing at all told twice over".split()
    examples = [Example(f"e{i}", tuple(" ".join(words[: 1 + (i + f) % len(words)] * (1 + i % 5))
                                       for f in range(fields)), label=i % 2) for i in range(23)]
    whole = encode_for_head(tokenizer, examples, 24)
    assert (whole[1] is not None) == (segments and fields == 2)
    monkeypatch.setattr(prompts, "ENCODE_CHUNK", 5)
    counting = _BatchSizes(tokenizer)
    assert encode_for_head(counting, examples, 24) == whole
    assert max(counting.sizes) <= 5, counting.sizes


def _write_classification_run(store, run_id: str, lr: float, examples: int = 40) -> None:
    """A finished sst2 run written straight into the store: baseline, fine-tune, fine-tuned."""
    from harness.metrics.classification import classification_report
    from harness.types import Prediction

    config = {"task": "sst2", "model": "m", "method": "lora", "preset": "quick", "seed": 0, "lr": lr,
              "early_stop_metric": "auto", "validation_samples": 8}
    golds = [i % 2 for i in range(examples)]
    for stage, right in (("baseline:prompt", 0.5), ("finetuned", 0.8)):
        labels = [g if i < right * examples else 1 - g for i, g in enumerate(golds)]
        predictions = [Prediction(f"e{i}", g, p, (-0.5, -1.0)) for i, (g, p) in enumerate(zip(golds, labels))]
        store.complete_stage(run_id, stage, config=config, seconds=1.0,
                             metrics=classification_report(golds, labels, ("negative", "positive"), resamples=10),
                             info={"mode": "prompt", "shots": 0}, predictions=predictions)
        if stage == "baseline:prompt":
            store.complete_stage(run_id, "finetune", config=config, seconds=2.0, metrics={"best_validation": lr},
                                 info={"params": {"base": 100, "added": 4, "trainable": 4, "trainable_pct": 3.8},
                                       "train_seconds": 2.0, "tokens_per_second": 10.0})


def test_a_sweep_report_compares_each_cell_once(bench, tmp_path, monkeypatch):
    """`bench report --sweep` made every cell's comparison (paired bootstrap, predictions read) twice,
    once for the sweep table and once for the before/after table: twice as long as a report of the
    same runs (20 cells of 25,000 examples: 24 s instead of 12 s)."""
    import harness.compare.paired
    from harness.store import Store
    from harness.run.sweep_plan import Axis, Cell, SweepPlan, save_plan

    store = Store(tmp_path / "results")
    run_ids = ("sst2__m__lora__a", "sst2__m__lora__b")
    for run_id, lr in zip(run_ids, (1e-3, 1e-4)):
        _write_classification_run(store, run_id, lr)
    plan = SweepPlan("sweep__sst2__cells", "sst2", (Axis("lr", (1e-3, 1e-4)),),
                     tuple(Cell((("lr", lr),), run_id) for run_id, lr in zip(run_ids, (1e-3, 1e-4))))
    save_plan(store.root, plan)
    store.close()
    compared = []

    def counting(store, run_id, *args):
        compared.append(run_id)
        return harness.compare.paired.compare(store, run_id, *args)

    monkeypatch.setattr("harness.run.sweep.compare", counting)
    monkeypatch.setattr("harness.report.leaderboard.compare", counting)
    for table in ("comparison", "sweep"):
        compared.clear()
        code, out, err = bench("report", "--results", tmp_path / "results", "--sweep", plan.name, "--format", "csv",
                               "--table", table)
        assert code == 0, err
        assert sorted(compared) == list(run_ids)
    assert [line.split(",")[:2] for line in out.splitlines()[1:]] == [["0.001", "accuracy (fine-tuned)"],
                                                                       ["0.0001", "accuracy (fine-tuned)"]]
