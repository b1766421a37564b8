"""Bad input fails fast and cleanly: one `error: ...` line naming the problem, exit code 2, and
nothing half-written in the results store (so a corrected re-run starts from a clean slate)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import build_parser
from harness.task.registry import task_names

REPO = Path(__file__).resolve().parents[1]
FAST = ("--train-samples", "8", "--eval-samples", "8", "--validation-samples", "4")


def assert_clean_failure(result: tuple[int, str, str], expected: str, results: Path) -> None:
    """Exit 2, a single `error:` line that contains `expected`, and no stage, run or table stored."""
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"
    assert out == ""
    assert_store_empty(results)


def assert_store_empty(results: Path) -> None:
    """Validation happens before the store is opened: a bad command creates no store at all."""
    assert not (results / "bench.sqlite").exists()
    assert not (results / "runs").exists()
    assert not (results / "tables").exists()


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def run_sst2(bench, tiny_model, data_dir, results):
    """`bench run sst2` with a valid tiny model and tiny sample sizes, plus the flags under test."""

    def run(*extra: str, models: str | None = None, data: Path | None = None) -> tuple[int, str, str]:
        return bench("run", "sst2", "--models", models or str(tiny_model("gpt2")), "--data-dir", str(data or data_dir),
                     "--results", str(results), *FAST, *extra)

    return run


# ---------------------------------------------------------------- task, model, data dir

def test_unknown_task(bench, tiny_model, data_dir, results):
    """A typo in the task name lists the known tasks instead of failing somewhere deeper."""
    result = bench("run", "sst3", "--models", str(tiny_model("gpt2")), "--data-dir", str(data_dir),
                   "--results", str(results), *FAST)
    assert_clean_failure(result, "unknown task 'sst3'", results)


def test_unknown_model_path(run_sst2, tmp_path, results):
    """A local path that does not exist is reported as such, not as a hub lookup failure."""
    missing = tmp_path / "no-such-model"
    assert_clean_failure(run_sst2(models=str(missing)), f"model path {missing} does not exist", results)


@pytest.mark.parametrize("name", ["no-such-model-zz", "no-such-org/no-such-model"])
def test_unknown_model_name_offline(monkeypatch, data_dir, results, tmp_path, name):
    """A name that is neither an alias nor a folder, with the hub unreachable, fails with a hint.

    Runs in a subprocess: huggingface_hub reads HF_HUB_OFFLINE once, at import, and this test
    process has imported it already (online-but-unreachable, the lookup retries ~25 s, logging each try).
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    argv = ["run", "sst2", "--models", name, "--data-dir", str(data_dir), "--results", str(results), *FAST]
    script = "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", script, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert_clean_failure((proc.returncode, proc.stdout, proc.stderr), f"cannot load model {name!r}", results)
    assert "not an alias, not a local folder" in proc.stderr


def test_missing_data_dir(run_sst2, results):
    assert_clean_failure(run_sst2(data=Path("/nonexistent")), "data dir /nonexistent does not exist", results)


# ---------------------------------------------------------------- broken datasets

GOOD = pd.DataFrame({"sentence": ["a fine film ", "a dull film ", "great fun ", "a bore "] * 5,
                     "label": [1, 0, 1, 0] * 5})
EMPTY = GOOD.iloc[:0]
NO_SENTENCE = GOOD.rename(columns={"sentence": "text"})


@pytest.mark.parametrize("files, expected", [
    pytest.param({"train": GOOD}, "split 'validation' missing", id="missing-split"),
    pytest.param({"train": NO_SENTENCE, "validation": GOOD}, "sst2/train.parquet lacks column(s) sentence",
                 id="missing-column"),
    pytest.param({"train": EMPTY, "validation": GOOD}, "sst2/train.parquet is empty", id="empty-split"),
    pytest.param({}, "has no folder 'sst2'", id="no-task-folder"),
])
def test_broken_data(run_sst2, tmp_path, results, files, expected):
    """Data problems are found while building splits, before any stage is stored."""
    data = tmp_path / "data"
    data.mkdir()
    if files:
        (data / "sst2").mkdir()
    for split, frame in files.items():
        frame.to_parquet(data / "sst2" / f"{split}.parquet", index=False)
    assert_clean_failure(run_sst2(data=data), expected, results)


