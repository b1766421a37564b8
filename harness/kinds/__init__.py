"""Task kinds: what a task asks of a model (one module per kind; the contract is base.py).

Task plugins import the kind classes from here (`from harness.kinds import Classify`).
"""
from __future__ import annotations

import importlib
import pkgutil

from harness.kinds.base import KindBase
from harness.kinds.classify import Classify
from harness.kinds.extractive_qa import ExtractiveQA
from harness.kinds.generate import Generate
from harness.kinds.language_model import LanguageModel
from harness.kinds.squad_generate import GenerateSquad

__all__ = ["KindBase", "Classify", "ExtractiveQA", "Generate", "GenerateSquad", "LanguageModel", "all_kinds",
           "kind_named"]


def all_kinds() -> dict[str, type[KindBase]]:
    """Every kind by the name a checkpoint records (`type(kind).__name__`): the KindBase subclasses
    of every module in this package, so a new kind is one new module and nothing else. Checkpoints
    written before GenerateSquad existed recorded SQuAD-scored generation as "Generate", which
    reads the same way."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    found: dict[str, type[KindBase]] = {}
    pending = list(KindBase.__subclasses__())
    while pending:
        kind = pending.pop()
        found[kind.__name__] = kind
        pending += kind.__subclasses__()
    return found


def kind_named(name: object) -> type[KindBase] | None:
    """The kind class a checkpoint's recorded kind name stands for; None for an unknown name."""
    return all_kinds().get(str(name))
