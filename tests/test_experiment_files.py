"""`bench run/sweep --config FILE`: an experiment file gives the task, the models and any option by
its flag's name; flags typed on the command line win; a bad key or value is one `error:` line. Every
run folder keeps a config.yaml that re-runs that very run (same id: complete stages are skipped)."""
from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from harness.cli import build_parser, parse, subcommands
from harness.commands.common import overrides
from harness.options import RunConfig
from harness.commands.experiment import file_options

SMALL = {"train_samples": 16, "eval_samples": 16, "validation_samples": 8, "batch_size": 8, "max_length": 96}


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def assert_one_error(result: tuple[int, str, str], expected: str, results: Path) -> None:
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert expected in lines[0], lines[0]
    assert out == "" and not results.exists()


def test_every_run_setting_is_a_key_under_its_flag_and_its_own_name():
    """The keys are read off the commands' declarations: every setting a run records (its
    RunConfig fields besides the task and model) is a key of `run` and `sweep`, as are both
    spellings of every flag."""
    for command in ("run", "sweep"):
        keys = file_options(subcommands(build_parser())[command])
        settings = {f.name for f in dataclasses.fields(RunConfig)} - {"task", "model", "task_options"}
        assert settings <= set(keys), settings - set(keys)
        assert {"lora_rank", "limit", "baseline", "baselines", "models", "model", "data_dir"} <= set(keys)


def test_file_values_are_typed_like_flags_and_flags_override_them(tmp_path):
    path = write(tmp_path / "exp.yaml", "task: sst2\nmodels: [smollm2, minilm]\nlr: 5e-4\nlora-rank: 4\n"
                                        "limit: 100\nbaseline: both\ncompile: true\nlabels: 8\n")
    args = parse(["run", "--config", path])
    # 5e-4 is a string to YAML 1.1; it goes through the flag's own float
    assert (args.task, args.models, args.lr, args.lora_rank) == ("sst2", ("smollm2", "minilm"), 5e-4, 4)
    assert (args.eval_samples, args.baselines, args.compile, args.labels) == (100, ("prompt", "head"), True, 8)
    args = parse(["run", "imdb", "--config", path, "--lr", "1e-3", "--model", "gpt2"])
    assert (args.task, args.models, args.lr, args.lora_rank) == ("imdb", ("gpt2",), 1e-3, 4)


def test_a_sweep_file_gives_the_grid_and_a_typed_grid_replaces_it(tmp_path):
    path = write(tmp_path / "grid.yaml", "task: sst2\nmodel: minilm\ngrid:\n  lora_rank: [2, 4]\n"
                                         "  lr: [1e-4, 5.0e-5]\n  compile: [true, false]\n")
    args = parse(["sweep", "--config", path])
    assert args.grid == ["lora_rank=2,4", "lr=1e-4,5e-05", "compile=true,false"] and args.models == ("minilm",)
    assert parse(["sweep", "--config", path, "--grid", "seed=0,1"]).grid == ["seed=0,1"]


def test_toml_files_too(tmp_path):
    path = write(tmp_path / "exp.toml", 'task = "sst2"\nmodels = "minilm,smollm2"\nlr = 1e-4\n'
                                        '[task_option]\ncolumn = "title"\n')
    args = parse(["run", "--config", path])
    assert (args.task, args.models, args.lr, args.task_option) == ("sst2", ("minilm", "smollm2"), 1e-4,
                                                                    ["column=title"])


@pytest.mark.parametrize("text, expected", [
    ("task: sst2\nmodels: minilm\nlora_rnk: 4\n", "unknown key 'lora_rnk'; did you mean 'lora_rank'?"),
    ("task: sst2\nmodels: minilm\nlora_rank: four\n", "lora_rank must be an integer, got 'four'"),
    ("task: sst2\nmodels: minilm\nlora_rank: 4.5\n", "lora_rank must be an integer, got 4.5"),
    ("task: sst2\nmodels: minilm\nepochs: true\n", "epochs must be a number, got True"),
    ("task: sst2\nmodels: minilm\ncompile: yes please\n", "compile must be true or false"),
    ("task: sst2\nmodels: minilm\njudge_mode: sideways\n", "judge_mode must be one of: both, single, pairwise"),
    ("task: sst2\nmodels: {a: 1}\n", "models must be a comma-separated list"),
    ("task: [sst2]\nmodels: minilm\n", "task must be a name"),
    ("- task: sst2\n", "expected a mapping of option: value"),
    ("task: sst2\nmodels: [minilm\n", "not valid YAML"),
])
def test_a_bad_key_or_value_is_one_error_line(bench, tmp_path, text, expected):
    results = tmp_path / "results"
    path = write(tmp_path / "exp.yaml", text)
    assert_one_error(bench("run", "--config", path, "--results", results), f"--config {path}: {expected}", results)


