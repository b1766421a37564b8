"""Task plugins as an outside researcher writes them: what they commonly get wrong gets one `error:`
line naming the task (or the plugin) and the fix, exit 2 and an untouched store, and one broken
plugin never takes `bench list` or the other tasks down with it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest

from harness.task import registry
from harness.kinds import Classify, ExtractiveQA
from harness.task.spec import HubData, TaskSpec
from test_cli_errors import assert_clean_failure, assert_store_empty

REPO = Path(__file__).resolve().parents[1]
FAST = ("--train-samples", "8", "--eval-samples", "8", "--validation-samples", "4")
TEXTS = ["a fine film", "a dull film", "great fun", "a bore"] * 5


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def own_files(tmp_path: Path) -> Path:
    """A researcher's data dir: reviews with string labels in a differently named column, as CSV
    (train) and JSONL (test)."""
    data = tmp_path / "data"
    (data / "mine").mkdir(parents=True)
    rows = pd.DataFrame({"review_body": [f"{text} {i}" for i, text in enumerate(TEXTS)], "sentiment": ["pos", "neg"] * 10})
    rows.to_csv(data / "mine" / "train.csv", index=False)
    rows.assign(review_body=rows["review_body"] + " again").to_json(data / "mine" / "test.jsonl", orient="records",
                                                                    lines=True)
    return data


def reviews(**changes: Any) -> TaskSpec:
    """The README's example task, with `changes` to its TaskSpec arguments."""
    arguments: dict[str, Any] = dict(
        data=HubData("me/mine", local="mine", train="train", eval="test"),
        kind=Classify(fields=("review_body",), labels=("neg", "pos"), label_column="sentiment"),
        prompt="Review: {review_body}\nSentiment:",
        prepare=lambda rows: rows.assign(sentiment=rows["sentiment"].map({"neg": 0, "pos": 1})))
    return TaskSpec(**{**arguments, **changes})


@pytest.fixture
def run_plugin(bench, tiny_model, own_files, results, monkeypatch):
    """Register `factory` as task "mine" (in the real registry, for this test only) and `bench run` it."""
    registry.task_names()  # discover first, so the entry below is not overwritten by discovery

    def run(factory: Callable[[], TaskSpec], family: str = "gpt2", *extra: str) -> tuple[int, str, str]:
        monkeypatch.setitem(registry._TASKS, "mine", factory)
        return bench("run", "mine", "--models", str(tiny_model(family)), "--data-dir", str(own_files),
                     "--results", str(results), *FAST, *extra)

    return run


def test_the_readme_example_runs_on_own_files(run_plugin, results):
    code, out, err = run_plugin(reviews)
    assert code == 0, err
    assert "| mine |" in out


@pytest.mark.parametrize("factory, expected", [
    pytest.param(lambda: reviews(prompt="Review: {text}\nSentiment:"),
                 "task 'mine' cannot be built: ValueError: prompt names {text}, which is not a field of the task's "
                 "kind; its fields are review_body", id="prompt-field"),
    pytest.param(lambda: reviews(prompt="Review: {review_body} }"),
                 "prompt is not a str.format template (Single '}' encountered", id="prompt-brace"),
    pytest.param(lambda: reviews(kind=Classify(fields=("review_body",), labels=("neg", "pos"),
                                               verbalizers=(" x", " x"))),
                 "verbalizer ' x' is given for two labels", id="same-verbalizer"),
    pytest.param(lambda: reviews(presets={"quick": {"epoch": 2}}),
                 "task mine: 'epoch' is not a run option (in its 'quick' preset); did you mean 'epochs'?",
                 id="preset-key"),
    pytest.param(lambda: reviews(presets={"papr": {"epochs": 2}}),
                 "task mine: 'papr' is not a preset; did you mean 'paper'?", id="preset-name"),
    pytest.param(lambda: reviews(prepare=lambda rows: rows.assign(sentiment=rows["sentimnt"])),
                 "task mine's prepare failed on", id="prepare-raises"),
    pytest.param(lambda: reviews(prepare=None),
                 "column 'sentiment' row 0 is 'pos', not a class id (0=neg, 1=pos); the column holds names: map "
                 "them to these ids in the file, or in the task's `prepare`", id="label-names"),
    pytest.param(lambda: reviews(kind=Classify(fields=("review_body",), labels=("neg", "pos"),
                                               verbalizers=(" good!", " good"), label_column="sentiment")),
                 "verbalizer ' good!' has all the tokens of ' good' ([", id="verbalizer-prefix"),
])
def test_plugin_mistakes_fail_cleanly(run_plugin, results, factory, expected):
    """Each was a traceback, or a run that went ahead wrongly: a KeyError after the model loaded, preset
    typos dropped without a word, a label whose verbalizer can never win scored as if it could."""
    assert_clean_failure(run_plugin(factory), expected, results)


