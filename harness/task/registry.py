"""The one registry: task factories by name, and judge backends by spec scheme, filled by
importing `tasks/` and `judges/` and the `bench.tasks` / `bench.judges` entry points.

A task factory is a function returning a TaskSpec; it may take keyword parameters: the flagged task
options (`config.TASK_OPTIONS`: `--labels`, `--mode`, `--max-response-chars`), as GoEmotions takes
`labels`, or any of its own, given as `--task-option KEY=VALUE` (typed by the parameter's default).
A judge factory takes a parsed judge spec (`gemini:MODEL` -> scheme "gemini") and returns a backend;
it must not load a model or call a network until asked to judge, so a bad command fails before any work.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping, Sequence

from harness.errors import BenchError, did_you_mean, error_reason
from harness.judging.backend import SPEC_HELP, parse_judge_spec
from harness.options import TASK_OPTIONS, boolean
from harness.task.spec import TaskSpec

TaskFactory = Callable[..., TaskSpec]
JudgeFactory = Callable[..., Any]  # (JudgeSpec, JudgeOptions) -> JudgeBackend
_TASKS: dict[str, TaskFactory] = {}
_JUDGES: dict[str, JudgeFactory] = {}
# Plugins that failed to import (a syntax error, a missing import, a name clash), each with its
# one-line reason: one broken plugin must not take `bench list` and every other task down with it.
_BROKEN: list[str] = []
_discovered = False


def _registrar(table: dict[str, Any], what: str, name: str) -> Callable[[Any], Any]:
    def register(factory: Any) -> Any:
        if name in table and table[name] is not factory:
            raise ValueError(f"{what} name {name!r} is already taken by {table[name].__module__}; "
                             "register this one under another name")
        table[name] = factory
        return factory

    return register


def task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Register a task factory under `name`."""
    return _registrar(_TASKS, "task", name)


def judge(scheme: str) -> Callable[[JudgeFactory], JudgeFactory]:
    """Register a judge backend factory for specs `scheme:...`."""
    return _registrar(_JUDGES, "judge scheme", scheme)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    import judges
    import tasks

    for package in (tasks, judges):
        for module in pkgutil.iter_modules(package.__path__):
            name = f"{package.__name__}.{module.name}"
            _load(f"plugin {name}", lambda name=name: importlib.import_module(name))
    for group in ("bench.tasks", "bench.judges"):
        for entry in entry_points(group=group):
            _load(f"plugin {entry.value} (entry point {group} {entry.name!r})", entry.load)


def _load(plugin: str, load: Callable[[], Any]) -> None:
    """Import one plugin; if it fails, remember why, by its name. What it registered before failing
    stays: the module may be imported whole for another entry point (`pkg.mod:missing_name`)."""
    try:
        load()
    except Exception as exc:  # whatever the plugin's code raises, SyntaxError and ImportError included
        _BROKEN.append(f"{plugin} failed to load: {error_reason(exc)}; fix or remove it")


def _broken_note() -> str:
    """What an unknown-name error adds when plugins failed to load: the name may be in one of them."""
    if len(_BROKEN) == 1:
        return f"; and {_BROKEN[0]}"
    return f"; and {len(_BROKEN)} plugins failed to load (see `bench list`)" if _BROKEN else ""


def broken_plugins() -> list[str]:
    """Why each plugin that failed to import did (empty when all loaded)."""
    _discover()
    return list(_BROKEN)


def get_judge(text: str, options: Any) -> Any:
    """The backend for a judge spec such as `hf:smollm2`; an unknown scheme is an error."""
    spec = parse_judge_spec(text)
    _discover()
    if spec.scheme not in _JUDGES:
        raise BenchError(f"--judge {text!r}: unknown judge {spec.scheme!r}; use {SPEC_HELP}" + _broken_note())
    return _JUDGES[spec.scheme](spec, options)


def task_names() -> list[str]:
    _discover()
    return sorted(_TASKS)


