"""Rows from a local data dir or the Hugging Face Hub -> validated Examples -> seeded splits.

Local first when a data dir is given (`--data-dir` or BENCH_DATA_DIR): `<dir>/<local>/<split>`
as .parquet, .jsonl or .csv with HF column names. Otherwise `datasets.load_dataset(hub_id)`.
Every check happens here, before any model is loaded or any record is written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from harness.errors import BenchError, error_reason
from harness.task.local_files import read_split_file, split_file, unreadable_because
from harness.task.spec import TaskSpec
from harness.types import Example, Splits

DATA_DIR_ENV = "BENCH_DATA_DIR"
# A text over a million characters (~250k tokens, far past any context evaluated here) is a broken
# row (a concatenated file, an attachment), and tokenizing it would stall the run. Real long
# texts stay under it: the longest Enron mail in the seed data has 228k characters.
MAX_TEXT_CHARS = 1_000_000


def data_dir_from(option: str | None) -> Path | None:
    raw = option or os.environ.get(DATA_DIR_ENV)
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise BenchError(f"data dir {path} does not exist; pass --data-dir (or {DATA_DIR_ENV}) pointing at a folder "
                         "with one subfolder per dataset, e.g. ../shared/data")
    return path


class SplitSource:
    """Reads named splits of one task's dataset, remembering file hashes for the record."""

    def __init__(self, spec: TaskSpec, data_dir: Path | None):
        self.spec = spec
        self.data_dir = data_dir
        self.hashes: dict[str, str] = {}
        if data_dir is not None and not (data_dir / spec.data.local).is_dir():
            folder = data_dir / spec.data.local
            if os.path.lexists(folder):  # there, but a broken link or a file: not said to be absent
                raise BenchError(f"{folder}, task {spec.name}'s data folder, "
                                 f"{unreadable_because(folder) or 'is a file'}; make it a folder with one "
                                 "<split>.parquet file per split")
            raise BenchError(f"data dir {data_dir} has no folder {spec.data.local!r} for task {spec.name}; "
                             f"expected {folder}/<split>.parquet")

    def has(self, split: str | None) -> bool:
        if split is None:
            return False
        if self.data_dir is None:
            return True  # the hub has the splits the task declares
        return self._local_file(split) is not None

    def _local_file(self, split: str) -> Path | None:
        return split_file(self.data_dir / self.spec.data.local, split)  # type: ignore[operator]

    def where(self, split: str) -> str:
        """The split's file (or hub id and split), as errors name it."""
        if self.data_dir is None:
            return f"{self.spec.data.hub_id} split {split!r}"
        return str(self._local_file(split) or self.data_dir / self.spec.data.local / split)

    def read(self, split: str) -> pd.DataFrame:
        """The split's rows after the task's `prepare`; the index stays the row number in the file,
        so errors name the file's row and rows without an id keep theirs whatever `prepare` drops."""
        frame = self._read_local(split) if self.data_dir is not None else self._read_hub(split)
        frame = frame.reset_index(drop=True)
        if self.spec.prepare is None or frame.empty:  # an empty file is said to be empty, not a prepare failure
            return frame
        try:
            return self.spec.prepare(frame)
        except BenchError:
            raise
        except Exception as exc:  # the plugin's code on this file's rows, e.g. a KeyError for a column it lacks
            raise BenchError(f"task {self.spec.name}'s prepare failed on {self.where(split)} (columns: "
                             f"{', '.join(map(str, frame.columns)) or 'none'}): {error_reason(exc)}") from None

    def _read_local(self, split: str) -> pd.DataFrame:
        path = self._local_file(split)
        if path is None:
            folder = self.data_dir / self.spec.data.local  # type: ignore[operator]
            have = sorted(p.name for p in folder.iterdir())
            raise BenchError(f"split {split!r} missing: no {folder}/{split}.parquet (found: {', '.join(have) or 'nothing'})")
        self.hashes[str(path)] = _sha256(path)
        return read_split_file(path)

    def _read_hub(self, split: str) -> pd.DataFrame:
        data = self.spec.data
        try:
            import datasets

            loaded = datasets.load_dataset(data.hub_id, data.config, split=split)
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [""])[0][:200] or type(exc).__name__
            raise BenchError(f"could not load {data.hub_id} split {split!r} from the Hugging Face Hub ({reason}); "
                             f"with local copies, pass --data-dir DIR or set {DATA_DIR_ENV} (DIR/{data.local}/"
                             f"{split}.parquet)") from None
        self.hashes[f"hub:{data.hub_id}:{split}"] = getattr(loaded, "_fingerprint", "")
        return loaded.to_pandas()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_examples(frame: pd.DataFrame, spec: TaskSpec, where: str, split: str) -> list[Example]:
    """Validate columns, texts and labels or references, then build Examples. `where` names the
    file in errors; rows without an id column get `<split>-<row>`, so ids never repeat across
    splits (checks for eval examples seen in training compare ids)."""
    group, cluster = spec.data.group, spec.data.cluster_column
    for column, does in ((group, "groups examples by"), (cluster, "clusters its eval items by")):
        if column is not None and len(frame) and column not in frame.columns:
            raise BenchError(f"{where} lacks column {column!r} that task {spec.name} {does}")
        if column is not None:
            _refuse_nested(frame, column, where, "a text or number (the group's name)")
    examples = _build_examples(frame, spec, where, split)
    if group is not None:
        examples = [dataclasses.replace(e, group=str(g)) for e, g in zip(examples, frame[group].tolist())]
    if cluster is not None:
        examples = [dataclasses.replace(e, cluster=cluster_key(c)) for e, c in zip(examples, frame[cluster].tolist())]
    return examples


