"""Enron spam detection (binary: ham / spam).

Data: SetFit/enron_spam (column layout; `text` = subject + newline + message). Paper: Metsis,
Androutsopoulos & Paliouras, 2006, "Spam Filtering with Naive Bayes - Which Naive Bayes?".
Metrics: accuracy, precision/recall/F1 (spam recall matters most).
"""
from harness.task.registry import task
from harness.kinds import Classify
from harness.task.spec import HubData, TaskSpec


@task("enron_spam")
def enron_spam() -> TaskSpec:
    return TaskSpec(
        data=HubData("SetFit/enron_spam", local="enron_spam", train="train", eval="test"),
        kind=Classify(fields=("text",), labels=("ham", "spam"), verbalizers=(" legitimate", " spam")),
        prompt="Email: {text}\nIs this email spam or legitimate? Answer:",
        presets={"paper": {"epochs": 3, "lr": 2e-5, "weight_decay": 0.01}},
    )
