"""WikiText-2 causal language modelling: perplexity and continuation quality, before and after.

Data: Salesforce/wikitext, config wikitext-2-v1 (the tokenized version; the local copy has
validation and test only, so train is carved from test by paragraph, seeded). Each example is one
paragraph of at least 48 words (headings, blank lines and fragments dropped). Paper: Merity et al., 2016, "Pointer Sentinel Mixture
Models". Metrics: token-weighted perplexity (rolling windows with a stride), BLEU with 1-4-gram
precisions and ROUGE of greedy continuations of each paragraph's first 32 words.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness.task.registry import task
from harness.kinds import LanguageModel
from harness.task.spec import HubData, TaskSpec

if TYPE_CHECKING:
    import pandas as pd


MIN_WORDS = 48


def paragraphs(rows: pd.DataFrame) -> pd.DataFrame:
    if "text" not in rows.columns:
        return rows
    text = rows["text"].astype(str).str.strip()
    # Headings and fragments (table cells, captions) are not prose: keep paragraphs long enough to
    # hold a 32-word prompt and its continuation.
    keep = ~text.str.match(r"^=.*=$") & (text.str.split().str.len() >= MIN_WORDS)
    return rows.assign(text=text)[keep]


@task("wikitext")
def wikitext() -> TaskSpec:
    return TaskSpec(
        data=HubData("Salesforce/wikitext", config="wikitext-2-v1", local="wikitext-2-v1", train="train",
                     validation="validation", eval="test"),
        kind=LanguageModel(field="text", stride=128),
        prompt="",
        prepare=paragraphs,
        presets={"quick": {"train_samples": 150, "eval_samples": 50, "validation_samples": 30, "max_length": 256,
                           "batch_size": 8, "eval_batch_size": 8, "evals_per_epoch": 2},
                 "paper": {"epochs": 3, "lr": 5e-5, "max_length": 1024}},
    )