def test_a_doc_stride_the_windows_cannot_hold_fails_before_the_model_loads(run_plugin, results):
    """ExtractiveQA's default stride (128) equals the quick preset's --max-length: found by the baseline
    before, after the model had loaded and the store was opened."""
    qa = lambda: reviews(kind=ExtractiveQA(question="review_body", context="review_body", answers="sentiment"),
                         prompt="")  # noqa: E731
    assert_clean_failure(run_plugin(qa, "bert"), "--max-length 128: mine's context windows overlap by its "
                         "doc_stride of 128 tokens, so they must be longer; use --max-length 256 or more", results)


@pytest.mark.parametrize("content", ["", "review_body,sentiment\n"])
def test_an_empty_file_is_said_to_be_empty(run_plugin, own_files, results, content):
    """Not 'No columns to parse' (0-byte CSV) or the prepare's KeyError on a frame without columns."""
    (own_files / "mine" / "test.jsonl").unlink()
    (own_files / "mine" / "test.csv").write_text(content)
    assert_clean_failure(run_plugin(reviews), "mine/test.csv is empty: task mine needs at least one example", results)


PLUGINS = {
    "good": '"""A good plugin."""\nfrom harness.task.registry import task\nfrom harness.kinds import Classify\n'
            'from harness.task.spec import HubData, TaskSpec\n\n\n@task("good_plugin")\ndef good() -> TaskSpec:\n    return TaskSpec(HubData("x", "x"), '
            'Classify(("text",), ("a", "b")), "{text}")\n',
    "syntax": '"""Broken."""\ndef (:\n',
    "needs": '"""Broken."""\nimport not_a_module_anywhere\n',
    "clash": '"""Clash."""\nfrom harness.task.registry import task\n\n\n@task("sst2")\ndef sst2():\n    return None\n',
    "raises": '"""Raises."""\nfrom harness.task.registry import task\n\n\n@task("raising_plugin")\ndef raising():\n'
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


def test_a_plugins_own_option_is_a_typed_task_option_and_a_sweep_axis(run_plugin, bench, tiny_model, own_files,
                                                                       results):
    """`def mine(column: str = ..., shots_hint: int = 0)`: no flag of its own, so `--task-option
    KEY=VALUE`, typed by the default (5 and 05 are one run), recorded in the run's config and id,
    and a `--grid` axis; what the factory does not take is one error line listing what it does."""
    seen: list[tuple[str, int]] = []

    def mine(column: str = "review_body", repeat: int = 1) -> TaskSpec:
        seen.append((column, repeat))
        return reviews(prompt=f"Review: {{review_body}}\nAbout {column} x{repeat}:", variant=f"{column}{repeat}")

    code, out, err = run_plugin(mine, "gpt2", "--task-option", "column=title", "--task-option", "repeat=05")
    assert code == 0, err
    assert ("title", 5) in seen and "| mine-title5 |" in out
    import json
    import sqlite3

    with sqlite3.connect(results / "bench.sqlite") as db:
        (options,) = db.execute("SELECT json_extract(config, '$.task_options') FROM runs").fetchone()
    assert json.loads(options) == [["column", "title"], ["repeat", 5]]

    code, _, err = run_plugin(mine, "gpt2", "--task-option", "repeat=5", "--task-option", "column=title")
    assert code == 0 and "baseline:prompt ..." not in err  # same run: given in another order, 5 for 05

    for extra, expected in [
        (("--task-option", "colour=red"), "task 'mine' takes no option 'colour' (its options: column, repeat)"),
        (("--task-option", "repeat=many"), "--task-option 'repeat=many': 'many' is not a valid int"),
        (("--task-option", "repeat"), "expected KEY=VALUE"),
        (("--task-option", "labels=4"), "labels has its own flag; use --labels 4"),
    ]:
        code, _, err = run_plugin(mine, "gpt2", *extra)
        assert code == 2 and err.strip().splitlines()[-1].startswith("error: ") and expected in err, (extra, err)

    code, out, err = bench("sweep", "mine", "--models", str(tiny_model("gpt2")), "--data-dir", str(own_files),
                           "--results", str(results), *FAST, "--grid", "repeat=1,2")
    assert code == 0, err
    assert ("review_body", 2) in seen and "| repeat |" in out
    code, _, err = bench("sweep", "mine", "--models", str(tiny_model("gpt2")), "--data-dir", str(own_files),
                         "--results", str(results), *FAST, "--task-option", "repeat=3", "--grid", "repeat=1,2")
    assert code == 2 and "--task-option repeat is also given; drop one" in err
