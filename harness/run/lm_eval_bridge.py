"""lm-evaluation-harness tasks as extra stages of a run: the general-ability (forgetting) check.

`bench run ... --lm-eval TASKS` runs each task through lm-eval's own evaluator on the base model
and on the fine-tuned one (passed in memory: lm-eval's HFLM takes a loaded model), and stores
lm-eval's per-document results as the predictions of the stages `lmeval:<task>:baseline` and
`lmeval:<task>:finetuned` (example id = lm-eval's doc id; the per-document metric as the value).
Each stage is complete or absent like any other, so a re-run resumes. The before/after rows are
made from those predictions by harness.compare.paired (McNemar and paired bootstrap on the same items).

lm-eval is optional (`pip install -e .[lmeval]`) and imported only here, only when asked for.
"""
from __future__ import annotations

import difflib
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from harness.backends.checkpoint import load_checkpoint
from harness.backends.models import load_lm, load_tokenizer
from harness.backends.precision import device
from harness.errors import BenchError
from harness.faults import reached
from harness.records import stage_name
from harness.run.memory import PeakMemory
from harness.types import Prediction

if TYPE_CHECKING:
    from harness.options import RunConfig
    from harness.run.runner import PlannedRun
    from harness.store import StageRecord, Store

Log = Callable[[str], None]
# A task name becomes part of a stage name and a folder name in the run: no separators, no '..'.
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


def _lm_eval() -> Any:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise BenchError("--lm-eval needs lm-evaluation-harness: pip install -e .[lmeval] "
                         "(or pip install 'lm-eval>=0.4.13')") from None
    return lm_eval