def test_a_bad_grid_in_a_file_is_one_error_line(bench, tmp_path):
    results = tmp_path / "results"
    path = write(tmp_path / "grid.yaml", "task: sst2\nmodels: minilm\ngrid:\n  lora_rnk: [2, 4]\n")
    assert_one_error(bench("sweep", "--config", path, "--results", results),
                     "unknown key 'lora_rnk'; did you mean 'lora_rank'?", results)
    assert_one_error(bench("sweep", "--config", write(tmp_path / "g.yaml", "task: sst2\ngrid: [lr]\n"), "--results",
                           results), "grid must be a mapping of axis: [values]", results)


def test_a_missing_task_or_file_says_so(bench, capsys, tmp_path):
    path = write(tmp_path / "exp.yaml", "models: minilm\n")
    with pytest.raises(SystemExit) as exit_:
        bench("run", "--config", path)
    assert exit_.value.code == 2
    assert "required: task (or a `task:` key in the --config file)" in capsys.readouterr().err
    assert_one_error(bench("run", "--config", tmp_path / "nope.yaml"), "no such file", tmp_path / "results")


def test_a_file_plans_the_same_run_as_its_flags(tiny_model, tmp_path):
    from harness.run.runner import plan
    from harness.task.registry import get_task

    model = str(tiny_model("gpt2"))
    path = write(tmp_path / "exp.yaml", f"task: sst2\nmodels: {model}\nmethod: full\nlr: 1e-4\npatience: 2\n")
    from_file = parse(["run", "--config", path])
    from_flags = parse(["run", "sst2", "--models", model, "--method", "full", "--lr", "1e-4", "--patience", "2"])
    spec = get_task("sst2")
    ids = [plan(spec, list(args.models), overrides(args), args.preset)[0].run_id for args in (from_file, from_flags)]
    assert ids[0] == ids[1]


def test_a_run_folder_re_runs_from_its_config_yaml_and_bench_eval_takes_it(bench, tiny_model, data_dir, tmp_path):
    """The run's config.yaml (written before its first stage) re-runs the very same run: every stage
    is complete, so every one is skipped, and no second run appears. `bench eval --model` given the
    run folder evaluates its checkpoint/, saying so."""
    results = tmp_path / "results"
    sizes = "".join(f"{key}: {value}\n" for key, value in SMALL.items())
    path = write(tmp_path / "exp.yaml", f"task: sst2\nmodels: [{tiny_model('gpt2')}]\nlora_rank: 4\n{sizes}")
    code, _, err = bench("run", "--config", path, "--data-dir", data_dir, "--results", results)
    assert code == 0, err
    (folder,) = (results / "runs").iterdir()
    stored = folder / "config.yaml"
    assert stored.is_file() and "lora_rank: 4" in stored.read_text()

    code, _, err = bench("run", "--config", stored, "--data-dir", data_dir, "--results", results)
    assert code == 0, err
    assert f"run {folder.name}" in err
    assert err.count("complete in the store, skipped") == 3  # baseline:prompt, finetune, finetuned
    assert [p.name for p in (results / "runs").iterdir()] == [folder.name]
    with sqlite3.connect(results / "bench.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1

    code, out, err = bench("eval", "sst2", "--model", folder, "--data-dir", data_dir, "--results", results)
    assert code == 0, err
    assert f"info: {folder} is a run folder; evaluating its checkpoint {folder / 'checkpoint'}" in err
    assert f"| {folder / 'checkpoint'} | fine-tuned checkpoint" in out
