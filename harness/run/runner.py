"""`bench run`: for each model, baseline -> fine-tune -> the same eval again -> stored -> compared.

Every stage checks the store first and is skipped when its record is complete, so re-running an
interrupted command resumes where it stopped. All inputs are validated (task, models, data,
options) before the first stage runs, so a bad command writes nothing.
"""
from __future__ import annotations

import platform
import re
import shutil
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from harness.artefacts import DamagedFile
from harness.run import stages, vllm_stages
from harness.report.model_card import write_run_card
from harness.run.checks import check_model_limits
from harness.options import RunConfig
from harness.resolve import resolve
from harness.run.lm_eval_bridge import check_lm_eval, lm_eval_stages
from harness.task.data import run_splits, split_settings
from harness.errors import BenchError
from harness.faults import reached
from harness.run.memory import PeakMemory
from harness.backends.checkpoint import check_checkpoint, checkpoint_meta, checkpoint_problem, load_checkpoint
from harness.backends.aliases import quiet_libraries
from harness.backends.models import ModelRef, config_int, resolve_model, skeleton
from harness.progress import scope
from harness.records import gold_digest
from harness.run.resume import (check_stage_data, check_stored_run, forget_training_inputs,
                            record_training_inputs)
from harness.kinds.scoring_helpers import score_stage
from harness.run.shared_baseline import KEY_FIELD, baseline_key, copied_stage, shared_source
from harness.task.spec import TaskSpec
from harness.store import StageRecord, Store
from harness.distributed import SINGLE_PROCESS, Launcher, launched_world
from harness.train.data_parallel import check_processes
from harness.train.methods import four_bit_unavailable
from harness.types import Splits, StageOutput

Log = Callable[[str], None]
StageWork = Callable[[], StageOutput]
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "numpy", "scikit-learn", "pandas")


@dataclass(frozen=True)
class PlannedRun:
    ref: ModelRef
    config: RunConfig
    baselines: tuple[str, ...]

    @property
    def run_id(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.ref.name).name or self.ref.name).strip("-.") or "model"
        return f"{self.config.task}__{slug}__{self.config.method.replace(':', '')}__{self.config.digest()}"


def plan(spec: TaskSpec, models: Sequence[str], overrides: Mapping[str, Any], preset: str) -> list[PlannedRun]:
    """Resolve every model and config up front; any problem is raised before work starts."""
    if not models:
        raise BenchError("no models given: pass --models A,B (aliases: see `bench list models`)")
    if spec.kind.uses_meteor:
        # lazy: keeps nupunkt out of `bench --help`
        from harness.metrics.text import load_wordnet

        load_wordnet()  # every stage's METEOR needs it: a missing WordNet fails here, not after the baseline
    planned = []
    for name in models:
        resolve(spec, name, overrides, preset)  # bad options fail before any model is resolved
        ref = resolve_model(name, trust_remote_code=bool(overrides.get("trust_remote_code")))
        config = resolve(spec, name, overrides, preset, can_prompt=ref.can_prompt)
        if config.method_name == "head" and config.objective == "lm":
            raise BenchError("--method head trains only a new classification head: use --objective head")
        baselines = tuple(dict.fromkeys(spec.kind.default_baseline(ref.can_prompt) if b == "auto" else b
                                        for b in config.baselines))
        spec.kind.check(spec, ref, config, baselines)
        check_training_options(spec, ref, config)
        check_processes(config.batch_size, launched_world(), config.method_name, config.fsdp)
        if config.lm_eval and launched_world() > 1:  # lm-eval's own loop, not bench's sharded backends
            raise BenchError("--lm-eval runs in one process: start this command without torchrun / accelerate "
                             "launch, or drop --lm-eval")
        vllm_stages.check_backend(ref, config, baselines, launched_world())
        check_model_limits(spec, ref, config)
        if "prompt" in baselines and not ref.can_prompt:
            raise BenchError(f"--baseline prompt needs a language-model head; {name} is an encoder: use --baseline head")
        if config.objective == "lm" and not ref.can_prompt:
            raise BenchError(f"--objective lm needs a causal or seq2seq model; {name} is an encoder: use --objective head")
        if config.method_name == "qlora":
            reason = four_bit_unavailable()
            if reason:
                raise BenchError(f"--method qlora needs 4-bit bitsandbytes: {reason}; use --method lora")
        planned.append(PlannedRun(ref, config, baselines))
    if planned[0].config.lm_eval:
        check_lm_eval(planned)  # a task lm-eval cannot load fails here, before any stage
    return planned