def test_label_outside_label_set(run_sst2, tmp_path, results):
    """The message names the file, the column, the row, the bad value, the labels allowed and the fix."""
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)
    GOOD.to_parquet(data / "sst2" / "train.parquet", index=False)
    GOOD.assign(label=[1, 0, 7, 0] * 5).to_parquet(data / "sst2" / "validation.parquet", index=False)
    result = run_sst2(data=data)
    assert_clean_failure(result, "sst2/validation.parquet: column 'label' row 2 is 7, not a class id (0=negative, "
                                 "1=positive); map the labels to these ids or drop that row", results)


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("flags, expected", [
    pytest.param(("--lr", "0"), "--lr must be positive", id="lr-zero"),
    pytest.param(("--lr=-1",), "--lr must be positive", id="lr-negative"),
    pytest.param(("--lora-rank", "0"), "--lora-rank must be positive", id="lora-rank-zero"),
    pytest.param(("--method", "adapter"), "unknown method 'adapter'", id="unknown-method"),
    pytest.param(("--method", "lora:2"), "unknown method 'lora:2'", id="method-with-count"),
    pytest.param(("--method", "freeze:0"), "use freeze:N with N >= 1", id="freeze-zero"),
    pytest.param(("--seed=-1",), "--seed must be an integer from 0", id="seed-negative"),
    pytest.param(("--seed", str(2**64)), "--seed must be an integer from 0", id="seed-too-large"),
    pytest.param(("--train-seed=-1",), "--train-seed must be an integer from 0", id="train-seed-negative"),
    pytest.param(("--optimizer", "adam8bit"), "unknown --optimizer 'adam8bit'", id="unknown-optimizer"),
    pytest.param(("--labels", "4"), "task 'sst2' takes no option --labels", id="undeclared-task-option"),
    # Found only at fine-tuning before: the baseline had been stored by then.
    pytest.param(("--method", "freeze:3"), "has only 2 blocks; use freeze:1 to freeze:2", id="freeze-too-many"),
    pytest.param(("--lora-targets", "c_attn,no_such_proj"), "--lora-targets no_such_proj: no such module",
                 id="lora-target-unknown"),
    pytest.param(("--early-stop-metric", "loss"), "sst2 validates on f1_macro and accuracy", id="early-stop-loss"),
    # Options that would change nothing but the run id (and so re-run everything).
    pytest.param(("--max-new-tokens", "5"), "--max-new-tokens applies to prompted generation; sst2 scores its label",
                 id="max-new-tokens-on-labels"),
    pytest.param(("--chat-template", "on"), "--chat-template applies to prompted generation",
                 id="chat-template-on-labels"),
    pytest.param(("--shots", "2", "--baseline", "head", "--objective", "head"), "nothing would show",
                 id="shots-without-prompt"),
])
def test_bad_option(run_sst2, results, flags, expected):
    assert_clean_failure(run_sst2(*flags), expected, results)


def test_goemotions_label_count(bench, tiny_model, data_dir, results):
    """GoEmotions subsets exist for 2, 4, 8 and 16 labels only."""
    result = bench("run", "goemotions", "--labels", "3", "--models", str(tiny_model("gpt2")),
                   "--data-dir", str(data_dir), "--results", str(results), *FAST)
    assert_clean_failure(result, "goemotions --labels must be one of 2, 4, 8, 16 (got 3)", results)


def test_qlora_without_4bit(run_sst2, results, monkeypatch):
    """Without a working bitsandbytes, qlora is refused up front with the fallback named."""
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    expected = "--method qlora needs 4-bit bitsandbytes: bitsandbytes is not installed"
    assert_clean_failure(run_sst2("--method", "qlora"), expected, results)


@pytest.mark.parametrize("task, family, flags, expected", [
    ("wikitext", "llama", ("--max-new-tokens", "3"), "--max-new-tokens applies to prompted generation; wikitext"),
    ("wikitext", "gpt2", ("--chat-template", "on"), "--chat-template applies to prompted generation; wikitext"),
    ("squad_v2", "bert", ("--max-new-tokens", "5"), "squad_v2 --mode span points at a span"),
    ("squad_v2", "bert", ("--chat-template", "off"), "or use --mode generate"),
])
def test_generation_options_on_tasks_that_generate_nothing(bench, tiny_model, data_dir, results, task, family, flags,
                                                           expected):
    """Span QA generates nothing and wikitext's continuations have a fixed length with no prompt: these
    options would only change the run id (a second full run, same numbers), as on classification."""
    result = bench("run", task, "--models", str(tiny_model(family)), "--data-dir", str(data_dir),
                   "--results", str(results), *FAST, *flags)
    assert_clean_failure(result, expected, results)


