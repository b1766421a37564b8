"""Every registered task builds sound splits from the real data: non-empty, valid labels, balanced
seeded training samples, reproducible, and no example shared between training and evaluation."""
from __future__ import annotations

import importlib
import math
import pkgutil
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest

import tasks
from harness.data import build_splits
from harness.errors import BenchError
from harness.registry import get_task, task_names
from harness.spec import TaskSpec
from harness.types import Splits

TASKS = task_names()
CLASSIFICATION = [name for name in TASKS if get_task(name).is_classification]
TEXT_TASKS = [name for name in TASKS if not get_task(name).is_classification]
TRAIN, EVAL, VALIDATION = 120, 200, 100  # 120 splits evenly over 2, 3 and 4 labels
TASK_MODULES = sorted(module.name for module in pkgutil.iter_modules(tasks.__path__))


@lru_cache(maxsize=None)
def splits_of(name: str, data_dir: Path, seed: int = 0) -> Splits:
    """Built once per (task, seed) and shared by the tests below: reading the real data is the slow part."""
    return fresh_splits(get_task(name), data_dir, seed)


def fresh_splits(spec: TaskSpec, data_dir: Path, seed: int, train_samples: int | None = TRAIN) -> Splits:
    return build_splits(spec, data_dir, train_samples=train_samples, eval_samples=EVAL,
                        validation_samples=VALIDATION, seed=seed)


def source_of(spec: TaskSpec, data_dir: Path) -> dict[str, str]:
    """Which file each split's examples come from: ids are only unique within one file."""
    folder = data_dir / spec.data.local
    train = spec.data.train if (folder / f"{spec.data.train}.parquet").is_file() else spec.data.eval
    has_validation = spec.data.validation and (folder / f"{spec.data.validation}.parquet").is_file()
    validation = spec.data.validation if has_validation else train
    return {"train": train, "validation": validation, "eval": spec.data.eval}


def assert_balanced(labels: list[int], num_labels: int) -> None:
    counts = Counter(labels)
    assert set(counts) == set(range(num_labels)), f"classes missing from the sample: {counts}"
    assert max(counts.values()) - min(counts.values()) <= 1, f"unbalanced sample: {counts}"


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_splits_are_valid(name, data_dir):
    """Non-empty splits of the sizes asked for, every label in range, every text non-blank."""
    spec, splits = get_task(name), splits_of(name, data_dir)
    assert (len(splits.train), len(splits.validation), len(splits.eval)) == (TRAIN, VALIDATION, EVAL)
    for example in splits.train + splits.validation + splits.eval:
        assert 0 <= example.label < len(spec.kind.labels), example
        assert len(example.texts) == len(spec.kind.fields), example
        assert all(isinstance(text, str) and text.strip() for text in example.texts), example
    assert splits.source_hashes, "the record must say which files produced the splits"


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_train_sample_is_class_balanced(name, data_dir):
    """Every class has far more than TRAIN / num_labels training rows, so the sample is balanced to +-1."""
    spec, splits = get_task(name), splits_of(name, data_dir)
    assert_balanced([example.label for example in splits.train], len(spec.kind.labels))
    assert len({example.id for example in splits.train}) == len(splits.train), "an example was drawn twice"


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_seed_decides_the_sample(name, data_dir):
    """Same seed -> the same examples in the same order (resume and paired comparisons rely on it);
    another seed -> another sample."""

    def ids(splits: Splits) -> dict[str, list[str]]:
        return {part: [e.id for e in getattr(splits, part)] for part in ("train", "validation", "eval")}

    first = splits_of(name, data_dir, seed=0)
    again = fresh_splits(get_task(name), data_dir, seed=0)
    other = splits_of(name, data_dir, seed=1)
    assert ids(again) == ids(first)
    assert again.notes == first.notes
    for part in ("train", "eval"):
        assert set(ids(other)[part]) != set(ids(first)[part]), f"seed 1 drew the same {part} sample as seed 0"


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_no_example_in_two_splits(name, data_dir):
    """Training and early stopping never see an eval example (nor each other's), carved splits included."""
    spec, splits = get_task(name), splits_of(name, data_dir)
    source = source_of(spec, data_dir)
    keys = {part: {(source[part], e.id) for e in getattr(splits, part)} for part in ("train", "validation", "eval")}
    assert not keys["train"] & keys["eval"]
    assert not keys["validation"] & keys["eval"]
    assert not keys["train"] & keys["validation"]


@pytest.mark.parametrize("name", TEXT_TASKS)
def test_text_task_splits_are_valid(name, data_dir):
    """Text tasks: the sizes asked for, a non-blank input, and references (none only for
    unanswerable SQuAD questions); eval is disjoint from train and validation."""
    spec, splits = get_task(name), splits_of(name, data_dir)
    assert (len(splits.train), len(splits.validation), len(splits.eval)) == (TRAIN, VALIDATION, EVAL)
    for example in splits.train + splits.validation + splits.eval:
        assert any(text.strip() for text in example.texts), example
        if spec.kind.__class__.__name__ == "Generate" and name != "squad_v2":
            assert example.references and example.references[0].strip(), example
    eval_ids = {e.id for e in splits.eval}
    folder = data_dir / spec.data.local
    if spec.data.train == spec.data.eval or not (folder / f"{spec.data.train}.parquet").is_file():
        assert not eval_ids & {e.id for e in splits.train}  # train carved from the eval file
        if not (spec.data.validation and (folder / f"{spec.data.validation}.parquet").is_file()):
            assert not eval_ids & {e.id for e in splits.validation}


