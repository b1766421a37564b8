"""Split files that are there but broken, and cells or headers that do not hold what a column
needs. Only a split with no file at all is carved from another one; a dangling or looping symlink,
a directory or a pipe named like a split, a list where a text or label belongs, or a column named
twice is one `error:` line naming the file, exit 2, and no store. Real files in a tmp data dir:
a few hundred rows of the shared SST-2 copy."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

from harness.task.data import to_examples
from harness.errors import BenchError
from harness.task.registry import get_task
from test_cli_errors import FAST, assert_clean_failure

ROWS = 300


@pytest.fixture
def sst2_copy(data_dir: Path, tmp_path: Path) -> Path:
    """tmp/data/sst2/{train,validation}.parquet: the first rows of the real files."""
    folder = tmp_path / "data" / "sst2"
    folder.mkdir(parents=True)
    for split in ("train", "validation"):
        pd.read_parquet(data_dir / "sst2" / f"{split}.parquet").head(ROWS).to_parquet(
            folder / f"{split}.parquet", index=False)
    return folder


@pytest.fixture
def run_on(bench: Any, tiny_model: Any, tmp_path: Path) -> Callable[[Path], tuple[int, str, str]]:
    def run(folder: Path) -> tuple[int, str, str]:
        return bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", folder.parent,
                     "--results", tmp_path / "results", *FAST)
    return run


def _dangling(path: Path) -> str:
    path.unlink()
    path.symlink_to(path.parent / "moved-away.parquet")
    return f"{path} is a dangling symlink to {path.parent / 'moved-away.parquet'}"


def _chained_dangling(path: Path) -> str:
    path.unlink()
    (path.parent / "hop.parquet").symlink_to(path.parent / "moved-away.parquet")
    path.symlink_to(path.parent / "hop.parquet")
    return f"which leads to {path.parent / 'moved-away.parquet'}"


def _loop(path: Path) -> str:
    path.unlink()
    (path.parent / "other.parquet").symlink_to(path)
    path.symlink_to(path.parent / "other.parquet")
    return f"{path} is a symlink loop"


def _directory(path: Path) -> str:
    path.unlink()
    path.mkdir()
    return f"{path} is a directory, not a file"


def _pipe(path: Path) -> str:
    path.unlink()
    os.mkfifo(path)  # reading it would block forever
    return f"{path} is not a regular file"


# sst2's train split is carved from validation (its eval split) when absent: the broken train file
# used to be carved over silently; a broken validation file was "split 'validation' missing".
@pytest.mark.parametrize("split", ["train", "validation"])
@pytest.mark.parametrize("breaks", [_dangling, _chained_dangling, _loop, _directory, _pipe],
                         ids=["dangling-symlink", "dangling-chain", "symlink-loop", "directory", "fifo"])
def test_a_broken_split_file_is_an_error_not_a_missing_split(run_on: Any, sst2_copy: Path, tmp_path: Path,
                                                              split: str, breaks: Callable[[Path], str]) -> None:
    expected = breaks(sst2_copy / f"{split}.parquet")
    assert_clean_failure(run_on(sst2_copy), expected, tmp_path / "results")


def test_a_dangling_second_file_for_a_split_is_named_beside_the_first(run_on: Any, sst2_copy: Path,
                                                                      tmp_path: Path) -> None:
    """train.jsonl (a link to a moved file) beside train.parquet: which one was meant is the user's call."""
    (sst2_copy / "train.jsonl").symlink_to(sst2_copy / "moved-away.jsonl")
    assert_clean_failure(run_on(sst2_copy), "2 files for the 'train' split (train.parquet, train.jsonl: is a "
                         "dangling symlink", tmp_path / "results")


def test_a_dangling_data_folder_is_said_to_be_one(run_on: Any, sst2_copy: Path, tmp_path: Path) -> None:
    moved = sst2_copy.parent / "sst2-moved"
    sst2_copy.rename(moved)
    sst2_copy.symlink_to(tmp_path / "nowhere")
    assert_clean_failure(run_on(sst2_copy), f"{sst2_copy}, task sst2's data folder, is a dangling symlink",
                         tmp_path / "results")