@pytest.mark.parametrize("task, extra", [("samsum", ("--max-length", "160")), ("squad_v2", ("--max-length", "128"))])
def test_missing_wordnet_fails_before_the_baseline(bench, tiny_model, data_dir, results, tmp_path, monkeypatch,
                                                   task, extra):
    """METEOR scores every text stage: without WordNet the run stops up front with the fix, instead
    of generating the whole baseline and then discarding it."""
    import nltk

    def not_found(*args, **kwargs):
        raise LookupError("no wordnet")

    monkeypatch.setattr(nltk.data, "find", not_found)
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path / "no-wordnet"))
    model = tiny_model("bert" if task == "squad_v2" else "gpt2")
    result = bench("run", task, "--models", str(model), "--data-dir", str(data_dir), "--results", str(results),
                   *FAST, *extra)
    assert_clean_failure(result, "WordNet not found", results)


@pytest.mark.parametrize("flags, expected", [
    pytest.param(("--objective", "lm"), "--objective lm needs a causal or seq2seq model", id="objective-lm"),
    pytest.param(("--baseline", "prompt"), "--baseline prompt needs a language-model head", id="baseline-prompt"),
])
def test_encoder_cannot_prompt(run_sst2, tiny_model, results, flags, expected):
    """An encoder has no LM head: prompt scoring and the LM objective are refused, not crashed into."""
    assert_clean_failure(run_sst2(*flags, models=str(tiny_model("bert"))), expected, results)


# ---------------------------------------------------------------- report and eval

def test_report_without_store(bench, results):
    assert_clean_failure(bench("report", "--results", str(results)), "no results store at", results)
    assert not results.exists()


def test_eval_missing_model(bench, data_dir, tmp_path, results):
    missing = tmp_path / "no-such-checkpoint"
    result = bench("eval", "sst2", "--model", str(missing), "--data-dir", str(data_dir), "--results", str(results),
                   *FAST)
    assert_clean_failure(result, f"model path {missing} does not exist", results)


# ---------------------------------------------------------------- the light commands

COMMANDS = ("run", "sweep", "eval", "rescore", "report", "judge", "export")


