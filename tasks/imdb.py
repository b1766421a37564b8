"""IMDB movie-review sentiment (binary).

Data: stanfordnlp/imdb (25k train / 25k test, balanced). Paper: Maas et al., 2011, "Learning Word
Vectors for Sentiment Analysis". Metrics: accuracy, precision/recall/F1 (macro, weighted, per class).
Seed recipe (`--preset paper`): 15 epochs, lr 2e-5, weight decay 0.01, full test set, 512 tokens.
"""
from harness.task.registry import task
from harness.kinds import Classify
from harness.task.spec import HubData, TaskSpec


@task("imdb")
def imdb() -> TaskSpec:
    return TaskSpec(
        data=HubData("stanfordnlp/imdb", local="imdb", train="train", eval="test"),
        kind=Classify(fields=("text",), labels=("negative", "positive")),
        prompt="Review: {text}\nSentiment:",
        presets={"paper": {"epochs": 15, "lr": 2e-5, "weight_decay": 0.01}},
    )