def cluster_key(value: object) -> str:
    """A short, stable name for a cluster (a SQuAD context is a paragraph; 12 hex digits of its
    sha256 tell 10^5 clusters apart with no collision in practice), stored with each prediction."""
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:12]


def _build_examples(frame: pd.DataFrame, spec: TaskSpec, where: str, split: str) -> list[Example]:
    kind = spec.kind
    needed = list(kind.columns())
    if len(frame) == 0:  # before the columns: an empty file has none to name
        raise BenchError(f"{where} is empty: task {spec.name} needs at least one example")
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise BenchError(f"{where} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, frame.columns))}); "
                         f"task {spec.name} needs {', '.join(needed)}")
    check_texts(frame, kind.fields, where)
    if "id" in frame.columns:
        _refuse_nested(frame, "id", where, "a text or number (the example's id)")
    ids = (frame["id"].astype(str) if "id" in frame.columns
           else pd.Series([f"{split}-{row}" for row in frame.index], index=frame.index))
    repeated = ids[ids.duplicated()]
    if len(repeated):
        # Before/after pairing, resume and judging all key on the example id.
        raise BenchError(f"{where}: id {repeated.iloc[0]!r} appears more than once (row {int(repeated.index[0])}); "
                         "example ids must be unique: fix the 'id' column or drop it (rows are then numbered)")
    columns = [frame[column].tolist() for column in kind.fields]
    texts = [tuple(column[i] for column in columns) for i in range(len(frame))]
    return kind.examples(frame, [str(ids.iloc[i]) for i in range(len(frame))], texts, where)


def squad_examples(frame: pd.DataFrame, ids: Sequence[str], texts: Sequence[tuple[str, ...]], where: str,
                   column: str) -> list[Example]:
    """Examples whose gold is the SQuAD answers struct in `column` (no answer = unanswerable)."""
    answers = [_answers(value, where, int(row), column) for row, value in frame[column].items()]
    return [Example(id=ids[i], texts=texts[i], references=answers[i][0], answer_starts=answers[i][1])
            for i in range(len(frame))]


def _answers(value: Any, where: str, row: int, column: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """SQuAD's answers struct {text: [...], answer_start: [...]}; both empty = unanswerable."""
    if not isinstance(value, dict) or "text" not in value or "answer_start" not in value:
        raise BenchError(f"{where}: column {column!r} row {row} is not a SQuAD answers struct "
                         "{text: [...], answer_start: [...]}")
    texts, starts = _plain(value["text"]), _plain(value["answer_start"])
    if not _list_of(texts, str):  # a bare string would be read letter by letter as answers
        raise BenchError(f"{where}: column {column!r} row {row} has answers text {_shown(texts)}, not a list of "
                         "texts; fix or drop that row")
    if not _list_of(starts, int):
        raise BenchError(f"{where}: column {column!r} row {row} has answer_start {_shown(starts)}, not a list of "
                         "character offsets (integers); fix or drop that row")
    if len(texts) != len(starts):
        raise BenchError(f"{where}: column {column!r} row {row} has {len(texts)} answers but {len(starts)} offsets")
    return tuple(texts), tuple(starts)


def _list_of(value: Any, item_type: type) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(item, item_type) for item in value)


def check_texts(frame: pd.DataFrame, fields: Sequence[str], where: str) -> None:
    for column in fields:
        texts = frame[column]
        not_text = texts.map(lambda value: not isinstance(value, str))
        if not_text.any():
            row = int(np.flatnonzero(not_text.to_numpy())[0])
            raise BenchError(f"{where}: column {column!r} row {int(frame.index[row])} is {_shown(texts.iloc[row])}, "
                             "not a text; fix or drop that row")
        too_long = texts.str.len() > MAX_TEXT_CHARS
        if too_long.any():
            row = int(np.flatnonzero(too_long.to_numpy())[0])
            raise BenchError(f"{where}: column {column!r} row {int(frame.index[row])} has {len(texts.iloc[row]):,} "
                             f"characters, over the "
                             f"{MAX_TEXT_CHARS:,} a text may have (no model here reads that much: a broken row?); "
                             "drop or truncate it")