def _quiet() -> None:
    """lm-eval logs every request batch and task default at INFO; bench's own lines are the log."""
    import logging

    for name in ("lm_eval", "lm-eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)


def task_manager(names: Sequence[str], include: str | None) -> Any:
    """lm-eval's TaskManager that knows `names`. Indexing lm-eval's ~15k built-in tasks takes
    20 s on a small CPU, so a folder that holds every named task is indexed alone."""
    _lm_eval()
    _quiet()
    from lm_eval.tasks import TaskManager

    if include is not None:
        local = TaskManager(include_path=include, include_defaults=False)
        if all(name in local.all_tasks for name in names):
            return local
        return TaskManager(include_path=include)
    return TaskManager()


def check_lm_eval(planned: Sequence[PlannedRun]) -> None:
    """Everything --lm-eval needs, before any stage: models with an LM head fine-tuned as LMs
    (the fine-tuned model is what lm-eval scores), an existing include folder, and task names
    lm-eval knows and can load (their data read now, so an offline hub task fails here)."""
    config = planned[0].config
    for item in planned:
        if not item.ref.can_prompt:
            raise BenchError(f"--lm-eval scores a language model; {item.ref.name} is an encoder without an LM head: "
                             "drop --lm-eval for it")
        if item.config.objective != "lm":
            raise BenchError(f"--lm-eval scores the fine-tuned language model, and --objective "
                             f"{item.config.objective} trains a classification head instead: use --objective lm")
    names = list(config.lm_eval or ())
    for name in names:
        if not TASK_NAME.match(name):
            raise BenchError(f"--lm-eval {name!r}: not an lm-eval task name (letters, digits, '_', '.', '-')")
    include = config.lm_eval_include
    if include is not None and not Path(include).is_dir():
        raise BenchError(f"--lm-eval-include {include}: no such folder; give the folder holding the lm-eval "
                         "YAML task files")
    manager = task_manager(names, include)
    known = list(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            where = f" (nor in --lm-eval-include {include})" if include else "; a local YAML task needs --lm-eval-include DIR"
            raise BenchError(f"--lm-eval {name}: lm-eval has no such task{where}{hint}")
        load_task(name, manager)


def load_task(name: str, manager: Any) -> dict[str, Any]:
    """lm-eval's task object(s) for `name`, its data loaded; a failure is one error line."""
    from lm_eval.tasks import get_task_dict

    try:
        return get_task_dict([name], manager)
    except Exception as exc:  # lm-eval and datasets raise anything (ValueError, FileNotFoundError, hub errors)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"--lm-eval {name}: lm-eval cannot load this task ({type(exc).__name__}: {first}); "
                         "offline, only tasks over local files load (set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "
                         "and pass --lm-eval-include DIR)") from None


def lm_eval_stages(store: Store, planned: PlannedRun, log: Log, trained: list[Any]) -> dict[str, StageRecord]:
    """The lm-eval stages of one run: every task on the base model, then on the fine-tuned one
    (the in-memory model when this process trained it, else the stored checkpoint)."""
    config, run_id = planned.config, planned.run_id
    names = list(config.lm_eval or ())
    records: dict[str, StageRecord] = {}
    manager: list[Any] = []  # built on first need: a run whose stages are all stored indexes nothing

    def run_all(which: str, model_and_tokenizer: Callable[[], tuple[Any, Any]]) -> None:
        loaded: list[tuple[Any, Any]] = []
        for name in names:
            def work(name: str = name) -> tuple[list[Prediction], dict[str, Any], dict[str, Any]]:
                if not manager:
                    manager.append(task_manager(names, config.lm_eval_include))
                if not loaded:
                    loaded.append(model_and_tokenizer())
                return evaluate_task(name, *loaded[0], config, manager[0])
            records[stage_name(name, which)] = _stage(store, planned, stage_name(name, which), work, log)

    run_all("baseline", lambda: (load_lm(planned.ref).to(device()), load_tokenizer(planned.ref)))

    def finetuned() -> tuple[Any, Any]:
        if trained:
            return trained[0]
        model, tokenizer, _ = load_checkpoint(store.run_dir(run_id) / "checkpoint",
                                              trust_remote_code=planned.ref.trust_remote_code)
        return model.to(device()), tokenizer

    run_all("finetuned", finetuned)
    return records


def _stage(store: Store, planned: PlannedRun, stage: str, work: Callable[[], Any], log: Log) -> StageRecord:
    """Run and store one lm-eval stage unless the store has it (as the pipeline's stages do; the
    predictions are lm-eval's documents, not the bench task's examples, so they are not rescored)."""
    # lazy: run.runner imports this module at its top (a cycle); and keeps numpy, pandas, sqlite3 out
    from harness.run.runner import package_versions

    done = store.stage(planned.run_id, stage)
    if done is not None:
        log(f"  {stage}: complete in the store, skipped")
        return done
    log(f"  {stage} ...")
    reached(f"{stage.replace(':', '-')}-started", 1)
    started = time.perf_counter()
    with PeakMemory() as peak:
        predictions, metrics, info = work()
    seconds = time.perf_counter() - started
    name = metrics["headline"]
    log(f"  {stage}: {name} {metrics[name]['value']:.4f}  ({seconds:.1f} s, {len(predictions)} documents)")
    info = {**info, "peak_memory_mb": peak.mb, "versions": {**package_versions(), "lm_eval": _version()}}
    return store.complete_stage(planned.run_id, stage, config=planned.config.to_dict(), seconds=seconds,
                                metrics=metrics, info=info, predictions=predictions)


def _version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def evaluate_task(name: str, model: Any, tokenizer: Any, config: RunConfig, manager: Any
                  ) -> tuple[list[Prediction], dict[str, Any], dict[str, Any]]:
    """lm-eval's simple_evaluate of one task on a loaded model: per-document predictions, the
    per-document metric's mean with its CI, and lm-eval's own aggregate results."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    _quiet()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.eval_batch_size, device=str(device()))
    results = simple_evaluate(model=lm, tasks=[name], task_manager=manager, limit=config.lm_eval_limit,
                              log_samples=True, bootstrap_iters=0)
    samples: dict[str, list[dict[str, Any]]] = results["samples"]
    leaves = sorted(samples)
    predictions: list[Prediction] = []
    metric = ""
    for leaf in leaves:
        leaf_metric = _headline_metric(results["configs"][leaf], samples[leaf], name)
        if metric and leaf_metric != metric:
            raise BenchError(f"--lm-eval {name}: its subtasks score different metrics ({metric}, {leaf_metric}), "
                             "so their documents do not pool into one before/after row; name the subtasks instead")
        metric = leaf_metric
        prefix = f"{leaf}/" if len(leaves) > 1 else ""
        predictions += [_prediction(prefix, sample, metric) for sample in sorted(samples[leaf],
                                                                                  key=lambda s: s["doc_id"])]
    if not predictions:
        raise BenchError(f"--lm-eval {name}: lm-eval returned no documents; check the task's test split")
    values = [p.values[metric] for p in predictions if p.values]
    metrics = {"headline": metric, metric: _score(values), "lm_eval_task": name,
               "lm_eval": {leaf: _plain(results["results"].get(leaf, {})) for leaf in leaves}}
    info = {"examples": len(predictions), "limit": config.lm_eval_limit, "subtasks": leaves,
            "n_shot": _plain(results.get("n-shot", {})),
            "task_configs": {leaf: _plain(results["configs"][leaf]) for leaf in leaves}}
    return predictions, metrics, info


def _headline_metric(task_config: dict[str, Any], samples: Sequence[dict[str, Any]], name: str) -> str:
    """The task's first metric that every document has a number for (acc, exact_match, ...)."""
    listed = [entry["metric"] for entry in task_config.get("metric_list", ()) if isinstance(entry.get("metric"), str)]
    for metric in listed:
        if all(_number(sample.get(metric)) is not None for sample in samples):
            return metric
    raise BenchError(f"--lm-eval {name}: none of its metrics ({', '.join(listed) or 'none listed'}) has one number "
                     "per document (corpus-level metrics such as perplexity do not pair per item); use a task "
                     "scored per document, e.g. by acc or exact_match")


def _prediction(prefix: str, sample: dict[str, Any], metric: str) -> Prediction:
    """One lm-eval document as a bench prediction: a multiple-choice document keeps its choices'
    log-likelihoods and the argmax as its label; a generated answer keeps its text."""
    values = {key: number for key in sample.get("metrics", (metric,))
              if (number := _number(sample.get(key))) is not None}
    values[metric] = float(sample[metric])
    target = sample.get("target")
    gold = int(target) if isinstance(target, int) and not isinstance(target, bool) else -1
    responses = sample.get("filtered_resps") or []
    doc_id = f"{prefix}{sample['doc_id']}"
    if responses and all(isinstance(r, (list, tuple)) and r and _number(r[0]) is not None for r in responses):
        scores = tuple(float(r[0]) for r in responses)
        finite = all(math.isfinite(s) for s in scores)
        label = max(range(len(scores)), key=lambda k: scores[k]) if finite else None
        return Prediction(doc_id, gold, label, scores, values=values)
    output = responses[0] if responses and isinstance(responses[0], str) else str(responses[:1])
    return Prediction(doc_id, gold, None, (), output=output, values=values)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def _score(values: Sequence[float]) -> dict[str, Any]:
    """The mean per-document value with a 95% CI: Wilson for 0/1 values, else a percentile bootstrap."""
    # lazy: keeps numpy out of `bench --help`
    from harness.compare.stats import bootstrap_ci, wilson_interval

    mean = sum(values) / len(values)
    if all(v in (0.0, 1.0) for v in values):
        ci = wilson_interval(int(sum(values)), len(values))
    else:
        ci = bootstrap_ci(values, resamples=2000, seed=0)
    return {"value": mean, "ci": [float(ci[0]), float(ci[1])], "n": len(values)}


def _plain(value: Any) -> Any:
    """lm-eval's results as JSON-safe values (its configs hold functions and custom objects)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)
