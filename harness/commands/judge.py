"""`bench judge RUN_OR_TASK --judge SPEC` and `bench run ... --judge SPEC`: judge a run's stored
generations (baseline and fine-tuned), store the summary with the run, print the judge table."""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from harness.errors import BenchError

Log = Callable[[str], None]
MODES = ("both", "single", "pairwise")
MAX_SAMPLES = 50
# Said instead of a zero-width confidence interval, which would look certain while it measures nothing.
NO_DECISIVE = "no decisive comparisons"
ALIKE = "every item alike: no CI"


@dataclass(frozen=True)
class JudgeSettings:
    spec: str
    samples: int = 1
    mode: str = "both"
    template_path: str | None = None
    concurrency: int = 4
    timeout: float = 60.0
    parse_retries: int = 2
    price: tuple[float, float] | None = None  # USD per million input, output tokens


def add_judge_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--judge", required=required, metavar="SPEC",
                        help="gemini:MODEL | openai:URL#MODEL | hf:MODEL_ID_OR_ALIAS (keys from the environment: "
                             "gemini: GEMINI_API_KEY or GOOGLE_API_KEY; openai: BENCH_JUDGE_API_KEY or OPENAI_API_KEY)")
    parser.add_argument("--judge-samples", type=int, default=1,
                        help="ask each judgment N times (sampled); report mean, sd and per-item spread")
    parser.add_argument("--judge-mode", default="both", choices=MODES,
                        help="single (0-100 vs reference), pairwise (baseline vs fine-tuned, both orders) or both")
    parser.add_argument("--judge-template", help="single-answer template file with {prompt} {reference} {response}")
    parser.add_argument("--judge-concurrency", type=int, default=4, help="HTTP requests in flight (default 4)")
    parser.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per judge request (default 60)")
    parser.add_argument("--judge-price", metavar="IN,OUT",
                        help="USD per million input and output tokens, to show the judging cost (e.g. 0.30,2.50)")


def settings_from(args: argparse.Namespace) -> JudgeSettings | None:
    """Validated judge settings, or None when no --judge was given."""
    if not getattr(args, "judge", None):
        return None
    if not 1 <= args.judge_samples <= MAX_SAMPLES:
        raise BenchError(f"--judge-samples must be between 1 and {MAX_SAMPLES} (got {args.judge_samples})")
    if args.judge_concurrency < 1:
        raise BenchError(f"--judge-concurrency must be at least 1 (got {args.judge_concurrency})")
    if not args.judge_timeout > 0 or math.isinf(args.judge_timeout):
        raise BenchError(f"--judge-timeout must be a positive number of seconds (got {args.judge_timeout})")
    return JudgeSettings(args.judge, args.judge_samples, args.judge_mode, args.judge_template,
                         args.judge_concurrency, args.judge_timeout, price=_price(args.judge_price))


