"""GoEmotions: single-label emotion classification on 2, 4, 8 or 16 emotions.

Data: google-research-datasets/go_emotions (simplified: 43k train / 5.4k val / 5.4k test Reddit
comments, multi-label over 27 emotions + neutral). A subset keeps the comments with exactly one
label among the K most frequent emotions of the train split (neutral excluded: it is the absence of
an emotion), renumbered 0..K-1; `--train-samples 800|1600|2400` draws a class-balanced, seeded
training set. Paper: Demszky et al., 2020, "GoEmotions: A Dataset of Fine-Grained Emotions".
Metrics: accuracy (the headline), precision/recall/F1 (read macro-F1 too: classes are imbalanced in eval).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness.errors import BenchError
from harness.task.registry import task
from harness.kinds import Classify
from harness.task.spec import HubData, TaskSpec

if TYPE_CHECKING:
    import pandas as pd

# The 16 most frequent emotions among single-label train comments (neutral excluded), in order;
# a K-label subset takes the first K, so subsets nest (2 within 4 within 8 within 16).
EMOTIONS_BY_FREQUENCY = (
    ("admiration", 0), ("approval", 4), ("gratitude", 15), ("amusement", 1),
    ("annoyance", 3), ("love", 18), ("disapproval", 10), ("curiosity", 7),
    ("anger", 2), ("optimism", 20), ("confusion", 6), ("joy", 17),
    ("sadness", 25), ("surprise", 26), ("disappointment", 9), ("caring", 5),
)
LABEL_COUNTS = (2, 4, 8, 16)


def emotion_ids(value: object) -> list[int]:
    """A row's emotion ids: a list or array (parquet, jsonl), its text "[2, 27]" (csv), or one id."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip().strip("[]")
        return [int(part) for part in text.replace(",", " ").split()] if text else []
    if isinstance(value, (int, float)):
        return [int(value)]
    return [int(part) for part in value]  # type: ignore[attr-defined]


@task("goemotions")
def goemotions(labels: int = 4) -> TaskSpec:
    if labels not in LABEL_COUNTS:
        raise BenchError(f"goemotions --labels must be one of 2, 4, 8, 16 (got {labels})")
    chosen = EMOTIONS_BY_FREQUENCY[:labels]
    renumber = {source_id: new_id for new_id, (_, source_id) in enumerate(chosen)}

    def single_label_subset(rows: pd.DataFrame) -> pd.DataFrame:
        if "labels" not in rows.columns:
            raise BenchError(f"goemotions data lacks column 'labels' (each comment's list of emotion ids); has: "
                             f"{', '.join(map(str, rows.columns))}")
        ids = rows["labels"].map(emotion_ids)
        keep = ids.map(lambda value: len(value) == 1 and int(value[0]) in renumber)
        subset = rows[keep].copy()
        subset["label"] = ids[keep].map(lambda value: renumber[int(value[0])]).astype("int64")
        return subset

    return TaskSpec(
        data=HubData("google-research-datasets/go_emotions", config="simplified", local="goemotions",
                     train="train", validation="validation", eval="test"),
        kind=Classify(fields=("text",), labels=tuple(name for name, _ in chosen)),
        prompt="Comment: {text}\nEmotion:",
        prepare=single_label_subset,
        presets={"paper": {"epochs": 3, "lr": 2e-5, "weight_decay": 0.01}},
        variant=f"{labels}labels",
    )
