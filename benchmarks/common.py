"""What the benchmark scripts share: where the data is, argument checks that fail in one line, and
the validation stand-in that makes bench's loop end on its final weights, as its peers do."""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """--data-dir: BENCH_DATA_DIR, else the shared data beside the repository, from any directory."""
    default = os.environ.get("BENCH_DATA_DIR") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data-dir", type=data_dir, default=default,
                        help=f"datasets folder (default: BENCH_DATA_DIR or {default})")


def data_dir(text: str) -> Path:
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder: pass --data-dir DIR or set BENCH_DATA_DIR")
    return path


def positive(number: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: `number` (int or float) parsed, finite and above 0."""
    def parse(text: str) -> Any:
        try:
            value = number(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be positive (got {text})")
        return value
    return parse


positive_int, positive_float = positive(int), positive(float)


def choice_list(allowed: Any) -> Callable[[str], list[str]]:
    """A comma-separated list whose every item is one of `allowed`."""
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'nothing'} not known; choose from: "
                                             f"{', '.join(allowed)}")
        return items
    return parse


def keep_final_weights() -> Callable[[Any], dict[str, float]]:
    """bench's loop restores its best-validated weights at the end; Trainer validates nothing and
    keeps the final ones. Scoring each evaluation above the last makes the final weights the best,
    so both sides end on the same step (a constant score would restore the first evaluation's)."""
    evaluations = itertools.count(1)
    return lambda model: {"f1_macro": float(next(evaluations))}


def samsum_prompts(data_dir: Path, model: str, limit: int, budget: int) -> tuple[Any, Any, Any, list[list[int]]]:
    """(task spec, model ref, tokenizer, prompt token ids) of the first `limit` samsum test dialogues
    as `bench run samsum` prompts them (the task's template and chat template, `budget` tokens at
    most): what the generation benchmarks feed both sides."""
    from harness.backends.models import load_tokenizer, resolve_model
    from harness.task.data import build_splits
    from harness.task.prompts import build_prompts, use_chat_template
    from harness.task.registry import get_task

    spec = get_task("samsum")
    splits = build_splits(spec, data_dir, train_samples=10, eval_samples=limit, validation_samples=5, seed=0)
    ref = resolve_model(model)
    tokenizer = load_tokenizer(ref)
    chat = use_chat_template(tokenizer, "auto", ref.family == "seq2seq")
    return spec, ref, tokenizer, build_prompts(spec, tokenizer, splits.eval, budget, chat=chat, strip_eos=True)


def run_main(main: Callable[[], None]) -> None:
    """bench's own errors (a bad model name, a length that cannot hold the prompt) as one line."""
    from harness.errors import BenchError

    try:
        main()
    except BenchError as exc:
        sys.exit(f"error: {exc}")
