"""Shared fixtures: real data from ../shared/data, tiny real models built on the fly, the CLI in-process."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    for candidate in (os.environ.get("BENCH_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = _shared_data()
    if found is None:
        pytest.skip("real datasets not found: set BENCH_DATA_DIR or place shared/data beside the repo")
    return found


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """family -> folder of a tiny random model (2 layers, hidden 64) with a freshly trained tokenizer."""
    built: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return built[family]

    return make


@pytest.fixture
def bench(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run the CLI in-process: bench("run", "sst2", ...) -> (exit code, stdout, stderr)."""
    from harness.cli import main

    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def alpaca_run(bench: Callable[..., tuple[int, str, str]], data_dir: Path, tiny_model: Callable[[str], Path],
               tmp_path: Path) -> tuple[Path, str]:
    """A tiny gpt2 alpaca run (8 training, 4 eval examples, 4 new tokens): a store with outputs to judge."""
    import sqlite3

    results = tmp_path / "results"
    code, out, err = bench("run", "alpaca", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                           results, "--train-samples", 8, "--eval-samples", 4, "--validation-samples", 2,
                           "--max-new-tokens", 4, "--epochs", 1, "--max-length", 192)
    assert code == 0, err
    with sqlite3.connect(results / "bench.sqlite") as db:
        run_id = db.execute("SELECT run_id FROM runs").fetchone()[0]
    return results, run_id
