"""Task kinds: what a task asks of a model (one module per kind; the contract is base.py).

Task plugins import the kind classes from here (`from harness.kinds import Classify`).
"""
from __future__ import annotations

from harness.kinds.base import KindBase
from harness.kinds.classify import Classify
from harness.kinds.extractive_qa import ExtractiveQA
from harness.kinds.generate import Generate
from harness.kinds.language_model import LanguageModel
from harness.kinds.squad_generate import GenerateSquad

__all__ = ["KindBase", "Classify", "ExtractiveQA", "Generate", "GenerateSquad", "LanguageModel", "KINDS", "kind_named"]

# Every kind by the name a checkpoint records (`type(kind).__name__`); checkpoints written before
# GenerateSquad existed recorded SQuAD-scored generation as "Generate", which reads the same way.
KINDS: dict[str, type[KindBase]] = {kind.__name__: kind for kind in
                                    (Classify, ExtractiveQA, Generate, GenerateSquad, LanguageModel)}


def kind_named(name: object) -> type[KindBase] | None:
    """The kind class a checkpoint's recorded kind name stands for; None for an unknown name."""
    return KINDS.get(str(name))
