"""`bench compare A B`: two stored evaluations of one task, paired on the examples both scored.

A and B are stages in the store (a run's fine-tuned stage, one of its baselines, a `bench eval`
record), or pairs chosen by `--task T --by method|model`. Each pair gets both scores with CIs, the
paired delta (B − A) with its CI and p-value (exact McNemar for accuracy, paired bootstrap for other
metrics), the p-value adjusted over the family of pairs, the smallest delta the pair could detect,
and with `--margin M` a two-one-sided-tests verdict. It only reads the store.
"""
from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

from harness.errors import BenchError

# Imports inside functions are the numpy (compare.*, metrics) and sqlite3 (store, report.leaderboard)
# modules: `bench --help` imports this module and must stay instant.

FORMATS = ("terminal", "md", "csv")
BY = ("method", "model")
# Settings that go with the compared one: a method's default learning rate, a model's objective.
TIED = {"method": {"method", "lr", "objective"}, "model": {"model", "objective", "chat_template"}}


@dataclass(frozen=True)
class Side:
    """One stored stage: what the table calls it, where it is, and what it scored."""

    name: str
    run_id: str
    stage: str
    task: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    predictions: tuple[Any, ...]


@dataclass(frozen=True)
class PairResult:
    a: str
    b: str
    task: str
    metric: str  # what is compared per item: accuracy, rougeL, nll (perplexity's per-item value), ...
    n: int
    n_a: int
    n_b: int
    score_a: float
    ci_a: tuple[float, float]
    score_b: float
    ci_b: tuple[float, float]
    delta: float
    delta_ci: tuple[float, float]
    test: str  # "McNemar b=3 c=9" or "paired bootstrap"
    p_value: float
    mde: float
    mde_basis: str  # what the MDE assumed: the discordance or the SD of the differences
    tost_p: float = math.nan
    p_adjusted: float = math.nan
    verdict: str = ""
    gold_probability: str = ""  # the secondary test on the probability of the gold label, in words
    naive_delta_ci: tuple[float, float] = (math.nan, math.nan)  # the CI if items were independent
    clusters: int = 0  # clusters behind the CIs and test (0: not clustered)
    clustering: str = ""  # how the errors treat clustered items, in words ("" when the task declares none)


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
    from harness.compare.stats import ADJUSTMENTS
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


def paired_items(a: Side, b: Side) -> tuple[list[Any], list[Any]]:
    """The predictions of the examples both sides scored, in A's order; the same task and the same
    gold label per example, or an error."""
    if a.task != b.task:
        raise BenchError(f"{a.name} is task {a.task} and {b.name} is task {b.task}: only evaluations of one task "
                         "can be paired")
    by_id = {p.example_id: p for p in b.predictions}
    left = [p for p in a.predictions if p.example_id in by_id]
    right = [by_id[p.example_id] for p in left]
    if not left:
        raise BenchError(f"{a.name} and {b.name} share no evaluated examples (different --eval-samples or --seed?); "
                         "evaluate both on the same examples")
    wrong = [x.example_id for x, y in zip(left, right) if x.gold != y.gold]
    if wrong:
        raise BenchError(f"{a.name} and {b.name} disagree on the gold label of {len(wrong)} shared examples (e.g. "
                         f"{wrong[0]}): they were scored against different labels (another --labels?)")
    return left, right


