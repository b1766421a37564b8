"""`bench power TASK --delta D [--from RUN]`: how many eval examples a paired comparison needs to
detect a difference D at 80% power, two-sided alpha 0.05.

From a stored run it uses what that run observed (the share of examples the baseline and the
fine-tuned model disagreed on, or the SD of the per-example differences); without one, the worst
case (discordance 0.5, SD 0.5), which over-asks rather than under-asks.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

from harness.compare.power import WORST_DISCORDANCE, WORST_SD, required_n_accuracy, required_n_mean
from harness.errors import BenchError
from harness.task.registry import get_task


NAME = "power"


def add_parser(commands: Any) -> None:
    power = commands.add_parser(NAME, help="how many eval examples a paired comparison needs to detect a delta",
                                description="80% power, two-sided alpha 0.05; from a stored run's observed "
                                "discordance (accuracy) or SD of per-example differences, else the worst case. "
                                "Example: bench power sst2 --delta 0.02 --from RUN_ID")
    power.add_argument("task", help="task name (see `bench list`)")
    power.add_argument("--delta", required=True, help="the difference to detect, on the metric's scale (0.02 = 2 points "
                                                     "of accuracy)")
    power.add_argument("--from", dest="run", metavar="RUN", help="a stored run whose baseline vs fine-tuned "
                                                                 "disagreement to plan from")
    power.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")


def run(args: argparse.Namespace) -> int:
    return power_command(args)


def power_command(args: argparse.Namespace) -> int:
    try:
        delta = float(args.delta)
    except ValueError:
        delta = math.nan
    if not math.isfinite(delta) or delta <= 0:
        raise BenchError(f"--delta {args.delta}: give the difference to detect as a positive number, e.g. --delta 0.02")
    spec = get_task(args.task)
    observed = observed_from(args.results, args.run, spec.key) if args.run else None
    classification = spec.kind.discrete if observed is None else observed["metric"] == "accuracy"
    if classification:
        psi = observed["discordance"] if observed else WORST_DISCORDANCE
        if delta >= psi:
            raise BenchError(f"--delta {delta:g} is not below the discordance {psi:.3g}: accuracy cannot differ by more "
                             "than the share of examples the two systems disagree on")
        n = required_n_accuracy(delta, psi)
        basis = f"McNemar, normal approximation (Connor 1987), discordance {psi:.3g}"
        metric = "accuracy"
    else:
        sd = observed["sd"] if observed else WORST_SD
        if not sd > 0:
            raise BenchError(f"run {args.run}: the per-example differences have SD 0; nothing to plan from")
        n = required_n_mean(delta, sd)
        basis = f"paired t, SD of the per-example differences {sd:.3g}"
        metric = observed["metric"] if observed else "the headline metric"
    source = (f"observed in {args.run} (n {observed['n']}, {observed['stages']})" if observed else
              "worst case: no run given (--from RUN uses what a stored run observed)")
    print(f"{spec.key}: {n} eval examples detect a difference of {delta:g} in {metric} at 80% power, α 0.05 "
          f"(two-sided)\n"
          f"  test: {basis}, {source}")
    return 0


def observed_from(results: str | None, run_id: str, task: str) -> dict[str, Any]:
    """What a stored run's first baseline and its fine-tuned evaluation observed on paired examples."""
    import numpy as np  # lazy, with the store: `bench --help` imports this module

    # lazy: keeps numpy, sqlite3 out of `bench --help`
    from harness.compare.paired import PER_EXAMPLE
    from harness.metrics.classification import correct_mask
    from harness.store import Store

    store = Store.existing(results)
    try:
        config = store.run_config(run_id)
        if config is None:
            raise BenchError(f"run {run_id!r} is not in the store at {store.root}")
        if config["task"] != task:
            raise BenchError(f"run {run_id} is task {config['task']}, not {task}")
        stages = store.stages_of(run_id)
        baseline = next((stage for stage in stages if stage.startswith("baseline:")), None)
        if baseline is None or "finetuned" not in stages:
            raise BenchError(f"run {run_id} has no complete baseline and fine-tuned evaluation to plan from")
        before, after = store.predictions(run_id, baseline), store.predictions(run_id, "finetuned")
        if not before or len(before) != len(after):
            raise BenchError(f"run {run_id}: no paired predictions stored for {baseline} and finetuned")
        headline = store.stage(run_id, "finetuned").metrics.get("headline", "accuracy")
    finally:
        store.close()
    observed: dict[str, Any] = {"n": len(before), "stages": f"{baseline} vs finetuned", "metric": headline}
    if headline == "accuracy":
        gold = [p.gold for p in before]
        x = np.array(correct_mask(gold, [p.label for p in before]))
        y = np.array(correct_mask(gold, [p.label for p in after]))
        observed["discordance"] = max(int(np.sum(x != y)), 1) / len(before)
    else:
        key = PER_EXAMPLE.get(headline, headline)
        observed["metric"] = key
        d = np.array([(a.values or {}).get(key, 0.0) - (b.values or {}).get(key, 0.0) for b, a in zip(before, after)])
        observed["sd"] = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return observed
