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

from harness.backends.aliases import ALIASES
from harness.commands.common import add_quiet_option
from harness.errors import BenchError
from harness.judging.backend import JudgeOptions
from harness.judging.templates import PAIRWISE, single_template
from harness.progress import log
from harness.task.registry import get_judge, spec_for

Log = Callable[[str], None]
# Transitional: the judge table moved to report/judge.py; these names stay importable from here
# (read from there on first use, so `bench --help` stays light) until harness/cli.py imports them
# from report/judge.py.
MODES = ("both", "single", "pairwise")
MAX_SAMPLES = 50


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


NAME = "judge"


def add_parser(commands: Any) -> None:
    judge = commands.add_parser(NAME, help="LLM-judge a run's stored generations (baseline and fine-tuned)",
                                description="Scores stored outputs 0-100 against the reference and compares "
                                "baseline with fine-tuned in both orders. Example: bench judge alpaca --judge hf:smollm2")
    judge.add_argument("target", metavar="RUN_OR_TASK", help="a run id, or a task name (all its runs in the store)")
    judge.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")
    judge.add_argument("--data-dir", help="local datasets folder (references); env BENCH_DATA_DIR")
    add_judge_options(judge, required=True)
    add_quiet_option(judge)


def run(args: argparse.Namespace) -> int:
    return judge_command(args)


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
        # lazy: keeps sqlite3 out of `bench --help`
        from harness.judging.cache import JudgeCache

        self.settings, self.store, self.log = settings, store, log
        self.backend = get_judge(settings.spec, JudgeOptions(timeout=settings.timeout,
                                                             concurrency=settings.concurrency))
        self.cache = JudgeCache(store.root / "judge_cache.sqlite")

    def close(self) -> None:
        self.cache.close()

    def judge_run(self, run_id: str, spec: Any, examples: Sequence[Any]) -> dict[str, Any] | None:
        """Judge one run's stored outputs; None (and a log line) when it has nothing to judge."""
        # lazy: keeps numpy, sqlite3 out of `bench --help`
        from harness.judging.engine import EngineSettings, ask_all
        from harness.judging.grading import plan_queries, summarize

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
        # lazy: keeps numpy, sqlite3 out of `bench --help`
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
    def canonical(name: str) -> str:
        alias = ALIASES.get(name)
        name = alias.hub_id if alias else name
        return re.sub(r"[^a-z0-9]", "", name.rstrip("/").split("/")[-1].lower())

    return canonical(judge_model) == canonical(judged_model)


def judge_command(args: argparse.Namespace) -> int:
    """`bench judge RUN_OR_TASK`: a run id, or a task name (all its runs in the store)."""
    from harness.report.judge import print_judge_table  # sqlite3 (store): keeps `bench --help` light
    from harness.report.leaderboard import select_runs
    from harness.task.data import data_dir_from, run_splits
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

