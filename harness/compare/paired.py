"""Before/after comparison on the same examples: paired delta, its CI, exact McNemar p-value."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

from harness.compare.clustering import clustered_ci, declared_column, paired_delta, stored_keys
from harness.compare.power import mde_accuracy, mde_mean, observed_discordance
from harness.compare.stats import BOOTSTRAP_RESAMPLES, mcnemar_exact, paired_bootstrap
from harness.errors import BenchError
from harness.metrics.classification import correct_mask
from harness.records import changed_files, parse_stage, stage_name
from harness.store import StageRecord, Store
from harness.types import Prediction


@dataclass(frozen=True)
class RunCosts:
    """What a run cost: parameters (from the fine-tune stage), wall times, throughput, memory.
    The same for every kind of comparison, so both hold one."""

    trainable_pct: float
    trainable_params: int
    base_params: int
    added_params: int
    baseline_seconds: float
    train_seconds: float
    eval_seconds: float
    tokens_per_second: float  # training tokens per second of training time (validation not in it)
    peak_memory_mb: float  # the largest of the three stages'
    validation_seconds: float = 0.0  # validation during fine-tuning (and saving its state), apart
    baseline_peak_memory_mb: float = 0.0
    finetune_peak_memory_mb: float = 0.0
    finetuned_peak_memory_mb: float = 0.0


class _FlatRow:
    def as_dict(self) -> dict[str, Any]:
        """One flat record (CSV columns): the comparison's own fields, then its costs."""
        fields = asdict(self)  # type: ignore[call-overload]
        return {**{k: v for k, v in fields.items() if k != "costs"}, **fields["costs"]}


@dataclass(frozen=True)
class Comparison(_FlatRow):
    run_id: str
    task: str
    model: str
    method: str
    baseline: str
    n: int
    failures_before: int
    failures_after: int
    accuracy_before: float
    accuracy_before_ci: tuple[float, float]
    accuracy_after: float
    accuracy_after_ci: tuple[float, float]
    delta_accuracy: float
    delta_ci: tuple[float, float]
    mcnemar_b: int
    mcnemar_c: int
    p_value: float
    f1_macro_before: float
    f1_macro_after: float
    costs: RunCosts
    settings: str = ""  # what tells this run from others of the same model x method in one table
    mde: float = math.nan  # smallest delta detectable at 80% power, alpha 0.05 (see harness.compare.power)
    mde_basis: str = ""  # what it assumed: the observed discordance
    # Clustered errors (harness.compare.clustering): the naive delta CI beside the one shown, the clusters
    # behind it (0: not clustered) and the words for the notes ("" when the task declares none).
    delta_ci_naive: tuple[float, float] = (math.nan, math.nan)
    clusters: int = 0
    clustering: str = ""

    # The headline, read the same way for every kind of comparison (sweeps, leaderboards).
    headline = "accuracy"
    delta_name = "accuracy"  # what the delta is a difference of
    lower_is_better = False

    @property
    def headline_before(self) -> float:
        return self.accuracy_before

    @property
    def headline_after(self) -> float:
        return self.accuracy_after

    @property
    def headline_delta(self) -> float:
        return self.delta_accuracy


@dataclass(frozen=True)
class TextComparison(_FlatRow):
    """Before/after of a text task: the headline metric with CIs, the paired-bootstrap delta of
    its per-example values (and p-value), and the other metrics before -> after."""

    run_id: str
    task: str
    model: str
    method: str
    baseline: str
    n: int
    failures_before: int
    failures_after: int
    metric: str
    before: float
    before_ci: tuple[float, float]
    after: float
    after_ci: tuple[float, float]
    delta_metric: str  # the per-example value resampled (nll per token for perplexity)
    delta: float
    delta_ci: tuple[float, float]
    p_value: float
    lower_is_better: bool
    others: dict[str, tuple[float, float]]
    costs: RunCosts
    settings: str = ""  # what tells this run from others of the same model x method in one table
    mde: float = math.nan  # smallest delta detectable at 80% power, alpha 0.05 (see harness.compare.power)
    mde_basis: str = ""  # what it assumed: the SD of the per-example differences
    # Clustered errors (harness.compare.clustering): the naive delta CI beside the one shown, the clusters
    # behind it (0: not clustered) and the words for the notes ("" when the task declares none).
    delta_ci_naive: tuple[float, float] = (math.nan, math.nan)
    clusters: int = 0
    clustering: str = ""

    @property
    def headline(self) -> str:
        return self.metric

    @property
    def delta_name(self) -> str:  # perplexity's delta is one of NLL per token (what is resampled)
        return self.delta_metric

    @property
    def headline_before(self) -> float:
        return self.before

    @property
    def headline_after(self) -> float:
        return self.after

    @property
    def headline_delta(self) -> float:
        return self.delta