def _price(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or any(not math.isfinite(v) or v < 0 for v in values):
        raise BenchError(f"--judge-price {text!r}: expected IN,OUT in USD per million tokens, e.g. 0.30,2.50")
    return values[0], values[1]


class Judging:
    """One judge backend and cache, used for every run of a command."""

    def __init__(self, settings: JudgeSettings, store: Any, log: Log):
        from harness.judging.backend import JudgeOptions
        from harness.judging.cache import JudgeCache
        from harness.task.registry import get_judge

        self.settings, self.store, self.log = settings, store, log
        self.backend = get_judge(settings.spec, JudgeOptions(timeout=settings.timeout,
                                                             concurrency=settings.concurrency))
        self.cache = JudgeCache(store.root / "judge_cache.sqlite")

    def close(self) -> None:
        self.cache.close()

    def judge_run(self, run_id: str, spec: Any, examples: Sequence[Any]) -> dict[str, Any] | None:
        """Judge one run's stored outputs; None (and a log line) when it has nothing to judge."""
        from harness.judging.engine import EngineSettings, ask_all
        from harness.judging.grading import plan_queries, summarize
        from harness.judging.templates import PAIRWISE, single_template

        check_judgeable(spec)
        config = self.store.run_config(run_id) or {}
        outputs = self._outputs(run_id)
        before_stage = next((stage for stage in outputs if stage.startswith("baseline:")), None)
        after_stage = "finetuned" if "finetuned" in outputs else None
        if before_stage is None and after_stage is None:
            self.log(f"  judge: {run_id} has no stored generations yet, skipped")
            return None
        items = self._items(run_id, spec, examples, outputs.get(before_stage) if before_stage else None,
                            outputs.get(after_stage) if after_stage else None)
        single = (single_template(spec.judge_template, self.settings.template_path)
                  if self.settings.mode != "pairwise" else None)
        pairwise = PAIRWISE if self.settings.mode != "single" and before_stage and after_stage else None
        if single is None and pairwise is None:
            raise BenchError(f"--judge-mode pairwise needs baseline and fine-tuned outputs; {run_id} has only "
                             f"{before_stage or after_stage}: use --judge-mode single")
        planned = plan_queries(self.backend.id, single, pairwise, items, self.settings.samples)
        warnings = self._hygiene(config)
        started = time.perf_counter()
        answers = ask_all(self.backend, [q for _, q in planned], self.cache,
                          EngineSettings(self.settings.samples, self.settings.parse_retries,
                                         price=self.settings.price), self.log)
        failed = [a.error for a in answers if a.error]
        if failed:
            self.log(f"warning: {len(failed)} of {len(answers)} judge questions have no answer (counted as missing, "
                     f"never as 0); first reason: {failed[0]}")
        metrics, records = summarize(items, self.settings.samples, [s for s, _ in planned], answers,
                                     seed=int(config.get("seed", 0)))
        if self.settings.price:  # what these judgments cost, cached ones included
            metrics["cost_usd"] = (metrics["input_tokens"] * self.settings.price[0]
                                   + metrics["output_tokens"] * self.settings.price[1]) / 1e6
        used = [t for t in (single, pairwise) if t is not None]
        setup = "+".join(t.version for t in used) + f"|k={self.settings.samples}"
        info = {"judge": self.backend.id, "templates": {t.kind: t.version for t in used},
                "samples": self.settings.samples, "mode": self.settings.mode, "before_stage": before_stage,
                "after_stage": after_stage, "warnings": warnings, "seconds": time.perf_counter() - started,
                "parse_retries": self.settings.parse_retries}
        self.store.complete_judgment(run_id, self.backend.id, setup, metrics=metrics, info=info, items=records)
        return {"run_id": run_id, "judge": self.backend.id, "setup": setup, "metrics": metrics, "info": info,
                "config": config}

    def _outputs(self, run_id: str) -> dict[str, dict[str, str | None]]:
        """Example id -> stored output, for the first baseline stage with generations and the
        fine-tuned stage (when it has them), read once."""
        found: dict[str, dict[str, str | None]] = {}
        for stage in self.store.stages_of(run_id):
            first_baseline = stage.startswith("baseline:") and not any(s.startswith("baseline:") for s in found)
            if first_baseline or stage == "finetuned":
                by_id = {p.example_id: p.output for p in self.store.predictions(run_id, stage)}
                if any(output is not None for output in by_id.values()):
                    found[stage] = by_id
        return found

    def _items(self, run_id: str, spec: Any, examples: Sequence[Any], before: dict[str, str | None] | None,
               after: dict[str, str | None] | None) -> list[Any]:
        from harness.judging.grading import Item

        order = {e.id: k for k, e in enumerate(examples)}
        by_id = {e.id: e for e in examples}
        stored = set(before or ()) | set(after or ())
        if stored - set(by_id):
            raise BenchError(f"stored outputs of {run_id} do not match the data's eval examples: pass the "
                             "--data-dir the run used")
        items = []
        for example_id in sorted(stored, key=order.__getitem__):
            example = by_id[example_id]
            items.append(Item(example_id, task_text(spec, example.texts),
                              " | ".join(example.references) or "(no answer: the question cannot be answered)",
                              (before or {}).get(example_id), (after or {}).get(example_id)))
        return items

    def _hygiene(self, config: dict[str, Any]) -> list[str]:
        judged = str(config.get("model", ""))
        if judged and same_model(self.backend.model, judged):
            warning = (f"judge {self.backend.id} is the model being judged ({judged}): it tends to prefer its own "
                       "outputs; prefer a different judge")
            self.log(f"warning: {warning}")
            return [warning]
        return []


def check_judgeable(spec: Any) -> None:
    if not judgeable(spec):
        raise BenchError(f"judging needs generated text, and {spec.name} runs store none ({type(spec.kind).__name__} "
                         "task): judge alpaca, samsum or squad_v2-generate runs (bench run squad_v2 --mode generate)")


def judgeable(spec: Any) -> bool:
    return bool(spec.kind.judgeable)


def task_text(spec: Any, texts: Sequence[str]) -> str:
    """What the model was asked, without the prompt scaffolding: the task's fields by name."""
    fields = spec.kind.fields
    if len(fields) == 1:
        return texts[0]
    return "\n\n".join(f"{name.capitalize()}: {text}" for name, text in zip(fields, texts) if text.strip())


def same_model(judge_model: str, judged_model: str) -> bool:
    from harness.backends.models import ALIASES

    def canonical(name: str) -> str:
        alias = ALIASES.get(name)
        name = alias.hub_id if alias else name
        return re.sub(r"[^a-z0-9]", "", name.rstrip("/").split("/")[-1].lower())

    return canonical(judge_model) == canonical(judged_model)


def judge_table(records: Sequence[dict[str, Any]]) -> Any:
    from harness.compare.paired import format_p
    from harness.judging.reliability import problems, unusable_parts
    from harness.report.tables import Table

    columns = ("model", "method", "judge", "k", "n", "score before [95% CI]", "score after [95% CI]",
               "Δscore [95% CI]", "p", "item sd b/a", "win rate after [95% CI]", "W/T/L", "flip rate", "ties",
               "said A/B/tie", "scores: distinct, sd", "repeats agree", "usable", "parse fail", "missing",
               "calls (cached)", "tokens in/out", "cost $")
    rows = []
    for r in records:
        m, config = r["metrics"], r["config"]
        before, after = m.get("score_before", {}), m.get("score_after", {})
        delta, pair = m.get("score_delta"), m.get("pairwise")
        rows.append((
            str(config.get("model", r["run_id"])), str(config.get("method", "")), r["judge"], str(m["samples"]),
            str(m["n"]), _score(before), _score(after),
            _ci(delta["value"], delta["ci"], signed=True) if delta else "—", format_p(delta["p"]) if delta else "—",
            f"{_num(before.get('item_sd'))}/{_num(after.get('item_sd'))}" if m["samples"] > 1 else "—",
            _win_rate(pair), f"{pair['wins']}/{pair['ties']}/{pair['losses']}" if pair else "—",
            f"{pair['flip_rate']:.0%}" if pair and not math.isnan(pair["flip_rate"]) else "—",
            *_reliability_cells(m), f"NO: {unusable_parts(found)}" if (found := problems(m)) else "yes",
            f"{m['parse_failure_rate']:.0%}" if not math.isnan(m["parse_failure_rate"]) else "—",
            str(m["missing_answers"]), f"{m['calls']} ({m['cache_hits']})",
            f"{m['input_tokens']}/{m['output_tokens']}" if m["input_tokens"] else "—",
            f"{m['cost_usd']:.4f}" if "cost_usd" in m else "—"))
    return Table(columns, tuple(rows))


def _win_rate(pair: dict[str, Any] | None) -> str:
    if not pair or not pair["n_judged"]:
        return "—"
    if not pair["wins"] and not pair["losses"]:  # all ties: 0.5 with a zero-width CI would look certain
        return NO_DECISIVE
    return _ci(pair["win_rate"], pair["ci"], digits=3)


def _reliability_cells(m: dict[str, Any]) -> tuple[str, str, str, str]:
    """ties, said A/B/tie, scores: distinct, sd, repeats agree (— where not measured: judgments
    stored before these numbers existed, or a mode without that kind of answer)."""
    from harness.judging.reliability import tie_share

    measured = m.get("reliability") or {}
    ties = tie_share(m.get("pairwise"))
    said = measured.get("said")
    return (f"{ties:.0%}" if ties is not None else "—",
            "/".join(f"{said[v]:.0%}" for v in ("A", "B", "tie")) if said else "—",
            f"{measured['distinct_scores']}, sd {measured['score_sd']:.1f}" if "distinct_scores" in measured else "—",
            f"{measured['repeat_agreement']:.0%}" if "repeat_agreement" in measured else "—")


def judge_csv(records: Sequence[dict[str, Any]]) -> str:
    """The judge table as plain numbers, one row per judgment (a CI becomes `_low`/`_high` columns,
    as in comparisons.csv), for `bench export`."""
    import csv
    import io

    from harness.judging.reliability import problems, tie_share

    def summary(prefix: str, part: dict[str, Any] | None, fields: Sequence[str]) -> dict[str, Any]:
        part = part or {}
        row = {f"{prefix}_{f}" if f != "value" else prefix: part.get(f) for f in fields}
        low, high = part.get("ci") or (None, None)
        return {**row, f"{prefix}_low": low, f"{prefix}_high": high}

    rows = []
    for r in records:
        m, config = r["metrics"], r["config"]
        pair = m.get("pairwise") or {}
        measured = m.get("reliability") or {}
        said, unusable = measured.get("said") or {}, problems(m)
        rows.append({
            "run_id": r["run_id"], "task": config.get("task"), "model": config.get("model"),
            "method": config.get("method"), "judge": r["judge"], "setup": r["setup"], "samples": m["samples"],
            "n": m["n"], **summary("score_before", m.get("score_before"), ("value", "n_scored", "item_sd")),
            **summary("score_after", m.get("score_after"), ("value", "n_scored", "item_sd")),
            **summary("score_delta", m.get("score_delta"), ("value", "p")),
            **summary("win_rate", {**pair, "value": pair.get("win_rate")}, ("value",)),
            **{k: pair.get(k) for k in ("wins", "ties", "losses", "flip_rate")}, "tie_share": tie_share(pair),
            **{f"said_{v.lower()}": said.get(v) for v in ("A", "B", "tie")},
            **{k: measured.get(k) for k in ("distinct_scores", "score_min", "score_max", "score_sd",
                                            "repeat_agreement")},
            "usable": "no" if unusable else "yes", "unusable_reason": "; ".join(p.reason for p in unusable),
            **{k: m.get(k) for k in ("parse_failure_rate", "missing_answers", "calls", "cache_hits",
                                     "input_tokens", "output_tokens", "cost_usd")}})
        _drop_flat_cis(rows[-1])
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: _plain(v) for k, v in row.items()} for row in rows])
    return out.getvalue()