def compare_pair(a: Side, b: Side, margin: float | None) -> PairResult:
    from harness.compare.clustering import clustered_ci, declared_column, paired_delta, stored_keys
    from harness.compare.paired import PER_EXAMPLE
    from harness.compare.equivalence import tost_paired
    from harness.compare.power import mde_accuracy, mde_mean, observed_discordance
    from harness.compare.stats import BOOTSTRAP_RESAMPLES, bootstrap_ci, mcnemar_exact, paired_bootstrap, wilson_interval

    left, right = paired_items(a, b)
    headline = a.metrics.get("headline", "accuracy")
    if headline != b.metrics.get("headline", "accuracy"):
        raise BenchError(f"{a.name} is scored by {headline} and {b.name} by {b.metrics.get('headline')}")
    n, seed = len(left), int(a.config.get("seed", 0))
    keys, column = stored_keys(left, right), declared_column(a.config)
    common = dict(a=a.name, b=b.name, task=a.task, n=n, n_a=len(a.predictions), n_b=len(b.predictions))
    if headline == "accuracy":
        from harness.metrics.classification import correct_mask

        gold = [p.gold for p in left]
        x = [float(v) for v in correct_mask(gold, [p.label for p in left])]
        y = [float(v) for v in correct_mask(gold, [p.label for p in right])]
        test = mcnemar_exact([v > 0 for v in x], [v > 0 for v in y])
        boot = paired_bootstrap(x, y, resamples=BOOTSTRAP_RESAMPLES, seed=seed)
        # clustered: the CR1 test of the paired differences replaces McNemar, which assumes independent items
        delta = paired_delta(x, y, keys, column, boot, naive_p=test.p_value)
        psi = observed_discordance(test.b, test.c, n)
        result = PairResult(metric="accuracy", score_a=sum(x) / n, ci_a=wilson_interval(int(sum(x)), n),
                            score_b=sum(y) / n, ci_b=wilson_interval(int(sum(y)), n), delta=delta.delta,
                            delta_ci=delta.ci, test=("CR1 clustered, " if delta.clustered else "")
                            + f"McNemar b={test.b} c={test.c}",
                            p_value=delta.p_value, mde=mde_accuracy(n, psi) if n > 1 else math.nan,
                            mde_basis=f"discordance {psi:.3f}", gold_probability=gold_probability_test(left, right, seed),
                            **common)
    else:
        key = PER_EXAMPLE.get(headline, headline)
        x = [float((p.values or {}).get(key, 0.0)) for p in left]
        y = [float((p.values or {}).get(key, 0.0)) for p in right]
        boot = paired_bootstrap(x, y, resamples=BOOTSTRAP_RESAMPLES, seed=seed)
        delta = paired_delta(x, y, keys, column, boot, seed=seed)
        sd = _sd([v - u for u, v in zip(x, y)])
        result = PairResult(metric=key, score_a=sum(x) / n, ci_a=bootstrap_ci(x, resamples=BOOTSTRAP_RESAMPLES,
                                                                              seed=seed),
                            score_b=sum(y) / n, ci_b=bootstrap_ci(y, resamples=BOOTSTRAP_RESAMPLES, seed=seed),
                            delta=delta.delta, delta_ci=delta.ci,
                            test="CR1 clustered" if delta.clustered else "paired bootstrap",
                            p_value=delta.p_value, mde=mde_mean(n, sd) if n > 1 else math.nan,
                            mde_basis=f"SD of the differences {sd:.3g}", **common)
    result = replace(result, naive_delta_ci=delta.naive_ci, clusters=delta.clusters, clustering=delta.note)
    if delta.clustered:  # both scores' own CIs clustered as well: each is a per-item mean
        result = replace(result, ci_a=clustered_ci(x, keys, result.score_a) or result.ci_a,
                         ci_b=clustered_ci(y, keys, result.score_b) or result.ci_b)
    if margin is not None and n > 1:
        from harness.compare.equivalence import tost

        tested = tost_paired(x, y, margin)
        if delta.clustered:  # items share clusters: the CR1 SE of the differences, t with G - 1 df
            from harness.compare.stats import clustered_paired_difference

            clustered, _ = clustered_paired_difference(x, y, keys)  # type: ignore[arg-type]
            tested = tost(clustered.mean, clustered.se_cluster, margin, df=clustered.clusters - 1)
        elif headline == "accuracy" and test.b + test.c == 0:
            # No item flipped: the t test's SE is 0 and would call any n "equivalent". Count one
            # discordant item instead (SE 1/n), as the MDE does: n 30 stays inconclusive, n 2000 not.
            tested = tost(tested.delta, 1.0 / n, margin, df=n - 1)
        result = replace(result, tost_p=tested.p_value)
    return result


def gold_probability_test(left: Sequence[Any], right: Sequence[Any], seed: int) -> str:
    """A secondary, lower-variance paired test: the probability each side gave the gold label
    (prompt log-likelihoods normalised over the labels, or a head's probabilities), which moves
    on every example, where correctness moves only on the few that flip. Empty when the stored
    predictions keep no per-label scores."""
    from harness.compare.paired import format_ci, format_p
    from harness.compare.stats import BOOTSTRAP_RESAMPLES, label_probabilities, paired_bootstrap

    pairs = [(x, y) for x, y in zip(left, right) if len(x.scores) > x.gold >= 0 and len(y.scores) > y.gold >= 0
             and len(x.scores) >= 2 and len(y.scores) >= 2]
    if len(pairs) < 2:
        return ""
    before = [label_probabilities(x.scores)[x.gold] for x, _ in pairs]
    after = [label_probabilities(y.scores)[y.gold] for _, y in pairs]
    boot = paired_bootstrap(before, after, resamples=BOOTSTRAP_RESAMPLES, seed=seed)
    return (f"gold-label probability (secondary paired test, lower variance than accuracy; n {len(pairs)}): "
            f"{sum(before) / len(pairs):.3f} → {sum(after) / len(pairs):.3f}, Δ "
            f"{format_ci(boot.delta, (boot.ci_low, boot.ci_high), signed=True)}, paired bootstrap p "
            f"{format_p(boot.p_value)}")