@dataclass(frozen=True)
class LmEvalComparison(TextComparison):
    """Before/after of one lm-eval task run on the same model (the general-ability check): the
    per-document metric's mean, its paired-bootstrap delta, and, when the metric is 0/1 per
    document (acc, exact_match), the exact McNemar test on the same documents."""

    lm_eval_task: str = ""
    test: str = "bootstrap"  # "McNemar" when the per-document values are 0/1
    mcnemar_b: int = 0
    mcnemar_c: int = 0


# Secondary metrics shown next to the headline, when the stage has them.
SECONDARY = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "meteor", "exact", "f1", "HasAns_f1", "NoAns_f1",
             "best_f1", "perplexity")
PER_EXAMPLE = {"perplexity": "nll"}  # headline -> the per-example value behind it


def compare(store: Store, run_id: str, config: dict[str, Any], records: dict[str, StageRecord]
            ) -> list[Comparison | TextComparison]:
    headline = records["finetuned"].metrics.get("headline", "accuracy")
    rows: list[Comparison | TextComparison] = []
    if headline != "accuracy":
        rows += compare_text(store, run_id, config, records, headline)
    else:
        rows += compare_classification(store, run_id, config, records)
    return rows + compare_lm_eval(store, run_id, config, records)


def compare_lm_eval(store: Store, run_id: str, config: dict[str, Any], records: dict[str, StageRecord]
                    ) -> list[LmEvalComparison]:
    """One row per lm-eval task with both stages stored: base model vs fine-tuned model on the
    same documents."""
    tasks = [parsed[0] for stage in records if (parsed := parse_stage(stage)) and parsed[1] == "baseline"]
    rows = []
    for task in tasks:
        before_record, after_record = records[stage_name(task, "baseline")], records.get(stage_name(task, "finetuned"))
        if after_record is None:
            continue
        before, after = store.predictions(run_id, before_record.stage), store.predictions(run_id, after_record.stage)
        _check_paired(run_id, before_record.stage, before, after, records, after_record.stage)
        metric = before_record.metrics["headline"]
        values_before = [(p.values or {}).get(metric, math.nan) for p in before]
        values_after = [(p.values or {}).get(metric, math.nan) for p in after]
        boot = paired_bootstrap(values_before, values_after, resamples=BOOTSTRAP_RESAMPLES,
                                seed=int(config.get("seed", 0)))
        binary = all(v in (0.0, 1.0) for v in values_before + values_after)
        if binary:
            mcnemar = mcnemar_exact([v == 1.0 for v in values_before], [v == 1.0 for v in values_after])
            b, c, p_value, test = mcnemar.b, mcnemar.c, mcnemar.p_value, "McNemar"
            mde, basis = mde_of_accuracy(b, c, len(before))
        else:
            b, c, p_value, test = 0, 0, boot.p_value, "bootstrap"
            mde, basis = mde_of_metric(values_before, values_after)
        mb, ma = before_record.metrics, after_record.metrics
        rows.append(LmEvalComparison(
            run_id=run_id, task=config["task"], model=config["model"], method=config["method"],
            baseline=f"lm-eval {task}", n=len(before), failures_before=0, failures_after=0, metric=metric,
            before=_value(mb, metric), before_ci=tuple(mb[metric]["ci"]), after=_value(ma, metric),
            after_ci=tuple(ma[metric]["ci"]), delta_metric=metric, delta=boot.delta,
            delta_ci=(boot.ci_low, boot.ci_high), p_value=p_value, lower_is_better=False, others={},
            costs=replace(_costs(records, before_record), eval_seconds=round(after_record.seconds, 1)),
            mde=mde, mde_basis=basis, lm_eval_task=task, test=test,
            mcnemar_b=b, mcnemar_c=c))
    return rows


