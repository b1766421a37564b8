"""SQuAD v2 extractive QA with unanswerable questions: a span head, or generated answers.

Data: rajpurkar/squad_v2 (130k train / 11.9k validation; the local copy has validation only, so
train is carved from it by context: a paragraph is never in both train and eval). Paper:
Rajpurkar et al., 2018, "Know What You Don't Know: Unanswerable Questions for SQuAD".
`--mode span` (default, any model): AutoModelForQuestionAnswering with doc-stride windows and a
no-answer position; `--mode generate`: prompted generation where "unanswerable" (and variants) is
recognised as no answer. `--train-samples 4000|24000` as in the seeds. Metrics: the official SQuAD
v2 set (exact, f1, HasAns/NoAns, best thresholds) plus ROUGE/BLEU/METEOR on answerable questions.
CIs and paired tests are clustered by article (`title`): the eval sample takes one question per
context (up to half the contexts), so contexts rarely repeat in it, but its questions share 35
articles, whose topics and prose make their questions easier or harder together.
"""
from harness.errors import BenchError
from harness.task.registry import task
from harness.kinds import ExtractiveQA, GenerateSquad
from harness.task.spec import HubData, TaskSpec

PROMPT = ("Answer the question from the passage with a short span copied from it. If the passage does not "
          "answer it, reply: unanswerable.\n\nPassage: {context}\n\nQuestion: {question}\n\nAnswer:")
# quick: minutes on a 2-core CPU (measured: minilm span ~3 min, smollm2 span ~10 min, smollm2 generate ~12 min).
QUICK = {"train_samples": 400, "eval_samples": 100, "validation_samples": 50, "max_length": 256}


@task("squad_v2")
def squad_v2(mode: str = "span") -> TaskSpec:
    if mode not in ("span", "generate"):
        raise BenchError(f"squad_v2 --mode must be span or generate (got {mode!r})")
    span = mode == "span"
    return TaskSpec(
        data=HubData("rajpurkar/squad_v2", local="squad_v2", train="train", eval="validation", group="context",
                     cluster="title"),
        kind=(ExtractiveQA(doc_stride=64) if span else
              GenerateSquad(fields=("question", "context"), target="answers", max_new_tokens=16, stop=("\n",))),
        prompt="" if span else PROMPT,
        presets={"quick": QUICK if span else {**QUICK, "max_length": 320, "batch_size": 8, "eval_batch_size": 16},
                 "paper": {"epochs": 2, "lr": 3e-5, "weight_decay": 0.01, "max_length": 384,
                           "train_samples": 24000}},
        variant="" if span else "generate",
    )
