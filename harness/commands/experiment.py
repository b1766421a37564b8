"""Experiment files: `bench run --config exp.yaml` and `bench sweep --config grid.yaml`.

A file holds what the command line would: `task`, `models` (a list or a comma string), any option
of the command under its flag's name (`lora_rank` or `lora-rank`) or its destination (`baselines`,
`eval_samples`), and for sweeps the `grid` (axis -> list of values). The accepted keys are read off
the command's own argparse declarations, so a new option is a new key with no list to update, and
each value goes through the option's own type. Flags typed on the command line win over the file.

Every run folder keeps the `config.yaml` that re-runs it (`run_file`): every resolved setting
spelled out, so the same file gives the same run id, and the run resumes, even after a default
changes. YAML needs PyYAML (imported only when a file is read or written); `.toml` uses tomllib.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from harness.errors import BenchError, did_you_mean
from harness.options import TASK_OPTIONS
from harness.task.registry import spec_for

if TYPE_CHECKING:
    from harness.run.runner import PlannedRun

FILE_OPTION = "--config"
# Keys that are not flags of the command: the positional task and the sweep's grid (a mapping here).
TASK_KEY, GRID_KEY = "task", "grid"
# Options about this machine, not the experiment: never written into a run's config.yaml.
MACHINE_OPTIONS = ("data_dir", "results")


def config_path(argv: list[str]) -> str | None:
    """The --config value on a command line, if any (before argparse sees the rest)."""
    finder = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    finder.add_argument(FILE_OPTION)
    known, _ = finder.parse_known_args(argv)
    return known.config


def read_file(path: str) -> dict[str, Any]:
    """The file's top-level mapping: YAML, or TOML for a .toml name."""
    file = Path(path)
    if not file.is_file():
        raise BenchError(f"--config {path}: no such file")
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".toml":
        import tomllib

        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise BenchError(f"--config {path}: not valid TOML: {exc}") from None
    else:
        import yaml  # lazy: `bench --help` never loads yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise BenchError(f"--config {path}: not valid YAML{line}: {reason}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BenchError(f"--config {path}: expected a mapping of option: value at the top, got a "
                         f"{type(data).__name__}")
    return data


def file_options(command: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Key -> action for every option of `command`: its long flags without dashes (either
    spelling) and its destination."""
    keys: dict[str, argparse.Action] = {}
    for action in command._actions:
        flags = [flag for flag in action.option_strings if flag.startswith("--")]
        if not flags or FILE_OPTION in flags or isinstance(action, argparse._HelpAction):
            continue
        for name in (*(flag[2:] for flag in flags), action.dest):
            keys[name.replace("-", "_")] = action
    return keys


def apply_file(command: argparse.ArgumentParser, path: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Make the file's values `command`'s defaults (so typed flags override them) and its required
    options optional where the file gives them. Returns the values of repeatable options (task
    options, grid items), which argparse would add to rather than replace: `merge_repeated` fills
    them in after parsing, when the command line gave none."""
    options = file_options(command)
    positional = next(action for action in command._actions if action.dest == "task")
    positional.nargs, positional.required = "?", False  # the file may name it; parse() checks one did
    defaults: dict[str, Any] = {}
    repeated: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key == TASK_KEY:
            positional.default = _text(path, key, value)
            continue
        if key == GRID_KEY and "grid" in options:
            repeated["grid"] = _grid_items(path, value)
            options["grid"].required = False
            continue
        action = options.get(key)
        if action is None:
            known = sorted({*options, TASK_KEY, *((GRID_KEY,) if "grid" in options else ())})
            hint = did_you_mean(key, known) or f" (keys: {', '.join(known)})"
            raise BenchError(f"--config {path}: unknown key {raw_key!r}{hint}")
        converted = _convert(path, key, action, value)
        if isinstance(action, (argparse._AppendAction, argparse._ExtendAction)):
            repeated[action.dest] = converted
        else:
            defaults[action.dest] = converted
        action.required = False
    command.set_defaults(**defaults)
    return repeated


def merge_repeated(args: argparse.Namespace, repeated: Mapping[str, Any]) -> None:
    for dest, value in repeated.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)