def check_training_options(spec: TaskSpec, ref: ModelRef, config: RunConfig) -> None:
    """What fine-tuning would only find out after the baseline: the early-stopping metric this
    task validates on, and that freeze:N names no more blocks than the model has."""
    allowed = ("auto", *spec.kind.validation_metrics)
    if config.early_stop_metric not in allowed:
        raise BenchError(f"--early-stop-metric {config.early_stop_metric}: {spec.name} validates on "
                         f"{' and '.join(spec.kind.validation_metrics)} (auto: {spec.kind.validation_metrics[0]}); "
                         f"use one of: {', '.join(allowed)}")
    if config.method_name == "freeze":
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(ref.source, trust_remote_code=ref.trust_remote_code)
        blocks = config_int(model_config, "num_hidden_layers", "n_layer", "num_layers", default=None)
        if blocks is not None and (config.freeze_blocks or 0) > blocks:
            raise BenchError(f"--method {config.method}: {ref.name} has only {blocks} blocks; use freeze:1 to "
                             f"freeze:{blocks} (freeze:{blocks} trains them all) or --method full")
    if config.method_name in ("lora", "qlora") and config.lora_targets:
        check_lora_targets(spec, ref, config)


def check_lora_targets(spec: TaskSpec, ref: ModelRef, config: RunConfig) -> None:
    """Each --lora-targets name must match a module of the model fine-tuning builds (peft's rule: the
    module's name or its last dotted part(s)); found out at fine-tuning, a typo would cost the baseline
    first."""
    import torch

    head = "lm" if config.objective == "lm" else spec.kind.head or "classifier"
    model = skeleton(ref, head)
    if model is None:  # no such head class for this architecture: fine-tuning names that problem itself
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in config.lora_targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"})
        raise BenchError(f"--lora-targets {','.join(missing)}: no such module in {ref.name}; its linear layers are "
                         f"named {', '.join(leaves)}")


