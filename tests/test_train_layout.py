"""Training stays apart from evaluation: read from the source with `ast` (every import, also those
inside functions), no evaluation-side package imports harness.train, and outside train/ only the
stage that fine-tunes and the runner that passes it the launcher do. The training package keeps the
house sizes (functions under ~60 lines, modules under ~400), so the loop still reads in one screen."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "harness"
EVAL_SIDE = ("backends", "kinds", "metrics", "compare", "report", "task")
# Outside train/: the fine-tune stage (run/stages.py) and the runner that hands it the launcher.
MAY_IMPORT_TRAIN = {"run/stages.py", "run/runner.py"}


def _imported(path: Path, root: Path = HARNESS) -> set[str]:
    """Every module `path` imports, as absolute dotted names (`from harness import train` counts
    as harness.train; relative imports are resolved against the file's package)."""
    package = ["harness", *path.relative_to(root).parent.parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _imports_train(path: Path, root: Path = HARNESS) -> bool:
    return any(name == "harness.train" or name.startswith("harness.train.") for name in _imported(path, root))


@pytest.mark.parametrize("package", EVAL_SIDE)
def test_evaluation_side_imports_nothing_from_train(package: str) -> None:
    files = sorted((HARNESS / package).rglob("*.py"))
    assert files, f"harness/{package} has no modules"
    offenders = [str(path.relative_to(HARNESS)) for path in files if _imports_train(path)]
    assert offenders == []


def test_only_the_fine_tune_stage_and_commands_import_train() -> None:
    outside = [path for path in HARNESS.rglob("*.py") if path.relative_to(HARNESS).parts[0] != "train"]
    importers = {path.relative_to(HARNESS).as_posix() for path in outside if _imports_train(path)}
    assert importers - MAY_IMPORT_TRAIN == {name for name in importers if name.startswith("commands/")}
    assert "run/stages.py" in importers  # the check sees imports at all


def test_the_scanner_sees_every_form_of_import(tmp_path: Path) -> None:
    """`_imported` would let an offender through if it missed a form: it must not."""
    root = tmp_path / "harness"
    probe = root / "report" / "probe.py"
    probe.parent.mkdir(parents=True)
    forms = ["import harness.train.loop", "from harness.train import loop", "from harness import train",
             "def f():\n    from harness.train.state import save", "from ..train import loop", "from .. import train"]
    for form in forms:
        probe.write_text(form + "\n")
        assert _imports_train(probe, root), form
    probe.write_text("from harness.backends import batching\nimport harness.trainer_like\nfrom . import tables\n")
    assert not _imports_train(probe, root)


def test_training_package_sizes() -> None:
    for path in sorted((HARNESS / "train").glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) < 400, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}: {node.name}"