def _drop_flat_cis(row: dict[str, Any]) -> None:
    """Empties a zero-width CI (every item alike, all ties) and says why in `ci_note`: [0.5, 0.5]
    from a judge that only ever tied would read as a certain result."""
    notes = []
    for name in ("score_before", "score_after", "score_delta", "win_rate"):
        low, high = row[f"{name}_low"], row[f"{name}_high"]
        if low is None or high is None or math.isnan(low) or low != high:
            continue
        row[f"{name}_low"] = row[f"{name}_high"] = None
        no_decisive = name == "win_rate" and not row["wins"] and not row["losses"]
        notes.append(f"{name}: {NO_DECISIVE if no_decisive else ALIKE}")
    row["ci_note"] = "; ".join(notes)


def _plain(value: Any) -> Any:
    """comparisons.csv's numbers (6 significant digits); NaN and None as empty cells."""
    from harness.report.tables import csv_number

    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else csv_number(value)


def _score(summary: dict[str, Any]) -> str:
    if not summary or summary.get("n_scored", 0) == 0:
        return "—"
    return _ci(summary["value"], summary["ci"])


def _ci(value: float, ci: Sequence[float], signed: bool = False, digits: int = 1) -> str:
    sign = "+" if signed else ""
    if ci[0] == ci[1]:  # a zero-width interval: every item had the same value, which proves nothing
        return f"{value:{sign}.{digits}f} ({ALIKE})"
    return f"{value:{sign}.{digits}f} [{ci[0]:{sign}.{digits}f}, {ci[1]:{sign}.{digits}f}]"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def judge_notes(records: Sequence[dict[str, Any]]) -> list[str]:
    from harness.judging.reliability import FLIP_LIMIT, problems, unusable_parts

    # A judge that cannot judge comes first, right under the table, before anything reads its numbers.
    notes = [f"warning: UNUSABLE judgment: judge {r['judge']} on {r['run_id']} cannot judge these outputs: "
             f"{'; '.join(p.reason for p in found)}. Read its {unusable_parts(found)} above as a measure of the "
             "judge, not of the models; judge again with a stronger judge"
             for r in records if (found := problems(r["metrics"]))]
    for r in records:
        templates = ", ".join(f"{k} {v}" for k, v in r["info"]["templates"].items() if v)
        notes.append(f"{r['run_id']}: {r['info']['before_stage']} vs {r['info']['after_stage']}; templates {templates}")
        notes += [f"warning: {w}" for w in r["info"]["warnings"]]
    notes.append("score: 0-100 against the reference, mean over items (missing answers left out, counted); "
                 "win rate: fine-tuned vs baseline, ties count 1/2; a verdict that flips with the order is a tie")
    notes.append("can the judge judge: flip rate: pairs whose verdict changes when the two responses swap places; "
                 "ties: share of judged items tied; said A/B/tie: the pairwise verdicts as given; scores: distinct "
                 "values and sd over every score given; repeats agree: questions whose samples gave the same answer; "
                 f"usable: no (win rate) when the flip rate is over {FLIP_LIMIT:.0%} or every verdict names one "
                 "position, no (scores) when every response got one score")
    if any(r["metrics"].get("input_tokens") for r in records):
        notes.append("tokens in/out and cost $: every reply these judgments use, cached ones included (what the "
                     "judgments cost when first asked); calls (cached): requests sent (answers from the cache)")
    return notes