class Runner:
    """Runs the stages of planned runs against one store, sharing one set of splits per task."""

    def __init__(self, spec: TaskSpec, store: Store, data_dir: Path | None, log: Log,
                 launcher: Launcher = SINGLE_PROCESS):
        self.spec, self.store, self.data_dir, self.log = spec, store, data_dir, log
        # The process group (harness/distributed.py): rank 0 alone reads and writes the store and the
        # run folders; the other ranks do the same stage work and are told what rank 0 decided.
        self.launcher = launcher
        self._splits: dict[tuple[Any, ...], Splits] = {}

    def splits(self, config: RunConfig) -> Splits:
        settings = config.to_dict()
        key = tuple(split_settings(settings).values())
        if key not in self._splits:
            self._splits[key] = run_splits(self.spec, settings, self.data_dir)
        return self._splits[key]

    def run(self, planned: PlannedRun) -> dict[str, StageRecord]:
        quiet_transformers()
        self.log(f"[{planned.ref.name}] run {planned.run_id}")
        if not self.launcher.is_main:  # rank 0 holds the run's lock and writes its card
            return self._run_stages(planned)
        with self.store.run_lock(planned.run_id, self.log):
            check_stored_run(self.store, planned.run_id, planned.config, self.splits(planned.config))
            records = self._run_stages(planned)
            # the run's last step: its card, also on resume
            write_run_card(self.spec, planned.run_id, planned.config.to_dict(), records, self.store, self.data_dir)
            return records

    def _run_stages(self, planned: PlannedRun) -> dict[str, StageRecord]:
        config, run_id = planned.config, planned.run_id
        splits = self.splits(config)
        records: dict[str, StageRecord] = {}
        for baseline in planned.baselines:
            records[f"baseline:{baseline}"] = self._baseline(planned, baseline, splits)
        trained: list[Any] = []  # the in-memory fine-tuned model, handed from one stage to the next

        main = self.launcher.is_main

        def finetune() -> StageOutput:
            if main:
                record_training_inputs(self.store.run_dir(run_id), config, splits)
            model, tokenizer, result, info = stages.finetune(self.spec, planned.ref, config, splits,
                                                               self.store.run_dir(run_id) / "checkpoint", self.log,
                                                               launcher=self.launcher)
            trained.append((model, tokenizer))
            metrics = {"best_validation": result.best_metric, "best_step": result.best_step}
            return [], metrics, info, result.curves

        lost = self.launcher.broadcast(main and self._checkpoint_lost(run_id, planned.ref.trust_remote_code))
        records["finetune"] = self._stage(planned, "finetune", splits, finetune, redo=lost)
        if main:
            shutil.rmtree(self.store.run_dir(run_id) / stages.TRAIN_STATE, ignore_errors=True)  # stage committed
            forget_training_inputs(self.store.run_dir(run_id))

        def evaluate_finetuned() -> StageOutput:
            if vllm_stages.served_by_vllm(config, config.objective):  # from the checkpoint: no HF model loaded
                return vllm_stages.evaluate_checkpoint(self.spec, planned.ref, config,
                                                       self.store.run_dir(run_id) / "checkpoint", splits, self.launcher)
            if trained:
                model, tokenizer = trained[0]
                model = stages.merged_for_inference(model, config)
                trained[0] = (model, tokenizer)  # merged once; the lm-eval stages reuse it
            else:
                model, tokenizer, _ = load_checkpoint(self.store.run_dir(run_id) / "checkpoint",
                                                      trust_remote_code=planned.ref.trust_remote_code)
            return stages.evaluate_model(self.spec, planned.ref, config, model, tokenizer, splits, self.launcher)

        records["finetuned"] = self._stage(planned, "finetuned", splits, evaluate_finetuned)
        if config.lm_eval:
            records.update(lm_eval_stages(self.store, planned, self.log, trained))
        return records

    def _baseline(self, planned: PlannedRun, baseline: str, splits: Splits) -> StageRecord:
        """The baseline stage: evaluated, or copied from another run's identical one (shared_baseline)."""
        stage = f"baseline:{baseline}"
        key = baseline_key(planned.config, baseline, splits, gold_digest(splits.eval))

        def work() -> StageOutput:  # runs only when this run's own stage is not stored yet
            source = self.launcher.broadcast(shared_source(self.store, planned.run_id, stage, key)
                                             if self.launcher.is_main else None)
            if source is None:
                return stages.evaluate_baseline(self.spec, planned.ref, planned.config, baseline, splits,
                                                self.launcher)
            self.log(f"  {stage}: the same as run {source}'s (same model, examples and evaluation settings): "
                     "copied from it, not evaluated again")
            return copied_stage(self.store, source, stage)

        return self.stage(planned.run_id, stage, planned.config, splits, work,
                          extra_info={"baselines": planned.baselines, KEY_FIELD: key})

    def _checkpoint_lost(self, run_id: str, trust_remote_code: bool) -> bool:
        """A stored finetune stage is complete only with its checkpoint, its output: when that was
        deleted or is damaged, the re-run trains it again (its other stored stages stay)."""
        try:
            if self.store.stage(run_id, "finetune") is None:
                return False
        except DamagedFile:
            return False  # the stage runs again anyway
        checkpoint = self.store.run_dir(run_id) / "checkpoint"
        try:
            meta = checkpoint_meta(checkpoint) if checkpoint.is_dir() else None
        except DamagedFile:
            meta = None  # a damaged record: checkpoint_problem names it, and the stage trains again
        if meta is not None:  # a pickle or code planted in it is refused, not trained over
            check_checkpoint(checkpoint, meta, trust_remote_code)
        problem = checkpoint_problem(checkpoint)
        if problem is not None:
            self.log(f"  finetune: stored, but its checkpoint cannot be used ({problem}): training again")
        return problem is not None

    def _stage(self, planned: PlannedRun, stage: str, splits: Splits, work: StageWork, *,
               redo: bool = False) -> StageRecord:
        return self.stage(planned.run_id, stage, planned.config, splits, work, redo=redo,
                          extra_info={"baselines": planned.baselines})

    def stage(self, run_id: str, stage: str, config: RunConfig, splits: Splits, work: StageWork, *,
              stored_config: dict[str, Any] | None = None, extra_info: Mapping[str, Any] = {},
              redo: bool = False) -> StageRecord:
        """Run one stage unless the store has it complete (or `redo`): time it, measure peak memory,
        score its predictions, and store it with its provenance (data notes and hashes, package
        versions). A stored record that is damaged counts as not stored: the stage runs again."""
        done = self.launcher.broadcast(None if redo or not self.launcher.is_main else self._stored(run_id, stage))
        if done is not None:
            check_stage_data(run_id, stage, done.info, splits)  # reused only if made from these files
            self.log(f"  {stage}: complete in the store, skipped")
            return done
        self.log(f"  {stage} ...")
        reached(f"{stage.replace(':', '-')}-started", 1)
        started = time.perf_counter()
        with PeakMemory() as peak, scope(stage):  # its loops' progress bars read "baseline:prompt eval ..."
            predictions, metrics, info, curves = work()
        seconds = time.perf_counter() - started
        if predictions:
            scored, predictions = score_stage(self.spec, splits.eval, predictions, config.seed)
            name = self.spec.kind.headline
            metrics = {**scored, **metrics, "headline": name}
            self.log(f"  {stage}: {name} {metrics[name]['value']:.4f}  ({seconds:.1f} s)")
        info = {**info, "peak_memory_mb": peak.mb, "data_notes": list(splits.notes),
                "data_hashes": splits.source_hashes, "eval_gold": gold_digest(splits.eval),
                "versions": package_versions(), **extra_info}
        if not self.launcher.is_main:  # rank 0 alone writes the store; the other ranks read back its record
            self.launcher.barrier()
            return self.store.stage(run_id, stage)  # type: ignore[return-value]
        record = self.store.complete_stage(run_id, stage, config=stored_config or config.to_dict(), seconds=seconds,
                                           metrics=metrics, info=info, predictions=predictions, curves=curves)
        self.launcher.barrier()
        return record

    def _stored(self, run_id: str, stage: str) -> StageRecord | None:
        """The stage's stored record; None when it is not stored, or damaged (then it runs again)."""
        try:
            return self.store.stage(run_id, stage)
        except DamagedFile as exc:
            self.log(f"  {stage}: its stored record cannot be read ({exc.where}: {exc.reason}): running it again")
            return None


def quiet_transformers() -> None:
    """Our own progress lines are the log; library deprecation chatter is not news to users."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # optional-kernel notices on CPU
    quiet_libraries()


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


