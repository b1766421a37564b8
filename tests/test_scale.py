"""Stores and eval sets at realistic scale: hundreds of runs in one store, full test sets. Work is
checked by counting it (comparisons, rows), never by timing; benchmarks/ prints the timings."""
from __future__ import annotations

from dataclasses import dataclass

from harness.leaderboard import settings_labels


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
