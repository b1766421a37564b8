"""Task plugins as an outside researcher writes them: what they commonly get wrong gets one `error:`
line naming the task (or the plugin) and the fix, exit 2 and an untouched store, and one broken
plugin never takes `bench list` or the other tasks down with it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_cli_errors import assert_store_empty

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


PLUGINS = {
    "good": '"""A good plugin."""\nfrom harness.registry import task\nfrom harness.spec import Classify, HubData, '
            'TaskSpec\n\n\n@task("good_plugin")\ndef good() -> TaskSpec:\n    return TaskSpec(HubData("x", "x"), '
            'Classify(("text",), ("a", "b")), "{text}")\n',
    "syntax": '"""Broken."""\ndef (:\n',
    "needs": '"""Broken."""\nimport not_a_module_anywhere\n',
    "clash": '"""Clash."""\nfrom harness.registry import task\n\n\n@task("sst2")\ndef sst2():\n    return None\n',
    "raises": '"""Raises."""\nfrom harness.registry import task\n\n\n@task("raising_plugin")\ndef raising():\n'
              '    raise RuntimeError("boom")\n',
}


def test_broken_plugins_are_named_and_the_rest_still_work(tmp_path, results):
    """An installed package's plugins: a syntax error, an ImportError, a name taken by a built-in, an
    entry point naming no module and a factory that raises each get one `error:` line naming the plugin
    (they were one traceback that broke `bench list` and every task); the good tasks still list and run."""
    site = tmp_path / "site"
    (site / "plug").mkdir(parents=True)
    (site / "plug" / "__init__.py").write_text("")
    for name, source in PLUGINS.items():
        (site / "plug" / f"{name}.py").write_text(source)
    info = site / "plug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug\nVersion: 0.1\n")
    points = "".join(f"{name} = plug.{name}\n" for name in PLUGINS) + "ghost = plug.ghost\n"
    (info / "entry_points.txt").write_text("[bench.tasks]\n" + points)

    def bench(*args: str) -> tuple[int, str, str]:
        script = "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))"
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{REPO}", "HOME": str(tmp_path)}
        proc = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True,
                              timeout=300, env=env)
        return proc.returncode, proc.stdout, proc.stderr

    code, out, err = bench("list", "tasks")
    assert code == 2
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    assert {"good_plugin", "sst2", "imdb", "raising_plugin"} <= set(listed)
    assert "raising_plugin (cannot be built: see the error below)" in " ".join(out.split())
    errors = err.strip().splitlines()
    assert all(line.startswith("error: ") for line in errors) and len(errors) == 5, err
    expected = ["task 'raising_plugin' cannot be built: RuntimeError: boom (", "plugin plug.syntax (entry point "
                "bench.tasks 'syntax') failed to load: SyntaxError", "plugin plug.needs (entry point bench.tasks "
                "'needs') failed to load: ModuleNotFoundError: No module named 'not_a_module_anywhere' (",
                "failed to load: ValueError: task name 'sst2' is already taken by tasks.sst2; register this one under "
                "another name", "plugin plug.ghost (entry point bench.tasks 'ghost') failed to load: "
                "ModuleNotFoundError: No module named 'plug.ghost'; fix or remove it"]
    for text in expected:
        assert sum(text in line for line in errors) == 1, (text, err)
    code, out, err = bench("run", "raising_plugin", "--models", "x", "--results", str(results))
    assert (code, out) == (2, "") and err.count("\n") == 1 and "RuntimeError: boom" in err, err
    assert_store_empty(results)
    code, out, err = bench("run", "needs", "--models", "x", "--results", str(results))
    assert (code, out) == (2, "") and err.count("\n") == 1, err
    assert "unknown task 'needs'" in err and "and 4 plugins failed to load (see `bench list`)" in err
