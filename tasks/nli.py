"""Natural language inference, 3 classes (entailment / neutral / contradiction).

Data: SICK (RobZamp/sick; 4.4k train / 495 validation / 4.9k test), the 3-way NLI set available
offline here (SNLI/MNLI were not). Paper: Marelli et al., 2014, "A SICK cure for the evaluation of
compositional distributional semantic models". Metrics: accuracy, precision/recall/F1.
The pair (premise, hypothesis) goes to classification heads as a sentence pair.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness.task.registry import task
from harness.kinds import Classify
from harness.task.spec import HubData, TaskSpec

if TYPE_CHECKING:
    import pandas as pd


def named_pair(rows: pd.DataFrame) -> pd.DataFrame:
    """The hub's SICK names the pair sentence_A / sentence_B; the local copy premise / hypothesis."""
    return rows.rename(columns={"sentence_A": "premise", "sentence_B": "hypothesis"})


@task("nli")
def nli() -> TaskSpec:
    return TaskSpec(
        data=HubData("RobZamp/sick", local="sick", train="train", validation="validation", eval="test"),
        prepare=named_pair,
        kind=Classify(
            fields=("premise", "hypothesis"),
            labels=("entailment", "neutral", "contradiction"),
            verbalizers=(" True", " Neither", " False"),
        ),
        prompt="{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:",
        presets={"paper": {"epochs": 3, "lr": 2e-5, "weight_decay": 0.01}},
    )
