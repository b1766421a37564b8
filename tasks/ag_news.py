"""AG News topic classification (4 classes: World, Sports, Business, Science/Technology).

Data: fancyzhx/ag_news (120k train / 7.6k test). Offline copies may lack the train split; then
train is carved from test with the run's seed, disjoint from the eval sample, and the table says so.
Paper: Zhang, Zhao & LeCun, 2015, "Character-level Convolutional Networks for Text Classification".
Metrics: accuracy, precision/recall/F1. The Science/Technology verbalizer is multi-token for most
tokenizers (World, Sports and Business are one token each in SmolLM2's, for one).
"""
from harness.task.registry import task
from harness.kinds import Classify
from harness.task.spec import HubData, TaskSpec


@task("ag_news")
def ag_news() -> TaskSpec:
    return TaskSpec(
        data=HubData("fancyzhx/ag_news", local="ag_news", train="train", eval="test"),
        kind=Classify(fields=("text",), labels=("World", "Sports", "Business", "Science/Technology")),
        prompt="Article: {text}\nTopic:",
        presets={"paper": {"epochs": 3, "lr": 2e-5, "weight_decay": 0.01}},
    )