def task_options(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(_factory(name)).parameters)


def parse_task_options(name: str, items: Sequence[str]) -> dict[str, Any]:
    """`--task-option KEY=VALUE` items -> keyword arguments of task `name`'s factory. Each value takes
    the type of the parameter's default (else its annotation: int, float, bool, str), so `8` and
    `08` are one option value and one run id."""
    parameters = task_options(name)
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise BenchError(f"--task-option {item!r}: expected KEY=VALUE, e.g. --task-option column=title")
        if key in TASK_OPTIONS:
            raise BenchError(f"--task-option {item!r}: {key} has its own flag; use --{key.replace('_', '-')} {text}")
        if key not in parameters:
            raise BenchError(f"--task-option {item!r}: task {name!r} takes no option {key!r}" + _declared(parameters))
        if key in options:
            raise BenchError(f"--task-option {key}=... is given twice; give it once")
        options[key] = _convert(parameters[key], text.strip(), item)
    return options


def _declared(parameters: Mapping[str, inspect.Parameter]) -> str:
    return f" (its options: {', '.join(parameters)})" if parameters else " (it takes no options)"


def _convert(parameter: inspect.Parameter, text: str, item: str) -> Any:
    convert = task_option_type(parameter)
    try:
        return convert(text)
    except (TypeError, ValueError):
        raise BenchError(f"--task-option {item!r}: {text!r} is not a valid {convert.__name__}") from None


def task_option_type(parameter: inspect.Parameter) -> Callable[[str], Any]:
    """How a task factory's keyword is read from text: as the type of its default, else of its
    annotation (int, float, bool; `from __future__ import annotations` leaves it a string), else str."""
    kind: type = type(parameter.default) if parameter.default not in (None, inspect.Parameter.empty) else str
    if kind is str:
        annotation = str(parameter.annotation).replace(" ", "")
        kind = next((t for t in (bool, int, float) if annotation in (t.__name__, f"{t.__name__}|None")), str)
    return boolean if kind is bool else kind


def _factory(name: str) -> TaskFactory:
    _discover()
    if name not in _TASKS:
        raise BenchError(f"unknown task {name!r}{did_you_mean(name, _TASKS) or ';'} known tasks: "
                         f"{', '.join(sorted(_TASKS))} (see `bench list`)" + _broken_note())
    return _TASKS[name]


def get_task(name: str, **options: Any) -> TaskSpec:
    """Build the TaskSpec; options the task does not declare are an error, not silently ignored."""
    factory = _factory(name)
    accepted = inspect.signature(factory).parameters
    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        flags = ", ".join("--" + key.replace("_", "-") if key in TASK_OPTIONS else f"--task-option {key}"
                          for key in unknown)
        raise BenchError(f"task {name!r} takes no option {flags}" + _declared(accepted))
    try:
        spec = factory(**given)
    except BenchError:  # the task's own message about its options (e.g. goemotions --labels 3)
        raise
    except Exception as exc:  # a bug in the plugin, or a TaskSpec/kind it built that is invalid
        raise BenchError(f"task {name!r} cannot be built: {error_reason(exc)}") from None
    card = (inspect.getmodule(factory).__doc__ or factory.__doc__ or "").strip()
    return dataclasses.replace(spec, name=spec.name or name,
                               description=spec.description or (card.splitlines()[0] if card else ""))


def spec_for(config: dict[str, Any]) -> TaskSpec:
    """The TaskSpec a stored run used: its task key is the task name plus a variant ("goemotions-
    4labels"), rebuilt from the task options recorded in its config."""
    key = str(config.get("task", ""))
    options = {name: value for name, value in (config.get("task_options") or ())}
    for name in task_names():
        if key == name or key.startswith(name + "-"):
            try:
                spec = get_task(name, **options)
            except BenchError:
                continue  # a task whose name merely prefixes this key
            if spec.key == key:
                return spec
    raise BenchError(f"task {key!r} is not registered here")