def checked_labels(frame: pd.DataFrame, kind: Any, where: str) -> list[int]:
    labels = pd.to_numeric(frame[kind.label_column], errors="coerce")
    bad = labels.isna() | (labels != labels.round()) | (labels < 0) | (labels >= len(kind.labels))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        allowed = ", ".join(f"{i}={name}" for i, name in enumerate(kind.labels))
        value = _plain(frame[kind.label_column].iloc[row])
        # A label's name where its id belongs: a whole column of names, from a researcher's own file.
        fix = ("the column holds names: map them to these ids in the file, or in the task's `prepare`"
               if value in kind.labels else "map the labels to these ids or drop that row")
        raise BenchError(f"{where}: column {kind.label_column!r} row {int(frame.index[row])} is {_shown(value)}, not a "
                         f"class id ({allowed}); {fix}")
    return [int(label) for label in labels]


def _refuse_nested(frame: pd.DataFrame, column: str, where: str, expected: str) -> None:
    """A list or struct cell (a Parquet list column, a nested JSON value) where one value belongs:
    `str()` of it would pass for an id or group name that no other row shares."""
    if frame[column].dtype != object:  # numbers and strings only
        return
    nested = frame[column].map(lambda value: isinstance(value, (list, tuple, dict, set, np.ndarray)))
    if nested.any():
        row = int(np.flatnonzero(nested.to_numpy())[0])
        raise BenchError(f"{where}: column {column!r} row {int(frame.index[row])} is {_shown(frame[column].iloc[row])}, "
                         f"not {expected}; fix or drop that row")


def _plain(value: Any) -> Any:
    """numpy values as Python ones, so messages read `7`, not `np.int64(7)`, and a Parquet list
    cell (a numpy array) compares as one value."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def _shown(value: Any) -> str:
    """A cell as a message shows it: `7`, `'pos'`, or `a list ['a', 'b']` (a list or struct named as
    one, so `[1]` is not read as the label 1), cut short."""
    value = _plain(value)
    text = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    kind = "a list " if isinstance(value, (list, tuple, set)) else "a struct " if isinstance(value, dict) else ""
    return kind + text


def split_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a run's splits (sample sizes and seed), from its config: `build_splits` keywords."""
    return {"train_samples": config.get("train_samples"), "eval_samples": config.get("eval_samples"),
            "validation_samples": config.get("validation_samples"), "seed": config.get("seed", 0)}


def run_splits(spec: TaskSpec, config: Mapping[str, Any], data_dir: Path | None) -> Splits:
    """The splits a run uses (or a stored run used), rebuilt from its sample sizes and seed."""
    return build_splits(spec, data_dir, **split_settings(config))


def drop_blank(examples: list[Example], where: str, notes: list[str]) -> list[Example]:
    """Rows whose every text field is blank carry no signal (real Enron mails can be empty): drop, say so."""
    kept = [example for example in examples if any(text.strip() for text in example.texts)]
    if len(kept) < len(examples):
        notes.append(f"{len(examples) - len(kept)} blank rows dropped from {where}")
    if not kept:
        raise BenchError(f"{where} has no non-blank texts")
    return kept


