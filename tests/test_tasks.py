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
from harness.task.data import build_splits
from harness.errors import BenchError
from harness.task.registry import get_task, task_names
from harness.task.spec import TaskSpec
from harness.types import Splits

TASKS = task_names()
# A task whose data ships with the tests (tests/data/<local>, e.g. mc_demo) is tested on it in its own
# test file; the split tests below read the real datasets of the shared data dir.
SHARED_DATA_TASKS = [name for name in TASKS if not (Path(__file__).parent / "data" / get_task(name).data.local).is_dir()]
CLASSIFICATION = [name for name in SHARED_DATA_TASKS if get_task(name).kind.discrete]
TEXT_TASKS = [name for name in SHARED_DATA_TASKS if not get_task(name).kind.discrete]
TRAIN, EVAL, VALIDATION = 120, 200, 100  # 120 splits evenly over 2, 3 and 4 labels
TASK_MODULES = sorted(module.name for module in pkgutil.iter_modules(tasks.__path__))


@lru_cache(maxsize=None)
def splits_of(name: str, data_dir: Path, seed: int = 0) -> Splits:
    """Built once per (task, seed) and shared by the tests below: reading the real data is the slow part."""
    return fresh_splits(get_task(name), data_dir, seed)


def fresh_splits(spec: TaskSpec, data_dir: Path, seed: int, train_samples: int | None = TRAIN) -> Splits:
    return build_splits(spec, data_dir, train_samples=train_samples, eval_samples=EVAL,
                        validation_samples=VALIDATION, seed=seed)


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
    """Training and early stopping never see an eval example (nor each other's), carved splits
    included: no id in two splits (rows without one are numbered per file: `train-17`), and no eval
    text among the training or validation texts, even where the data repeats rows across splits."""
    splits = splits_of(name, data_dir)
    ids = {part: {e.id for e in getattr(splits, part)} for part in ("train", "validation", "eval")}
    assert not ids["train"] & ids["eval"]
    assert not ids["validation"] & ids["eval"]
    assert not ids["train"] & ids["validation"]
    eval_texts = {e.texts for e in splits.eval}
    assert not eval_texts & {e.texts for e in splits.train + splits.validation + splits.demo_pool}


def test_rows_the_data_repeats_across_splits_are_not_trained_on(data_dir):
    """356 of the 2,000 Enron test mails are also in its train split, verbatim: they leave the
    training pool, and the table notes say how many."""
    splits = build_splits(get_task("enron_spam"), data_dir, train_samples=None, eval_samples=None,
                          validation_samples=100, seed=0)
    eval_texts = {e.texts for e in splits.eval}
    assert len(splits.eval) > 1990 and not eval_texts & {e.texts for e in splits.train + splits.validation}
    (note,) = [note for note in splits.notes if "training rows dropped" in note]
    assert int(note.split()[0]) >= 356, note


def test_validation_rows_that_repeat_eval_texts_are_dropped_and_counted(tmp_path):
    """A separate validation split's rows that repeat an eval example's texts leave it, and the
    notes count them, as they count the training rows dropped for the same reason."""
    from harness.kinds import Classify
    from harness.task.spec import HubData

    spec = TaskSpec(data=HubData("none/toy", local="toy", validation="validation"),
                    kind=Classify(fields=("text",), labels=("no", "yes")), prompt="{text}", name="toy")
    folder = tmp_path / "toy"
    folder.mkdir()
    pd.DataFrame({"text": [f"train {i}" for i in range(20)], "label": [i % 2 for i in range(20)]}).to_csv(
        folder / "train.csv", index=False)
    pd.DataFrame({"text": ["shared a", "shared b", "own c", "own d"], "label": [0, 1, 0, 1]}).to_csv(
        folder / "validation.csv", index=False)
    pd.DataFrame({"text": ["shared a", "shared b", "test e", "test f"], "label": [0, 1, 0, 1]}).to_csv(
        folder / "test.csv", index=False)
    splits = build_splits(spec, tmp_path, train_samples=None, eval_samples=None, validation_samples=10, seed=0)
    assert sorted(e.texts[0] for e in splits.validation) == ["own c", "own d"]
    assert "2 validation rows dropped: their texts are also eval examples'" in splits.notes


