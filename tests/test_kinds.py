"""Every registered task's kind implements the Kind contract (harness/kinds/base.py): the engine
asks these and never branches on a kind's type, so a kind missing one fails here, not mid-run."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from harness.kinds import ExtractiveQA, Generate, GenerateSquad, KindBase, all_kinds, kind_named
from harness.kinds.base import KindBase as Contract
from harness.task.registry import get_task, task_names

REPO = Path(__file__).resolve().parents[1]
# What each kind must answer itself (the base has no default for these).
REQUIRED = ("examples", "predict", "score", "metric_names", "train_items")
SPECS = [get_task(name) for name in task_names()] + [get_task("squad_v2", mode="generate")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.key)
def test_every_task_kind_implements_the_contract(spec) -> None:
    kind = spec.kind
    assert isinstance(kind, KindBase) and dataclasses.is_dataclass(kind)
    for method in REQUIRED:
        assert getattr(type(kind), method) is not getattr(Contract, method), f"{type(kind).__name__} lacks {method}"
    if kind.validation_metrics != ("loss",):
        assert type(kind).validation_values is not Contract.validation_values
    assert isinstance(kind.headline, str) and kind.headline
    assert kind.head in (None, "classifier", "span")
    assert kind.discrete or kind.head != "classifier"  # a classifier head answers one of a fixed set
    fields = kind.fields
    assert isinstance(fields, tuple) and fields and set(fields) <= set(kind.columns())
    assert kind.default_objective(True, "lora") in ("lm", "head")
    assert kind.default_baseline(True) in ("prompt", "head")
    names = kind.metric_names(spec)
    assert names[0] == kind.headline or kind.discrete, names
    assert kind_named(type(kind).__name__) is type(kind)


def test_old_checkpoint_kind_names_still_read() -> None:
    """Checkpoints record `type(kind).__name__`; those written before GenerateSquad said "Generate"."""
    assert {"Classify", "ExtractiveQA", "Generate", "LanguageModel"} <= set(all_kinds())
    assert kind_named("ExtractiveQA").head == "span" and kind_named("Classify").head == "classifier"
    assert kind_named("Generate") is Generate and kind_named("NoSuchKind") is None


def test_squad_scored_generation_is_its_own_kind() -> None:
    kind = get_task("squad_v2", mode="generate").kind
    assert isinstance(kind, GenerateSquad) and kind.headline == "f1" and kind.judgeable
    assert Generate(("text",), "summary").headline == "rougeL"
    assert not ExtractiveQA().judgeable


def test_no_kind_type_branches_outside_kinds() -> None:
    """The engine asks the kind: no isinstance on a kind, no `is_classification`, no SQuAD flag."""
    pattern = r"isinstance\(.*kind|is_classification|squad_scored|metrics == \"squad"
    found = subprocess.run(["grep", "-rnE", "--include=*.py", pattern, "harness"], cwd=REPO, capture_output=True,
                           text=True).stdout
    assert [line for line in found.splitlines() if not line.startswith("harness/kinds/")] == []


def test_importing_the_kinds_stays_light() -> None:
    """Task plugins import the kinds at `bench list` time: no torch, no pandas."""
    code = "import sys, harness.kinds, harness.task.spec; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
