"""SAMSum dialogue summarization (messenger-style chats -> one- or two-sentence summaries).

Data: knkarthick/samsum (14.7k train / 818 validation / 819 test). Paper: Gliwa et al., 2019,
"SAMSum Corpus: A Human-annotated Dialogue Dataset for Abstractive Summarization". Zero-shot =
greedy generation from the prompt; fine-tune = seq2seq (T5) or causal SFT with the prompt masked.
Metrics: ROUGE-1/2/L/Lsum (Lsum splits sentences), BLEU with n-gram precisions, METEOR.
"""
from harness.task.registry import task
from harness.kinds import Generate
from harness.task.spec import HubData, TaskSpec


@task("samsum")
def samsum() -> TaskSpec:
    return TaskSpec(
        data=HubData("knkarthick/samsum", local="samsum", train="train", validation="validation", eval="test"),
        kind=Generate(fields=("dialogue",), target="summary", max_new_tokens=60, stop=("\n\n",)),
        prompt="Summarize this dialogue in one or two sentences.\n\n{dialogue}\n\nSummary:",
        presets={"quick": {"train_samples": 200, "eval_samples": 50, "validation_samples": 20, "max_length": 384,
                           "batch_size": 8, "eval_batch_size": 16, "evals_per_epoch": 2},
                 "paper": {"epochs": 3, "lr": 2e-5, "weight_decay": 0.01}},
    )
