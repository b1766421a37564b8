"""Re-running a command skips completed stages and prints the same table. (A run killed mid-stage
resumes to the uninterrupted result: tests/test_crash_safety.py, at exact points of every stage.)"""
from __future__ import annotations

import pytest

pytest.importorskip("torch")


def test_rerun_skips_completed_stages_and_prints_the_same_table(bench, data_dir, tiny_model, tmp_path):
    args = ("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", tmp_path,
            "--train-samples", "16", "--eval-samples", "8", "--validation-samples", "8")
    code, first, _ = bench(*args)
    assert code == 0
    code, second, err = bench(*args)
    assert code == 0
    assert err.count("complete in the store, skipped") == 3
    strip = lambda text: [line for line in text.splitlines() if "wall time" not in line]  # noqa: E731
    assert strip(first) == strip(second)