def _sd(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0


def adjusted(results: Sequence[PairResult], method: str, margin: float | None) -> list[PairResult]:
    """Each pair's p-value adjusted over the family (all pairs of this command), and the verdict
    read from the adjusted difference p-value."""
    from dataclasses import replace

    from harness.compare.paired import format_p
    from harness.compare.equivalence import verdict
    from harness.compare.stats import adjust_p

    adjusted_p = adjust_p([r.p_value for r in results], method)
    tost_p = adjust_p([r.tost_p for r in results], method)
    out = []
    for result, p, t in zip(results, adjusted_p, tost_p):
        words = verdict(t, p, margin, show=format_p) if margin is not None and not math.isnan(t) else ""
        out.append(replace(result, p_adjusted=p, tost_p=t, verdict=words))
    return out


def columns(results: Sequence[PairResult], method: str, margin: float | None) -> tuple[str, ...]:
    metric = results[0].metric if len({r.metric for r in results}) == 1 else "score"
    head = ("A", "B", "task", "n", f"A {metric} [95% CI]", f"B {metric} [95% CI]", "Δ (B − A) [95% CI]", "test", "p")
    head += (f"p adj ({method})",) if len(results) > 1 and method != "none" else ()
    return head + ((f"verdict (±{margin:g})",) if margin is not None else ())


def cells(result: PairResult, method: str, several: bool, margin: float | None) -> tuple[str, ...]:
    from harness.compare.paired import format_ci, format_p

    n = str(result.n) if result.n == result.n_a == result.n_b else f"{result.n} of {result.n_a}/{result.n_b}"
    row = (result.a, result.b, result.task, n, format_ci(result.score_a, result.ci_a),
           format_ci(result.score_b, result.ci_b), format_ci(result.delta, result.delta_ci, signed=True),
           result.test, format_p(result.p_value))
    row += (format_p(result.p_adjusted),) if several and method != "none" else ()
    return row + ((result.verdict or "—",) if margin is not None else ())


def notes(results: Sequence[PairResult], method: str, margin: float | None) -> list[str]:
    from harness.compare.stats import ADJUSTMENTS

    lines = []
    for r in results:
        prefix = f"{r.a} vs {r.b}: " if len(results) > 1 else ""
        if r.n < max(r.n_a, r.n_b):
            lines.append(f"{prefix}paired on the {r.n} examples both evaluated ({r.a} has {r.n_a}, {r.b} has {r.n_b})")
        mde = "none: too few disagreements at this n" if math.isnan(r.mde) else f"±{r.mde:.3g}"
        if r.gold_probability:
            lines.append(prefix + r.gold_probability)
        if r.clustering:
            lines.append(f"{prefix}CIs and p: {r.clustering}")
        lines.append(f"{prefix}MDE: the smallest Δ detectable at 80% power, α 0.05, given n {r.n} and the observed "
                     f"{r.mde_basis}: {mde}")
    if len(results) > 1:
        lines.append(f"p adj: {ADJUSTMENTS[method]} over a family of {len(results)} comparisons"
                     + (" (also applied to the equivalence p-values)" if margin is not None else "")
                     if method != "none" else f"p: not adjusted for the {len(results)} comparisons (--adjust none)")
    if margin is not None:
        lines.append(f"verdict: two one-sided paired t tests (TOST) against ±{margin:g} on the per-item differences; "
                     "'different' from the test in the p column; 'inconclusive': neither shown at this n")
    return lines


def render(results: Sequence[PairResult], fmt: str, method: str, margin: float | None) -> str:
    several = len(results) > 1
    head = columns(results, method, margin)
    rows = [cells(r, method, several, margin) for r in results]
    below = notes(results, method, margin)
    if fmt == "csv":
        return _csv(results, method, margin)
    if fmt == "md":
        from harness.report.formats import Table, to_markdown

        return to_markdown(Table(head, tuple(rows))) + "\n" + "".join(f"- {line}\n" for line in below)
    widths = [max(len(str(row[i])) for row in (head, *rows)) for i in range(len(head))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in (head, *rows)]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n\n" + "".join(f"{line}\n" for line in below)


def _csv(results: Sequence[PairResult], method: str, margin: float | None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["a", "b", "task", "metric", "n", "n_a", "n_b", "score_a", "ci_a_low", "ci_a_high", "score_b",
                     "ci_b_low", "ci_b_high", "delta", "delta_ci_low", "delta_ci_high", "test", "p_value",
                     "p_adjusted", "adjustment", "mde", "mde_basis", "margin", "tost_p", "verdict",
                     "delta_ci_naive_low", "delta_ci_naive_high", "clusters", "clustering"])
    for r in results:
        writer.writerow([r.a, r.b, r.task, r.metric, r.n, r.n_a, r.n_b, r.score_a, *r.ci_a, r.score_b, *r.ci_b,
                         r.delta, *r.delta_ci, r.test, r.p_value, r.p_adjusted, method if len(results) > 1 else "none",
                         r.mde, r.mde_basis, "" if margin is None else margin,
                         "" if math.isnan(r.tost_p) else r.tost_p, r.verdict, *r.naive_delta_ci, r.clusters,
                         r.clustering])
    return out.getvalue()
