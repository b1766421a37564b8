"""Alpaca instruction tuning (instruction, optional input -> response), Alpaca prompt style.

Data: tatsu-lab/alpaca (52k rows, train only; the local copy is a 2k subset, so validation and
eval are carved from it, seeded). Paper: Taori et al., 2023, Stanford Alpaca. `--max-response-chars
N` keeps rows whose response is shorter than N characters (the seed used 512). Metrics: ROUGE,
BLEU, METEOR against the reference; held-out perplexity of the responses is the training loss on
validation; stored generations can be judged later (LLM judge).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness.errors import BenchError
from harness.task.registry import task
from harness.kinds import Generate
from harness.task.spec import HubData, TaskSpec

if TYPE_CHECKING:
    import pandas as pd

# The two Alpaca templates, merged: an empty input drops its section (Taori et al.'s repository).
PROMPT = ("Below is an instruction that describes a task{context}. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n{instruction}{input_section}\n\n### Response:")


@task("alpaca")
def alpaca(max_response_chars: int | None = None) -> TaskSpec:
    if max_response_chars is not None and max_response_chars < 1:
        raise BenchError(f"--max-response-chars must be positive (got {max_response_chars})")

    def short_responses(rows: pd.DataFrame) -> pd.DataFrame:
        if max_response_chars is None or "output" not in rows.columns:
            return rows
        return rows[rows["output"].astype(str).str.len() < max_response_chars]

    return TaskSpec(
        data=HubData("tatsu-lab/alpaca", local="alpaca", train="train", eval="train"),
        kind=Generate(fields=("instruction", "input"), target="output", max_new_tokens=128),
        prompt=PROMPT,
        formatter=render_alpaca,
        prepare=short_responses,
        presets={"quick": {"train_samples": 160, "eval_samples": 40, "validation_samples": 20, "max_length": 320,
                           "batch_size": 8, "eval_batch_size": 16, "evals_per_epoch": 2, "schedule": "cosine"},
                 "paper": {"epochs": 3, "lr": 2e-5, "schedule": "cosine", "warmup_ratio": 0.03}},
        variant=f"max{max_response_chars}chars" if max_response_chars else "",
    )


def render_alpaca(texts: tuple[str, ...]) -> str:
    instruction, given = texts
    if given.strip():
        return PROMPT.format(context=", paired with an input that provides further context",
                             instruction=instruction, input_section=f"\n\n### Input:\n{given}")
    return PROMPT.format(context="", instruction=instruction, input_section="")
