"""Each run option is declared once, on its RunConfig field: the flags of run/sweep/eval and the
sweep's grid axes are derived from those declarations, and every field says how it is set."""
from __future__ import annotations

import argparse
import dataclasses

from harness.cli import build_parser, subcommands
from harness.options import GRID_EXTRAS, TASK_OPTION_FLAGS, RunConfig, converter, flags, grid_axes


def _actions(command: str) -> dict[str, argparse.Action]:
    parser = subcommands(build_parser())[command]
    return {action.dest: action for action in parser._actions if action.option_strings}


def test_every_field_has_help_and_is_a_flag_or_says_why_not() -> None:
    run, sweep, evaluate = _actions("run"), _actions("sweep"), _actions("eval")
    for field in dataclasses.fields(RunConfig):
        flag = field.metadata.get("flag", ...)
        assert flag is not ..., f"{field.name}: declared with neither option(...) nor not_a_flag(...)"
        if flag is None:
            assert field.metadata["why"].strip(), field.name
            assert field.name not in run, f"{field.name} is declared not a flag but `bench run` has one"
            continue
        assert flag.help.strip(), field.name
        assert field.name in run and field.name in sweep, f"--{field.name} missing from run/sweep"
        assert run[field.name].help == flag.help and sweep[field.name].help == flag.help
        assert (field.name in evaluate) == (flag.group in ("common", "serving")), field.name
        spellings = flag.spellings or (f"--{field.name.replace('_', '-')}",)
        assert tuple(run[field.name].option_strings) == spellings


def test_a_flag_not_typed_leaves_the_default_to_resolve() -> None:
    args = build_parser().parse_args(["run", "sst2", "--models", "m"])
    for name, flag in flags():
        expected = RunConfig.__dataclass_fields__[name].default if flag.flag_default else None
        assert getattr(args, name) == expected, name


def test_grid_axes_are_the_declared_grid_options() -> None:
    axes = grid_axes()
    declared = {name for name, flag in flags() if flag.grid}
    assert set(axes) == declared | set(TASK_OPTION_FLAGS) | set(GRID_EXTRAS)
    assert {"preset", "baselines", "lora_targets", "lm_eval", "task", "model", "task_options"}.isdisjoint(declared)
    run = _actions("run")
    for name in declared:  # a grid value parses as the flag would parse it
        assert axes[name] is converter(name, dict(flags())[name])
        if run[name].type is not None:
            assert axes[name] is run[name].type, name
    assert axes["compile"]("off") is False and axes["lr"]("1e-4") == 1e-4