def judge_section(store: Any, run_ids: Sequence[str]) -> tuple[Any, list[str]] | None:
    """The stored judgments of these runs as one table and its notes (how to read it, warnings such
    as a judge judging itself), the same in every report format; None when none was judged."""
    records = stored_judgments(store, run_ids)
    return (judge_table(records), judge_notes(records)) if records else None


def stored_judgments(store: Any, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The judge records of these runs, as `judge_table` takes them (for `bench report`)."""
    records = []
    for run_id in dict.fromkeys(run_ids):
        config = store.run_config(run_id) or {}
        records += [{**record, "config": config} for record in store.judgments(run_id)]
    return records


def judge_markdown(table: Any, notes: Sequence[str]) -> str:
    """The judge table in markdown with its notes under it (terminal, table files, reports, export)."""
    from harness.report.tables import to_markdown

    return to_markdown(table) + "".join(f"- {note}\n" for note in notes)


def print_judge_table(records: Sequence[dict[str, Any]], store: Any, name: str) -> None:
    from harness.store import atomic_write

    def body(shown: Sequence[dict[str, Any]]) -> str:
        return judge_markdown(judge_table(shown), judge_notes(shown))

    if not records:
        return
    print("\n## LLM judge\n")
    print(body(records))
    # The file keeps every judgment stored for these runs, so judging again with another judge or
    # mode adds rows instead of replacing the table.
    stored = stored_judgments(store, [record["run_id"] for record in records])
    atomic_write(store.root / "tables" / f"{name}__judge.md", f"# {name}: LLM judge\n\n{body(stored)}")


def judge_command(args: argparse.Namespace) -> int:
    """`bench judge RUN_OR_TASK`: a run id, or a task name (all its runs in the store)."""
    from harness.task.data import data_dir_from, run_splits
    from harness.report.leaderboard import select_runs
    from harness.task.registry import spec_for
    from harness.store import Store

    settings = settings_from(args)
    assert settings is not None  # --judge is required by the parser
    data_dir = data_dir_from(args.data_dir)
    store = Store.existing(args.results)
    root = store.root
    judging = None
    try:
        if store.run_config(args.target) is not None:
            runs = [args.target]
        else:
            runs = [run["run_id"] for run in select_runs(store, args.target)]
            if not runs:
                raise BenchError(f"{args.target!r} is neither a run id nor a task with runs in {root}/bench.sqlite")
        specs = {}
        for run_id in runs:  # every run's task is checked before a judge model loads or a request goes out
            config = store.run_config(run_id) or {}
            specs[run_id] = (config, spec_for(config))
        if runs != [args.target]:  # a task name: its runs without generations (span QA) are left out
            kept = {run_id: pair for run_id, pair in specs.items() if judgeable(pair[1])}
            if kept:
                for run_id in (run_id for run_id in specs if run_id not in kept):
                    print(f"  judge: {run_id} stores no generated text, skipped", file=sys.stderr)
                specs = kept
        for _, spec in specs.values():
            check_judgeable(spec)
        from harness.progress import log

        judging = Judging(settings, store, log)
        records = []
        for run_id, (config, spec) in specs.items():
            record = judging.judge_run(run_id, spec, run_splits(spec, config, data_dir).eval)
            if record:
                records.append(record)
        if not records:
            raise BenchError(f"nothing to judge in {args.target}: no run there has its baseline and fine-tuned "
                             "generations stored yet; finish it with `bench run` first")
        print_judge_table(records, store, re.sub(r"[^A-Za-z0-9._=-]+", "-", args.target))
    finally:
        if judging is not None:
            judging.close()
        store.close()
    return 0