def test_a_carved_squad_eval_spreads_over_contexts(data_dir):
    """squad_v2 carves train from its one split without sharing a context; the eval sample still
    spreads over contexts (one question each, not whole contexts: a cluster sample would make the
    per-question bootstrap CIs too narrow), and the rows left out are counted."""
    splits = build_splits(get_task("squad_v2"), data_dir, train_samples=None, eval_samples=100,
                          validation_samples=50, seed=0)
    assert len(splits.eval) == 100 and len({e.group for e in splits.eval}) == 100
    assert len({e.group for e in splits.validation}) == 50
    (note,) = [note for note in splits.notes if "kept apart" in note]
    left_out = int(note.split("kept apart: ")[1].split()[0])
    total = len(pd.read_parquet(data_dir / "squad_v2" / "validation.parquet"))
    dropped = sum(int(n.split()[0]) for n in splits.notes if "training rows dropped" in n)
    assert left_out > 0 and len(splits.eval) + left_out + len(splits.demo_pool) + dropped == total
    # the validation carve (50 questions from 50 contexts) counts its left-out rows too: all rows add up
    (validation_note,) = [note for note in splits.notes if note.startswith("validation carved from train")]
    validation_left_out = int(validation_note.split("; ")[1].split()[0])
    pool = int(splits.notes[-1].split("random sample of ")[1].split(")")[0])
    assert len(splits.demo_pool) == pool + len(splits.validation) + validation_left_out


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


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_goemotions_reads_the_same_from_csv_and_jsonl(suffix, data_dir, tmp_path):
    """A CSV holds each comment's label list as text ("[27]"), some dumps hold a bare id: all read
    as the parquet does. Errors name the file's row, not the row among those the subset kept."""
    folder = tmp_path / "goemotions"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        rows = pd.read_parquet(data_dir / "goemotions" / f"{split}.parquet").head(600)
        rows = rows.assign(labels=[list(map(int, value)) for value in rows["labels"]])
        if suffix == ".csv":
            rows.to_csv(folder / f"{split}.csv", index=False)
        else:
            single = rows.assign(labels=[value[0] if len(value) == 1 else value for value in rows["labels"]])
            single.to_json(folder / f"{split}.jsonl", orient="records", lines=True)
    spec = get_task("goemotions", labels=4)
    local = build_splits(spec, tmp_path, train_samples=40, eval_samples=50, validation_samples=20, seed=0)
    copied = tmp_path / "parquet" / "goemotions"
    copied.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        pd.read_parquet(data_dir / "goemotions" / f"{split}.parquet").head(600).to_parquet(copied / f"{split}.parquet")
    reference = build_splits(spec, copied.parent, train_samples=40, eval_samples=50, validation_samples=20, seed=0)
    assert [(e.id, e.label) for e in local.eval] == [(e.id, e.label) for e in reference.eval]
    assert [(e.id, e.label) for e in local.train] == [(e.id, e.label) for e in reference.train]

    train = pd.read_parquet(copied / "train.parquet")
    kept = spec.prepare(train).index  # file rows of single-label comments among the 4 emotions
    train.loc[kept[5], "id"] = train.loc[kept[2], "id"]
    train.to_parquet(copied / "train.parquet")
    with pytest.raises(BenchError, match=rf"train.parquet: id .* appears more than once \(row {kept[5]}\)"):
        build_splits(spec, copied.parent, train_samples=40, eval_samples=50, validation_samples=20, seed=0)
    with pytest.raises(BenchError, match="lacks column 'labels'"):
        spec.prepare(train.drop(columns=["labels"]))


def test_nli_reads_the_hub_column_names():
    """The hub's SICK names the pair sentence_A / sentence_B (the local copy: premise / hypothesis)."""
    rows = pd.DataFrame({"id": ["1"], "sentence_A": ["A dog runs"], "sentence_B": ["An animal moves"], "label": [0]})
    prepared = get_task("nli").prepare(rows)
    assert list(prepared.columns) == ["id", "premise", "hypothesis", "label"]


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
    from harness.task.registry import _factory

    spec = get_task(name)
    card = sys.modules[_factory(name).__module__].__doc__
    assert spec.name == name and spec.description == card.strip().splitlines()[0] and spec.description


@pytest.mark.parametrize("name, options, flag", [
    ("sst2", {"labels": 4}, "--labels"),
    ("goemotions", {"num_labels": 4}, "--task-option num_labels"),  # a plugin's own option would be given so
    ("nli", {"labels": 3, "shots": 2}, "--labels, --task-option shots"),
])
def test_undeclared_task_option_is_an_error(name, options, flag):
    """An option the task does not declare is refused, not silently ignored."""
    with pytest.raises(BenchError, match=f"task '{name}' takes no option {flag}"):
        get_task(name, **options)


def test_unknown_task_is_an_error():
    with pytest.raises(BenchError, match=r"unknown task 'sst3'; did you mean 'sst2'\? known tasks: "):
        get_task("sst3")
    with pytest.raises(BenchError, match="unknown task 'zzz'; known tasks: "):  # nothing close: no guess
        get_task("zzz")


@pytest.mark.parametrize("name", ["sst2", "ag_news"])  # a train split of its own; train carved from test
def test_few_shot_demonstrations_do_not_move_with_the_training_sizes(data_dir: Path, name: str) -> None:
    from harness.task.prompts import choose_shots

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
    from harness.options import TASK_OPTIONS
    from harness.task.registry import task_names, task_options

    declared = {option for name in task_names() for option in task_options(name)}
    assert declared == set(TASK_OPTIONS)
    parser = build_parser()
    run = parser.parse_args(["run", "sst2", "--models", "m"])
    assert all(hasattr(run, option) for option in TASK_OPTIONS)


def test_without_local_data_the_hub_is_asked_and_its_failure_explained(monkeypatch):
    """No data dir: `datasets.load_dataset(hub id)`, as users with a network run it. Here (offline)
    it fails: one error naming the dataset, the hub's reason and where local copies go."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(BenchError) as failure:
        build_splits(get_task("sst2"), None, train_samples=10, eval_samples=10, validation_samples=5, seed=0)
    message = str(failure.value)
    assert message.startswith("could not load stanfordnlp/sst2 split 'validation' from the Hugging Face Hub (")
    assert "pass --data-dir DIR or set BENCH_DATA_DIR (DIR/sst2/validation.parquet)" in message


@pytest.mark.parametrize("name", TASKS)
def test_a_card_names_the_headline_metric_the_task_reports(name):
    """A task card that says which metric is the headline names the one its tables lead with."""
    import re

    spec = get_task(name)
    card = importlib.import_module(f"tasks.{name}").__doc__
    for named in re.findall(r"([\w-]+) (?:is the headline|\(the headline\))", card or ""):
        assert named == spec.kind.headline, f"{name}'s card calls {named} the headline; it is {spec.kind.headline}"