def test_a_split_with_no_file_at_all_is_still_carved(run_on: Any, sst2_copy: Path) -> None:
    """The control: a truly absent train split is carved from validation, as before."""
    (sst2_copy / "train.parquet").unlink()
    code, _, err = run_on(sst2_copy)
    assert code == 0, err


def _rewrite(folder: Path, **columns: list[Any]) -> None:
    path = folder / "train.parquet"
    pd.read_parquet(path).assign(**columns).to_parquet(path, index=False)


@pytest.mark.parametrize("column, cells, expected", [
    pytest.param("sentence", [["a", "film"]] * ROWS, "column 'sentence' row 0 is a list ['a', 'film'], not a text",
                 id="list-of-texts"),
    pytest.param("sentence", [{"text": "a film"}] * ROWS, "column 'sentence' row 0 is a struct {'text': 'a film'}",
                 id="struct-texts"),
    pytest.param("label", [[1, 0]] * ROWS, "column 'label' row 0 is a list [1, 0], not a class id", id="list-labels"),
    pytest.param("label", [[1]] * ROWS, "column 'label' row 0 is a list [1], not a class id", id="one-item-list-labels"),
    pytest.param("id", [[i] for i in range(ROWS)], "column 'id' row 0 is a list [0], not a text or number",
                 id="list-ids"),
])
def test_a_nested_cell_where_a_value_belongs_is_one_error_line(run_on: Any, sst2_copy: Path, tmp_path: Path,
                                                               column: str, cells: list[Any], expected: str) -> None:
    _rewrite(sst2_copy, **{column: cells})
    assert_clean_failure(run_on(sst2_copy), f"{sst2_copy / 'train.parquet'}: {expected}", tmp_path / "results")


def test_a_csv_naming_a_column_twice_is_refused(run_on: Any, sst2_copy: Path, tmp_path: Path) -> None:
    """pandas reads `label,label` as `label` and `label.1`: the task would silently use the first."""
    train = pd.read_parquet(sst2_copy / "train.parquet")
    (sst2_copy / "train.parquet").unlink()
    both = pd.DataFrame({"sentence": train["sentence"], "label": train["label"], "label2": 1 - train["label"]})
    both.to_csv(sst2_copy / "train.csv", index=False, header=["sentence", "label", "label"])
    assert_clean_failure(run_on(sst2_copy), f"{sst2_copy / 'train.csv'}: column 'label' appears more than once",
                         tmp_path / "results")


def test_a_jsonl_object_with_a_key_twice_is_refused(run_on: Any, sst2_copy: Path, tmp_path: Path) -> None:
    """JSON keeps the last of two equal keys: `"label": 1, "label": 0` would silently be a 0."""
    train = pd.read_parquet(sst2_copy / "train.parquet")
    (sst2_copy / "train.parquet").unlink()
    lines = [json.dumps({"sentence": s, "label": int(label)}) for s, label in zip(train["sentence"], train["label"])]
    lines[4] = lines[4][:-1] + ', "label": 0}'
    (sst2_copy / "train.jsonl").write_text("\n".join(lines) + "\n")
    assert_clean_failure(run_on(sst2_copy), f"{sst2_copy / 'train.jsonl'} line 5: key 'label' appears more than once",
                         tmp_path / "results")


@pytest.mark.parametrize("answers, expected", [
    pytest.param({"text": "Paris", "answer_start": np.array([3])}, "has answers text 'Paris', not a list of texts",
                 id="text-not-a-list"),
    pytest.param({"text": np.array(["Paris"]), "answer_start": np.array([[3, 4]], dtype=object)},
                 "has answer_start a list [[3, 4]], not a list of character offsets", id="nested-offsets"),
    pytest.param({"text": ["Paris"], "answer_start": "3"}, "has answer_start '3', not a list of character offsets",
                 id="offsets-as-a-string"),
])
def test_squad_answers_of_the_wrong_shape_are_refused(answers: dict[str, Any], expected: str) -> None:
    """A text where SQuAD's list of answer texts belongs was read letter by letter as five answers."""
    frame = pd.DataFrame({"id": ["q1"], "question": ["Where?"], "context": ["In Paris."], "title": ["t"],
                          "answers": [answers]})
    with pytest.raises(BenchError, match="column 'answers' row 0 " + expected.replace("[", r"\[").replace("]", r"\]")):
        to_examples(frame, get_task("squad_v2"), "squad.parquet", "train")
