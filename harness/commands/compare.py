"""`bench compare A B`: two stored evaluations of one task, paired on the examples both scored.

A and B are stages in the store (a run's fine-tuned stage, one of its baselines, a `bench eval`
record), or pairs chosen by `--task T --by method|model`. Each pair gets both scores with CIs, the
paired delta (B − A) with its CI and p-value (exact McNemar for accuracy, paired bootstrap for other
metrics), the p-value adjusted over the family of pairs, the smallest delta the pair could detect,
and with `--margin M` a two-one-sided-tests verdict. It only reads the store.
"""
from __future__ import annotations

import argparse
import itertools
import math
from typing import TYPE_CHECKING, Any

from harness.errors import BenchError

if TYPE_CHECKING:
    from harness.compare.pairwise import Side

# Imports inside functions pull numpy (compare.*, report.compare_table) or sqlite3 (store,
# report.leaderboard): `bench --help` imports this module and must stay instant.

FORMATS = ("terminal", "md", "csv")
BY = ("method", "model")
# Settings that go with the compared one: a method's default learning rate, a model's objective.
TIED = {"method": {"method", "lr", "objective"}, "model": {"model", "objective", "chat_template"}}


NAME = "compare"


def add_parser(commands: Any) -> None:
    compare = commands.add_parser(NAME, help="two stored evaluations of one task, paired on their shared "
                                  "examples: scores, delta, p, MDE, equivalence", description="A and B: RUN_ID (its "
                                  "fine-tuned stage), RUN_ID:baseline-prompt, RUN_ID:baseline-head, RUN_ID:finetuned, "
                                  "or a `bench eval` record id; or --task T --by method|model for every pair of runs "
                                  "that differ only in that. Example: bench compare RUN_A RUN_B --margin 0.02")
    compare.add_argument("a", nargs="?", metavar="A", help="first stage (the reference)")
    compare.add_argument("b", nargs="?", metavar="B", help="second stage; the delta is B - A")
    compare.add_argument("--task", help="with --by: the task whose runs are paired")
    compare.add_argument("--by", metavar="method|model", help="pair the task's runs that differ only in this")
    compare.add_argument("--margin", metavar="M", help="equivalence margin: TOST verdict equivalent within ±M, "
                         "different, or inconclusive")
    compare.add_argument("--adjust", default="holm", metavar="holm|bh|none",
                         help="p-value adjustment over several pairs (default holm)")
    compare.add_argument("--format", default="terminal", metavar="terminal|md|csv", help="default terminal")
    compare.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")


def run(args: argparse.Namespace) -> int:
    return compare_command(args)


def compare_command(args: argparse.Namespace) -> int:
    from harness.compare.pairwise import adjusted, compare_pair
    from harness.compare.stats import ADJUSTMENTS
    from harness.report.compare_table import render
    from harness.store import Store

    margin = _margin(args.margin)
    if args.adjust not in ADJUSTMENTS:
        raise BenchError(f"--adjust {args.adjust}: unknown adjustment; use holm (default), bh or none")
    if args.format not in FORMATS:
        raise BenchError(f"--format {args.format}: unknown format; use terminal (default), md or csv")
    if args.by is not None:
        if args.by not in BY:
            raise BenchError(f"--by {args.by}: use method or model")
        if not args.task or args.a or args.b:
            raise BenchError("--by needs --task TASK and no stage arguments: bench compare --task sst2 --by method")
    elif not (args.a and args.b):
        raise BenchError("bench compare needs two stages (RUN_ID, RUN_ID:baseline-prompt, RUN_ID:finetuned or an "
                         "eval record id), or --task TASK --by method|model")
    store = Store.existing(args.results)
    try:
        pairs = selection_pairs(store, args.task, args.by) if args.by else [(side(store, args.a),
                                                                           side(store, args.b))]
        results = [compare_pair(a, b, margin) for a, b in pairs]
    finally:
        store.close()
    results = adjusted(results, args.adjust, margin)
    print(render(results, args.format, args.adjust, margin), end="")
    return 0


def _margin(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise BenchError(f"--margin {text}: the equivalence margin must be a positive number, e.g. --margin 0.02 "
                         "(the largest difference you would call no difference)")
    return value


def side(store: Any, text: str) -> Side:
    """RUN_ID (its fine-tuned stage, or an eval record's evaluation), RUN_ID:STAGE with STAGE
    finetuned, baseline (the run's only baseline), baseline-prompt or baseline-head."""
    from harness.compare.pairwise import Side

    run_id, _, stage = text.partition(":")
    config = store.run_config(run_id)
    if config is None:
        raise BenchError(f"{run_id!r} is not a run in the store at {store.root}; see `bench report --format csv` "
                         "for run ids")
    stages = [name for name in store.stages_of(run_id) if name != "finetune"]
    if not stage:
        stage = "eval" if config.get("method") == "eval" else "finetuned"
    else:
        stage = stage.replace("-", ":", 1) if stage.startswith("baseline-") else stage
        if stage == "baseline":
            baselines = [name for name in stages if name.startswith("baseline:")]
            if len(baselines) == 1:
                stage = baselines[0]
    if stage not in stages:
        have = ", ".join(f"{run_id}:{name.replace(':', '-')}" for name in stages) or "none"
        raise BenchError(f"{text}: run {run_id} has no stored stage {stage!r}; stored: {have}")
    predictions = tuple(store.predictions(run_id, stage))
    if not predictions:
        raise BenchError(f"{text}: the stage has no stored predictions, so nothing can be paired; re-run it")
    record = store.stage(run_id, stage)
    name = run_id if stage in ("finetuned", "eval") else f"{run_id}:{stage.replace(':', '-')}"
    return Side(name, run_id, stage, config["task"], config, record.metrics, predictions)


def selection_pairs(store: Any, task: str, by: str) -> list[tuple[Side, Side]]:
    """Fine-tuned stages of the task's runs that differ only in `by` (and the settings that go
    with it), every two of a group once, in the store's order."""
    from harness.report.leaderboard import select_runs

    runs = [run for run in select_runs(store, task) if run["method"] != "eval"
            and "finetuned" in store.stages_of(run["run_id"])]
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        rest = {key: value for key, value in run["config"].items() if key not in TIED[by]}
        groups.setdefault(repr(sorted(rest.items())), []).append(run)
    pairs = [(side(store, a["run_id"]), side(store, b["run_id"])) for group in groups.values()
             for a, b in itertools.combinations(group, 2) if a["config"][by] != b["config"][by]]
    if not pairs:
        raise BenchError(f"no two complete runs of task {task} in the store differ only in {by}; run the same "
                         f"command with another --{by} first")
    return pairs
