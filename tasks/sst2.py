"""SST-2 sentence sentiment (binary, GLUE).

Data: stanfordnlp/sst2 (67k train / 872 validation; the GLUE test split has no labels, so the
validation split is the eval set and early stopping uses a seeded carve of train).
Paper: Socher et al., 2013, "Recursive Deep Models for Semantic Compositionality Over a Sentiment
Treebank". Metrics: accuracy, precision/recall/F1.
"""
from harness.task.registry import task
from harness.kinds import Classify
from harness.task.spec import HubData, TaskSpec


@task("sst2")
def sst2() -> TaskSpec:
    return TaskSpec(
        data=HubData("stanfordnlp/sst2", local="sst2", train="train", eval="validation"),
        kind=Classify(fields=("sentence",), labels=("negative", "positive")),
        prompt="Sentence: {sentence}\nSentiment:",
        presets={"paper": {"epochs": 3, "lr": 2e-5, "weight_decay": 0.01}},
    )
