"""Everyday multiple-choice questions (2-4 choices each), the demo of the multiple-choice kind.

Data: 60 hand-written questions of general knowledge and everyday cause and effect (36 train / 24
test; validation is carved from train) in tests/data/mc_demo/{train,test}.jsonl: `question`,
`choices` (a list of texts), `label` (the index of the right one). Easy for a real language model,
not for a tiny random one. Run it with `--data-dir tests/data`, or with no data dir at all (the
folder is then read through `datasets.load_dataset`).
Paper: none (written for bench's tests); the format follows ARC (Clark et al., 2018) and COPA
(Roemmele et al., 2011) as lm-evaluation-harness scores them.
Metrics: accuracy is the headline (the most likely choice, log-likelihood summed over its tokens),
acc_norm (log-likelihood per character of the choice, as lm-eval reports it), position macro-F1.
"""
from pathlib import Path

from harness.kinds.multiple_choice import MultipleChoice
from harness.task.registry import task
from harness.task.spec import HubData, TaskSpec

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "mc_demo"


@task("mc_demo")
def mc_demo() -> TaskSpec:
    return TaskSpec(
        # A local folder of split files is a dataset `datasets.load_dataset` reads as it reads a hub id.
        data=HubData(str(DATA), local="mc_demo", train="train", eval="test"),
        kind=MultipleChoice(fields=("question",), choices="choices", label_column="label"),
        prompt="Question: {question}\nAnswer:",
    )