def test_ag_news_carves_train_from_test(data_dir):
    """The offline AG News copy has no train split: train comes out of test, and the table notes say so."""
    assert not (data_dir / "ag_news" / "train.parquet").exists(), "real train split present: update this test"
    notes = " | ".join(splits_of("ag_news", data_dir).notes)
    assert "train split missing: train carved from test" in notes
    assert "validation carved from train" in notes


# ---------------------------------------------------------------- goemotions subsets

@lru_cache(maxsize=None)
def goemotions_train(data_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(data_dir / "goemotions" / "train.parquet")


@pytest.mark.parametrize("labels", [2, 4, 8, 16])
def test_goemotions_label_set_size(labels):
    spec = get_task("goemotions", labels=labels)
    assert len(spec.kind.labels) == labels == len(set(spec.kind.labels))
    assert spec.key == f"goemotions-{labels}labels"  # variants get their own run ids


def test_goemotions_subsets_nest(data_dir):
    """The 2-label task is a prefix of the 4-label one (and so on): same rows, same label ids."""
    raw = goemotions_train(data_dir)
    assert raw["id"].is_unique
    previous = None
    for labels in (2, 4, 8, 16):
        spec = get_task("goemotions", labels=labels)
        rows = spec.prepare(raw).set_index("id")["label"]
        assert sorted(rows.unique()) == list(range(labels))
        if previous is not None:
            smaller_spec, smaller_rows = previous
            assert spec.kind.labels[: len(smaller_spec.kind.labels)] == smaller_spec.kind.labels
            assert set(smaller_rows.index) <= set(rows.index)
            assert (rows.loc[smaller_rows.index] == smaller_rows).all(), "a comment changed label between subsets"
        previous = (spec, rows)


@pytest.mark.parametrize("labels", [2, 4, 8, 16])
@pytest.mark.parametrize("train_samples", [800, 1600, 2400])
def test_goemotions_train_sizes(data_dir, labels, train_samples):
    """The paper's 800/1600/2400 training sets: exactly that many, balanced across the K emotions."""
    spec = get_task("goemotions", labels=labels)
    available = Counter(spec.prepare(goemotions_train(data_dir))["label"])
    if min(available.values()) < math.ceil(train_samples / labels):
        pytest.skip(f"too few examples of some emotion for {train_samples} balanced: {available}")
    splits = fresh_splits(spec, data_dir, seed=0, train_samples=train_samples)
    assert len(splits.train) == train_samples
    assert_balanced([example.label for example in splits.train], labels)


# ---------------------------------------------------------------- task cards and options

@pytest.mark.parametrize("module_name", TASK_MODULES)
def test_task_module_has_a_card(module_name):
    """Each task module's docstring is its card: what it is, the data, the paper, the metrics."""
    card = importlib.import_module(f"tasks.{module_name}").__doc__
    assert card and card.strip(), f"tasks/{module_name}.py has no docstring"
    for section in ("Data:", "Paper:", "Metrics:"):
        assert section in card, f"tasks/{module_name}.py card lacks {section!r}"


@pytest.mark.parametrize("name", TASKS)
def test_name_and_description_come_from_the_registration_and_the_card(name):
    """`bench list` shows the first line of the task's own card (its module's docstring)."""
    from harness.registry import _factory

    spec = get_task(name)
    card = sys.modules[_factory(name).__module__].__doc__
    assert spec.name == name and spec.description == card.strip().splitlines()[0] and spec.description


@pytest.mark.parametrize("name, options, flag", [
    ("sst2", {"labels": 4}, "--labels"),
    ("goemotions", {"num_labels": 4}, "--num-labels"),
    ("nli", {"labels": 3, "shots": 2}, "--labels, --shots"),
])
def test_undeclared_task_option_is_an_error(name, options, flag):
    """An option the task does not declare is refused, not silently ignored."""
    with pytest.raises(BenchError, match=f"task '{name}' takes no option {flag}"):
        get_task(name, **options)


def test_unknown_task_is_an_error():
    with pytest.raises(BenchError, match="unknown task 'sst3'; known tasks: "):
        get_task("sst3")


@pytest.mark.parametrize("name", ["sst2", "ag_news"])  # a train split of its own; train carved from test
def test_few_shot_demonstrations_do_not_move_with_the_training_sizes(data_dir: Path, name: str) -> None:
    from harness.prompts import choose_shots

    spec = get_task(name)
    small, large = (build_splits(spec, data_dir, train_samples=n, eval_samples=EVAL, validation_samples=v, seed=0)
                    for n, v in ((16, 4), (400, 40)))
    assert small.train != large.train
    labels = len(spec.kind.labels)
    demos = choose_shots(small.demos_from, 4, labels, 0)
    assert demos == choose_shots(large.demos_from, 4, labels, 0)
    assert not {e.id for e in demos} & {e.id for e in small.eval}  # never an eval example


def test_every_declared_task_option_is_a_flag_and_recorded():
    """A task factory's keyword parameter becomes a task option; `bench run/sweep/eval` only
    know the options in TASK_OPTIONS, so a new one must be added there (and get its flag)."""
    from harness.cli import build_parser
    from harness.config import TASK_OPTIONS
    from harness.registry import task_names, task_options

    declared = {option for name in task_names() for option in task_options(name)}
    assert declared == set(TASK_OPTIONS)
    parser = build_parser()
    run = parser.parse_args(["run", "sst2", "--models", "m"])
    assert all(hasattr(run, option) for option in TASK_OPTIONS)
