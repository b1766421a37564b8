"""The one registry: task factories by name, filled by importing `tasks/` and entry points.

A task factory is a function returning a TaskSpec; keyword parameters it declares (such as
GoEmotions' `labels`) become task options on the command line.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from importlib.metadata import entry_points
from typing import Any, Callable

from harness.errors import BenchError
from harness.spec import TaskSpec

TaskFactory = Callable[..., TaskSpec]
_TASKS: dict[str, TaskFactory] = {}
_discovered = False


def task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Register a task factory under `name`."""

    def register(factory: TaskFactory) -> TaskFactory:
        if name in _TASKS and _TASKS[name] is not factory:
            raise ValueError(f"task {name!r} registered twice")
        _TASKS[name] = factory
        return factory

    return register


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    import tasks

    for module in pkgutil.iter_modules(tasks.__path__):
        importlib.import_module(f"tasks.{module.name}")
    for entry in entry_points(group="bench.tasks"):
        entry.load()


def task_names() -> list[str]:
    _discover()
    return sorted(_TASKS)


def task_options(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(_factory(name)).parameters)


def _factory(name: str) -> TaskFactory:
    _discover()
    if name not in _TASKS:
        raise BenchError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))} (see `bench list`)")
    return _TASKS[name]


def get_task(name: str, **options: Any) -> TaskSpec:
    """Build the TaskSpec; options the task does not declare are an error, not silently ignored."""
    factory = _factory(name)
    accepted = inspect.signature(factory).parameters
    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        flags = ", ".join("--" + key.replace("_", "-") for key in unknown)
        raise BenchError(f"task {name!r} takes no option {flags}")
    return factory(**given)