def compare_text(store: Store, run_id: str, config: dict[str, Any], records: dict[str, StageRecord],
                 headline: str) -> list[TextComparison]:
    after_record = records["finetuned"]
    after = store.predictions(run_id, "finetuned")
    key = PER_EXAMPLE.get(headline, headline)
    column = declared_column(config)
    rows = []
    for stage, before_record in records.items():
        if not stage.startswith("baseline:"):
            continue
        before = store.predictions(run_id, stage)
        _check_paired(run_id, stage, before, after, records)
        x = [(p.values or {}).get(key, 0.0) for p in before]
        y = [(p.values or {}).get(key, 0.0) for p in after]
        weights = _token_weights(after) if headline in PER_EXAMPLE else None
        seed = int(config.get("seed", 0))
        boot = paired_bootstrap(x, y, weights=weights, resamples=BOOTSTRAP_RESAMPLES, seed=seed)
        keys = stored_keys(after, before)
        delta = paired_delta(x, y, keys, column, boot, weights=weights, seed=seed)
        mb, ma = before_record.metrics, after_record.metrics
        mde, basis = mde_of_metric(x, y)
        before_ci = tuple(mb[headline].get("ci", (math.nan,) * 2))
        after_ci = tuple(ma[headline].get("ci", (math.nan,) * 2))
        if delta.clustered and weights is None:  # a per-item mean: its own CI clustered too
            before_ci = clustered_ci(x, keys, _value(mb, headline)) or before_ci
            after_ci = clustered_ci(y, keys, _value(ma, headline)) or after_ci
        others = {name: (_value(mb, name), _value(ma, name)) for name in SECONDARY
                  if name != headline and name in mb and name in ma}
        rows.append(TextComparison(
            run_id=run_id, task=config["task"], model=config["model"], method=config["method"],
            baseline=stage.split(":", 1)[1] + _shots(before_record), n=len(before),
            failures_before=mb.get("failures", 0), failures_after=ma.get("failures", 0), metric=headline,
            before=_value(mb, headline), before_ci=before_ci, after=_value(ma, headline), after_ci=after_ci,
            delta_metric=key, delta=delta.delta, delta_ci=delta.ci, p_value=delta.p_value,
            lower_is_better=headline == "perplexity", others=others, costs=_costs(records, before_record),
            mde=mde, mde_basis=basis, delta_ci_naive=delta.naive_ci, clusters=delta.clusters,
            clustering=delta.note))
    return rows


def _token_weights(predictions: Sequence[Prediction]) -> list[float] | None:
    """Tokens scored per document (the second score of a language-modelling prediction), so the
    compared NLL per token is token-weighted like the perplexity it stands for."""
    weights = [float(p.scores[1]) if len(p.scores) == 2 else 0.0 for p in predictions]
    return weights if sum(weights) > 0 else None


def _value(metrics: dict[str, Any], name: str) -> float:
    entry = metrics[name]
    return float(entry["value"] if isinstance(entry, dict) else entry)


def _costs(records: dict[str, StageRecord], before_record: StageRecord) -> RunCosts:
    tuned, after_record = records["finetune"], records["finetuned"]
    params = tuned.info["params"]
    return RunCosts(trainable_pct=params["trainable_pct"], trainable_params=params["trainable"],
                base_params=params["base"], added_params=params["added"],
                baseline_seconds=round(before_record.seconds, 1), train_seconds=tuned.info["train_seconds"],
                eval_seconds=round(after_record.seconds, 1), tokens_per_second=tuned.info["tokens_per_second"],
                peak_memory_mb=max(r.info.get("peak_memory_mb", 0.0) for r in records.values()),
                validation_seconds=tuned.info.get("validation_seconds", 0.0),  # runs stored before: not measured
                baseline_peak_memory_mb=before_record.info.get("peak_memory_mb", 0.0),
                finetune_peak_memory_mb=tuned.info.get("peak_memory_mb", 0.0),
                finetuned_peak_memory_mb=after_record.info.get("peak_memory_mb", 0.0))