def balanced_sample(examples: list[Example], n: int | None, num_labels: int, rng: np.random.Generator) -> list[Example]:
    """Seeded class-balanced sample: equal quota per label, short classes give their slack to others."""
    order = rng.permutation(len(examples))
    if n is None or n >= len(examples):
        return [examples[i] for i in order]
    by_label: list[list[int]] = [[] for _ in range(num_labels)]
    for i in order:
        by_label[examples[i].label].append(int(i))
    quota = [0] * num_labels
    remaining, open_labels = n, [k for k in range(num_labels) if by_label[k]]
    while remaining > 0 and open_labels:
        share = max(1, remaining // len(open_labels))
        for k in list(open_labels):
            take = min(share, len(by_label[k]) - quota[k], remaining)
            quota[k] += take
            remaining -= take
            if quota[k] == len(by_label[k]):
                open_labels.remove(k)
            if remaining == 0:
                break
    chosen = [i for k in range(num_labels) for i in by_label[k][: quota[k]]]
    return [examples[i] for i in rng.permutation(chosen)]


def random_sample(examples: list[Example], n: int | None, rng: np.random.Generator) -> list[Example]:
    order = rng.permutation(len(examples))
    return [examples[i] for i in order[: n if n is not None else len(examples)]]


def carve(pool: list[Example], n: int, rng: np.random.Generator) -> tuple[list[Example], list[Example], int]:
    """A seeded sample of `n`, the rest, and how many rows neither got. With groups (SQuAD's
    contexts), no group straddles the two: the sample spreads over as many groups as it can (a
    random question from each of up to half the groups, more per group only when n needs it), so
    it is not a cluster sample, and the other rows of its groups are left out of the rest."""
    if not any(e.group for e in pool):
        shuffled = random_sample(pool, None, rng)
        return shuffled[:n], shuffled[n:], 0
    by_group: dict[str, list[Example]] = {}
    for example in pool:
        by_group.setdefault(example.group, []).append(example)
    names = sorted(by_group)
    chosen = [names[i] for i in rng.permutation(len(names))[: max(1, min(n, len(names) // 2))]]
    per_group = math.ceil(n / len(chosen))
    held: list[Example] = []
    for name in chosen:
        held += random_sample(by_group[name], per_group, rng)
    held = random_sample(held, n, rng)
    taken = set(chosen)
    rest = [e for e in pool if e.group not in taken]
    return held, rest, len(pool) - len(held) - len(rest)


def without_duplicates_of(pool: list[Example], held: Sequence[Example], what: str, notes: list[str]
                          ) -> list[Example]:
    """`pool` (the `what` rows) less those whose texts are also a held-out example's, said in `notes`
    (datasets repeat rows across their splits: 356 of the 2,000 Enron test mails are in its train
    split): a model trained on an eval example would score it from memory."""
    seen = {e.texts for e in held}
    kept = [e for e in pool if e.texts not in seen]
    if len(kept) < len(pool):
        notes.append(f"{len(pool) - len(kept)} {what} rows dropped: their texts are also eval examples'")
    return kept


def build_splits(spec: TaskSpec, data_dir: Path | None, *, train_samples: int | None, eval_samples: int | None,
                 validation_samples: int, seed: int) -> Splits:
    """Train, validation and eval examples, carving missing splits with `seed` (disjoint, reported);
    training and validation rows that repeat an eval example's texts are dropped (reported)."""
    source = SplitSource(spec, data_dir)
    rng = np.random.default_rng(seed)
    data, notes = spec.data, []

    def load(split: str) -> list[Example]:
        name = f"{data.local}/{split}"  # notes name the split; errors name the file
        return drop_blank(to_examples(source.read(split), spec, source.where(split), split), name, notes)

    if not source.has(data.eval):
        raise BenchError(f"split {data.eval!r} missing for task {spec.name}; it is the eval split")
    eval_pool = load(data.eval)
    if source.has(data.train) and data.train != data.eval:
        eval_set = random_sample(eval_pool, eval_samples, rng)
        train_pool = load(data.train)
    else:
        # No separate train split: hold out the eval sample first, train on what is left.
        n_eval = eval_samples if eval_samples is not None else math.ceil(len(eval_pool) / 2)
        if n_eval >= len(eval_pool):
            raise BenchError(f"{source.where(data.eval)} has {len(eval_pool)} rows: too few to carve a train split "
                             f"and {n_eval} eval examples; lower --eval-samples")
        eval_set, train_pool, left_out = carve(eval_pool, n_eval, rng)
        missing = "train split missing" if data.train != data.eval else f"only one split ({data.eval})"
        grouped = (f", whole {data.group} groups kept apart: {left_out} rows of the eval examples' groups left "
                   "out of training" if data.group else "")
        notes.append(f"{missing}: train carved from {data.eval} (seed {seed}{grouped}), disjoint from the "
                     f"{len(eval_set)} eval examples")
    train_pool = without_duplicates_of(train_pool, eval_set, "training", notes)
    demo_pool = tuple(train_pool)
    if source.has(data.validation):
        validation_pool = without_duplicates_of(load(data.validation), eval_set, "validation", notes)
        validation = random_sample(validation_pool, validation_samples, rng)
    else:
        # Carve validation out of train so early stopping never sees eval examples.
        n_val = min(validation_samples, max(1, len(train_pool) // 5))
        validation, train_pool, left_out = carve(train_pool, n_val, rng)
        grouped = f"; {left_out} rows of its {data.group} groups left out of training" if left_out else ""
        notes.append(f"validation carved from train ({len(validation)} examples, seed {seed}{grouped})")
    if not train_pool:
        raise BenchError(f"task {spec.name}: no training examples left after carving eval/validation splits")
    train, how = spec.kind.sample_train(train_pool, train_samples, rng)
    notes.append(f"train {len(train)} ({how} of {len(train_pool)}), validation {len(validation)}, "
                 f"eval {len(eval_set)} of {len(eval_pool)} in {data.eval}")
    return Splits(train=tuple(train), validation=tuple(validation), eval=tuple(eval_set), notes=tuple(notes),
                  source_hashes=dict(source.hashes), demo_pool=demo_pool)