def _text(path: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BenchError(f"--config {path}: {key} must be a name (text), got {value!r}")
    return value.strip()


def _convert(path: str, key: str, action: argparse.Action, value: Any) -> Any:
    """A file value as the flag would have given it: through the option's own type."""
    if isinstance(action, argparse._StoreTrueAction):
        if isinstance(value, bool):
            return value
        raise BenchError(f"--config {path}: {key} must be true or false, got {value!r}")
    if action.dest == "task_option":
        return _task_option_items(path, key, value)
    convert = action.type or str
    if isinstance(value, list) and convert not in (int, float, str):  # a comma-list option (models, baseline)
        if not all(isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in value):
            raise BenchError(f"--config {path}: {key} must be a list of names or a comma-separated string")
        value = ",".join(str(item) for item in value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BenchError(f"--config {path}: {key} must be {_kind(convert)}, got {value!r}")
    if convert is int and isinstance(value, float):
        raise BenchError(f"--config {path}: {key} must be an integer, got {value!r}")
    try:
        converted = convert(str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise BenchError(f"--config {path}: {key} must be {_kind(convert)}, got {value!r}") from None
    if action.choices is not None and converted not in action.choices:  # argparse checks typed values only
        raise BenchError(f"--config {path}: {key} must be one of: {', '.join(map(str, action.choices))}, "
                         f"got {value!r}")
    return [converted] if isinstance(action, argparse._AppendAction) else converted


def _kind(convert: Any) -> str:
    return {int: "an integer", float: "a number", str: "text"}.get(convert, "a comma-separated list")


def _task_option_items(path: str, key: str, value: Any) -> list[str]:
    """A plugin's own options as `--task-option` takes them: a mapping, or a list of KEY=VALUE."""
    if isinstance(value, dict):
        return [f"{name}={_scalar(item)}" for name, item in value.items()]
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise BenchError(f"--config {path}: {key} must be a mapping of option: value, got {value!r}")


def _scalar(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _grid_items(path: str, value: Any) -> list[str]:
    """`{lora_rank: [2, 4], lr: [1e-4, 5e-5]}` -> ["lora_rank=2,4", "lr=0.0001,5e-05"] (--grid items)."""
    if not isinstance(value, dict) or not value:
        raise BenchError(f"--config {path}: grid must be a mapping of axis: [values], e.g. grid: {{lora_rank: [2, 4]}}")
    items = []
    for axis, values in value.items():
        listed = values if isinstance(values, list) else [values]
        if not listed or any(isinstance(item, (dict, list)) or item is None for item in listed):
            raise BenchError(f"--config {path}: grid {axis}: give a list of values, e.g. {axis}: [1, 2]")
        items.append(f"{axis}=" + ",".join(_scalar(item) for item in listed))
    return items


# ---------------------------------------------------------------- a run's own file

def run_file(planned: PlannedRun, command: argparse.ArgumentParser) -> str:
    """The YAML that re-runs `planned` exactly: `bench run --config results/runs/<id>/config.yaml`
    gives the same run id. Every resolved setting that `bench run` takes as an option is spelled
    out (not left to defaults that may change); task options go back to their flags."""
    import yaml  # lazy: `bench --help` never loads yaml

    config = planned.config.to_dict()
    options = file_options(command)
    values: dict[str, Any] = {"task": spec_for(config).name, "models": [config["model"]]}
    for name, value in config.items():
        if name in ("task", "model", "task_options") or name in MACHINE_OPTIONS or value is None:
            continue
        if name in options:
            values[name] = list(value) if isinstance(value, tuple) else value
    plugin = {}
    for name, value in config.get("task_options") or ():
        if name in TASK_OPTIONS:
            values[name] = value
        else:
            plugin[name] = value
    if plugin:
        values["task_option"] = plugin
    if planned.ref.trust_remote_code:
        values["trust_remote_code"] = True
    header = (f"# run {planned.run_id}: `bench run --config <this file> --results <store> --data-dir <data>` re-runs it "
              "(complete stages are skipped)\n")
    return header + yaml.safe_dump(values, sort_keys=False, default_flow_style=None)