def compare_classification(store: Store, run_id: str, config: dict[str, Any], records: dict[str, StageRecord]
                           ) -> list[Comparison]:
    after_record = records["finetuned"]
    after = store.predictions(run_id, "finetuned")
    column = declared_column(config)
    rows = []
    for stage, before_record in records.items():
        if not stage.startswith("baseline:"):
            continue
        before = store.predictions(run_id, stage)
        _check_paired(run_id, stage, before, after, records)
        gold = [p.gold for p in before]
        right_before = correct_mask(gold, [p.label for p in before])
        right_after = correct_mask(gold, [p.label for p in after])
        test = mcnemar_exact(right_before, right_after)
        x, y = [float(v) for v in right_before], [float(v) for v in right_after]
        boot = paired_bootstrap(x, y, resamples=BOOTSTRAP_RESAMPLES, seed=int(config.get("seed", 0)))
        keys = stored_keys(after, before)
        # clustered: the CR1 test of the paired differences replaces McNemar, which assumes independent items
        delta = paired_delta(x, y, keys, column, boot, naive_p=test.p_value)
        mb, ma = before_record.metrics, after_record.metrics
        before_ci, after_ci = tuple(mb["accuracy"]["ci"]), tuple(ma["accuracy"]["ci"])
        if delta.clustered:
            before_ci = clustered_ci(x, keys, mb["accuracy"]["value"]) or before_ci
            after_ci = clustered_ci(y, keys, ma["accuracy"]["value"]) or after_ci
        mde, basis = mde_of_accuracy(test.b, test.c, len(before))
        rows.append(Comparison(
            run_id=run_id, task=config["task"], model=config["model"], method=config["method"],
            baseline=stage.split(":", 1)[1] + _shots(before_record), n=len(before),
            failures_before=mb["failures"], failures_after=ma["failures"],
            accuracy_before=mb["accuracy"]["value"], accuracy_before_ci=before_ci,
            accuracy_after=ma["accuracy"]["value"], accuracy_after_ci=after_ci,
            delta_accuracy=delta.delta, delta_ci=delta.ci,
            mcnemar_b=test.b, mcnemar_c=test.c, p_value=delta.p_value,
            f1_macro_before=mb["f1_macro"]["value"], f1_macro_after=ma["f1_macro"]["value"],
            costs=_costs(records, before_record), mde=mde, mde_basis=basis, delta_ci_naive=delta.naive_ci,
            clusters=delta.clusters, clustering=delta.note))
    return rows


def mde_of_accuracy(b: int, c: int, n: int) -> tuple[float, str]:
    """The MDE of a McNemar comparison from its observed discordance, and the words for that."""
    if n < 2:
        return math.nan, ""
    psi = observed_discordance(b, c, n)
    return mde_accuracy(n, psi), f"discordance {psi:.3f}"


def mde_of_metric(before: Sequence[float], after: Sequence[float]) -> tuple[float, str]:
    """The MDE of a paired comparison of per-example values from the SD of their differences."""
    if len(before) < 2:
        return math.nan, ""
    import numpy as np

    sd = float(np.std(np.asarray(after, dtype=float) - np.asarray(before, dtype=float), ddof=1))
    return mde_mean(len(before), sd), f"SD of the differences {sd:.3g}"


def _shots(record: StageRecord) -> str:
    shots = record.info.get("shots", 0)
    return f" {shots}-shot" if shots else (" 0-shot" if record.info.get("mode") == "prompt" else " (untrained)")


def _check_paired(run_id: str, stage: str, before: Sequence[Prediction], after: Sequence[Prediction],
                  records: dict[str, StageRecord], after_stage: str = "finetuned") -> None:
    """Before and after must be the same examples with the same gold: a stage stored before the data
    changed, paired with one made after, would compare answers to different labels (or references)
    under the same ids and report a wrong delta."""
    fix = ("re-run it from scratch with --force-new (or into a new --results DIR) so both stages are scored on "
           "the same data")
    if [p.example_id for p in before] != [p.example_id for p in after]:
        raise BenchError(f"run {run_id}: {stage} and {after_stage} predictions cover different examples; {fix}")
    differ = [(b, a) for b, a in zip(before, after) if b.gold != a.gold]
    if differ:
        b, a = differ[0]
        raise BenchError(f"run {run_id}: {stage} and {after_stage} were scored against different gold labels "
                         f"({len(differ)} of {len(before)} examples, e.g. {b.example_id!r}: {b.gold} vs {a.gold}): "
                         f"the data changed between the two stages; {fix}")
    # Text tasks store no gold per prediction: the stages' digests of the eval references must agree
    # (stages stored before digests were recorded: the data files they were made from).
    info_before, info_after = records[stage].info, records[after_stage].info
    if info_before.get("eval_gold") and info_after.get("eval_gold"):
        if info_before["eval_gold"] != info_after["eval_gold"]:
            raise BenchError(f"run {run_id}: {stage} and {after_stage} were scored against different gold labels or "
                             f"references (the eval data changed between the two stages); {fix}")
        return
    changed = changed_files(info_before.get("data_hashes") or {}, info_after.get("data_hashes") or {})
    if changed:
        raise BenchError(f"run {run_id}: {stage} and {after_stage} were made from different data ({', '.join(changed)} "
                         f"changed between the two stages); {fix}")


def format_p(p: float) -> str:
    if p == 0.0:  # only a bootstrap gives exactly 0: no resample crossed zero
        return f"<{2 / BOOTSTRAP_RESAMPLES:g}"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def format_ci(value: float, ci: Sequence[float], signed: bool = False, decimals: int = 3) -> str:
    form = f"{'+' if signed else ''}.{decimals}f"
    return f"{value:{form}} [{ci[0]:{form}}, {ci[1]:{form}}]"