def test_help_and_list_do_not_import_heavy_modules():
    """`bench --help`, every command's `--help` and `bench list` must answer instantly: no torch,
    transformers, pandas, matplotlib, sqlite3 or yaml (modules import them inside commands only)."""
    script = (
        "import contextlib, io, sys\n"
        "from harness.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['list']) == 0\n"
        f"    for args in ([], *([c] for c in {COMMANDS!r})):\n"
        "        try:\n"
        "            main([*args, '--help'])\n"
        "            raise AssertionError(f'{args} --help did not exit')\n"
        "        except SystemExit as exit:\n"
        "            assert exit.code == 0, args\n"
        "heavy = sorted({'torch', 'transformers', 'pandas', 'matplotlib', 'sqlite3', 'yaml'} & set(sys.modules))\n"
        "print(','.join(heavy) or 'none')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "none", f"imported: {proc.stdout.strip()}"


def test_list_prints_every_task(bench):
    """Every registered task (tasks/ and entry points) shows up, one per indented line after `tasks:`."""
    code, out, err = bench("list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    after = lines[lines.index("tasks:") + 1:]
    block = after[:next((i for i, line in enumerate(after) if not line.startswith("  ")), len(after))]
    assert [line.split()[0] for line in block] == task_names()


def test_help_defaults_say_when_presets_or_tasks_override_them():
    """A default the help states for --max-length, --batch-size, --eval-batch-size or --lr must not be
    the only one: where a task's presets set that option, the help says the task's value applies."""
    from harness.cli import build_parser
    from harness.options import PRESETS
    from harness.task.registry import get_task, task_names

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    run = commands.choices["run"]
    helps = {action.dest: action.help for action in run._actions}
    for key in ("max_length", "batch_size", "eval_batch_size", "lr"):
        overridden = [name for name in task_names() for preset in PRESETS
                      if key in get_task(name).presets.get(preset, {})]
        if overridden:
            assert "task's" in helps[key], (key, helps[key], overridden)


def test_objective_help_names_every_case_auto_picks_head():
    """`--objective auto` trains a head for encoders, for --method head and for squad_v2's span mode:
    the help says so (it named encoders only)."""
    from harness.cli import build_parser
    from harness.resolve import resolve
    from harness.task.registry import get_task

    assert resolve(get_task("sst2"), "m", {"method": "head"}, can_prompt=True).objective == "head"
    assert resolve(get_task("squad_v2"), "m", {}, can_prompt=True).objective == "head"
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    (text,) = [a.help for a in commands.choices["run"]._actions if a.dest == "objective"]
    assert "--method head" in text and "span" in text


# ---------------------------------------------------------------- frictions a new user met (issue 23)

@pytest.mark.parametrize("typed", ["sst-2", "SST2", "sst_2"])
def test_a_misspelt_task_gets_a_did_you_mean(bench, tiny_model, data_dir, results, typed):
    result = bench("run", typed, "--models", str(tiny_model("gpt2")), "--data-dir", str(data_dir),
                   "--results", str(results), *FAST)
    assert_clean_failure(result, f"unknown task {typed!r}; did you mean 'sst2'?", results)


def test_a_misspelt_grid_key_gets_a_did_you_mean(bench, tiny_model, data_dir, results):
    result = bench("sweep", "sst2", "--models", str(tiny_model("gpt2")), "--data-dir", str(data_dir),
                   "--results", str(results), "--grid", "lora_rnk=2,4")
    assert_clean_failure(result, "unknown key 'lora_rnk'; did you mean 'lora_rank'?", results)


def test_report_on_a_misspelt_task_says_it_is_unknown_not_that_no_runs_are_complete(bench, results):
    from harness.store import Store

    store = Store(results)
    store.runs()  # an empty, existing store
    store.close()
    code, out, err = bench("report", "--task", "sst-2", "--results", str(results))
    assert code == 2 and out == ""
    assert err.startswith("error: unknown task 'sst-2'; did you mean 'sst2'?"), err
    code, _, err = bench("report", "--task", "sst2", "--results", str(results))  # a real task, no runs yet
    assert code == 2 and "no complete runs" in err


def test_baseline_both_is_prompt_and_head(tiny_model):
    """The help says "prompt, head or both": both plans the two baselines."""
    from harness.cli import build_parser
    from harness.commands.common import overrides
    from harness.run.runner import plan
    from harness.task.registry import get_task

    args = build_parser().parse_args(["run", "sst2", "--models", str(tiny_model("gpt2")), "--baseline", "both"])
    (planned,) = plan(get_task("sst2"), list(args.models), overrides(args), args.preset)
    assert planned.baselines == ("prompt", "head")


def test_model_and_models_are_one_option_on_run_sweep_and_eval():
    parse = build_parser().parse_args

    assert parse(["run", "sst2", "--model", "a,b"]).models == ("a", "b")
    assert parse(["sweep", "sst2", "--model", "a", "--grid", "lr=1e-4,1e-3"]).models == ("a",)
    assert parse(["eval", "sst2", "--models", "a"]).model == "a"


def test_eval_refuses_several_models(bench, data_dir, results):
    result = bench("eval", "sst2", "--models", "smollm2,minilm", "--data-dir", str(data_dir),
                   "--results", str(results))
    assert_clean_failure(result, "bench eval evaluates one model", results)


@pytest.mark.parametrize("argv", [
    ["run", "sst2", "--models", "m", "--eval-batch", "8"],  # --eval-batch-size
    ["sweep", "sst2", "--models", "m", "--grid", "lr=1,2", "--metr", "delta"],  # --metric
    ["eval", "sst2", "--model", "m", "--train-sample", "8"],  # --train-samples
    ["report", "--form", "csv"],  # --format
])
def test_option_prefixes_are_not_options(capsys, argv):
    """An abbreviation is refused, not silently taken for the option it starts (which made
    `bench run --model` work by accident, and would change meaning once a longer option arrives)."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_loading_a_model_draws_no_progress_bar_and_logs_no_library_chatter(tiny_model):
    """transformers' "Loading weights" tqdm bar and its `loss_type=None` notice land in logs as
    carriage-return noise: harness.backends.models silences them wherever a model is loaded. Its own
    subprocess: the switches are process-wide, and earlier tests may have set them."""
    script = (
        "import sys, torch\n"
        "from harness.backends.models import load_lm, resolve_model\n"
        "model = load_lm(resolve_model(sys.argv[1]))\n"
        "model.loss_type = None\n"
        "ids = torch.tensor([[5, 6, 7, 8]])\n"
        "model(input_ids=ids, labels=ids)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tiny_model("gpt2"))], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Loading weights" not in proc.stderr and "\r" not in proc.stderr, proc.stderr
    assert "loss_type" not in proc.stderr, proc.stderr
