"""`--backend vllm`: the stages that score or generate from prompts, served by vLLM instead of a
transformers model loaded in this process (loading that model is skipped: the point is speed).

Which stages: those evaluated with the LM objective, i.e. the prompt baseline and the fine-tuned
model of an `--objective lm` run, for every kind that generates or scores prompts (generation,
squad_v2 generate, language modelling, classification and multiple choice by verbalizer
log-likelihood). What vLLM serves for the fine-tuned stage: a full checkpoint's own folder, or the
base model with the LoRA adapter folder on top (vLLM's LoRA, never merged).

Decisions (README, "vLLM backend"):
- Head and span stages stay on transformers: in a run that also has an LM-objective stage they
  run there with `backend: hf` in their stage info; a run with no stage vLLM could serve (an
  encoder, --objective head only, squad_v2 span) is refused at plan time.
- QLoRA is refused: its adapter was trained against 4-bit weights, and serving it on the
  unquantized base would evaluate a different model than the one trained.
- Training always runs on transformers.
- Under torchrun (N processes) vLLM runs on the same ranks through its external launcher: every
  --tensor-parallel T consecutive ranks form one engine, and the N / T engines are data-parallel
  replicas, each answering its shard of every request list (gathered back in order, as the HF
  backend's shards are). vLLM tears the process group down when an engine shuts down; the ranks
  join again before the run goes on.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.backends.checkpoint import checkpoint_meta
from harness.backends.data_parallel import DataParallel
from harness.backends.models import ModelRef, parameter_counts, skeleton
from harness.backends.precision import device, resolved_precision
from harness.backends.vllm import INSTALL_HINT, VLLMBackend
from harness.distributed import SINGLE_PROCESS, Launcher, Replicas
from harness.errors import BenchError
from harness.options import RunConfig
from harness.task.spec import TaskSpec
from harness.types import Splits, StageOutput

# Extra keyword arguments for vllm.LLM, as a JSON object (e.g. {"enforce_eager": true,
# "gpu_memory_utilization": 0.8}): engine tuning that does not change what is computed, so it is
# not a run option and not part of the run id.
ENGINE_ENV = "BENCH_VLLM_ENGINE"
VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def served_by_vllm(config: RunConfig, objective: str) -> bool:
    """Whether a stage evaluated with `objective` runs on vLLM in this run."""
    return config.backend == "vllm" and objective == "lm"


def check_backend(ref: ModelRef, config: RunConfig, baselines: tuple[str, ...], world: int = 1) -> None:
    """`--backend vllm` problems found at plan time, before any stage: vLLM missing, a model or run
    it cannot serve, more tensor-parallel shards than devices or than the `world` processes allow."""
    if config.backend != "vllm":
        return
    if ref.family != "causal":
        raise BenchError(f"--backend vllm serves causal language models; {ref.name} is a {ref.family} model: "
                         "use --backend hf")
    if config.objective != "lm" and "prompt" not in baselines:
        raise BenchError(f"--backend vllm serves prompt scoring and generation, and every stage of this run is scored "
                         f"by a head (--objective {config.objective}): use --backend hf (or --baseline prompt / "
                         "--objective lm)")
    if config.method_name == "qlora" and config.objective == "lm":
        raise BenchError("--backend vllm cannot serve a QLoRA adapter on the 4-bit base it was trained on: "
                         "use --method lora, or --backend hf")
    adapted = {target.rsplit(".", 1)[-1] for target in config.lora_targets or ()}
    if config.objective == "lm" and adapted & {"lm_head", "embed_tokens", "wte"}:
        # vLLM leaves an lm_head adapter's delta out of prompt log-probs (vllm-project/vllm#51594)
        raise BenchError("--backend vllm cannot score with LoRA on the LM head or embeddings "
                         f"(--lora-targets {','.join(config.lora_targets or ())}): drop those targets, or use --backend hf")
    if world > 1 and world % config.tensor_parallel:
        shards = config.tensor_parallel
        raise BenchError(f"--tensor-parallel {shards} does not divide the {world} processes: launch a multiple of "
                         f"{shards} (each {shards} ranks serve one vLLM engine)")
    available, where = visible_devices()
    if config.tensor_parallel > available:
        raise BenchError(f"--tensor-parallel {config.tensor_parallel} needs {config.tensor_parallel} {where}; "
                         f"{available} visible: use --tensor-parallel {available} or fewer")
    if not vllm_installed():
        raise BenchError(INSTALL_HINT)


def vllm_installed() -> bool:
    """Found without `import vllm` (tens of seconds); a None in sys.modules blocks it as Python's import does."""
    if "vllm" in sys.modules:
        return sys.modules["vllm"] is not None
    return importlib.util.find_spec("vllm") is not None


def visible_devices() -> tuple[int, str]:
    """How many shards vLLM's tensor parallelism could use here: GPUs, or on a CPU the cores this
    process may run on (vLLM's CPU backend runs one worker process per shard)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "GPUs"
    return len(os.sched_getaffinity(0)), "CPU cores"


def evaluate_prompt_baseline(spec: TaskSpec, ref: ModelRef, config: RunConfig, splits: Splits,
                             launcher: Launcher = SINGLE_PROCESS) -> StageOutput:
    """The prompt baseline on the base model, served by vLLM."""
    return _evaluate(spec, ref, config, splits, None, launcher)


def evaluate_checkpoint(spec: TaskSpec, ref: ModelRef, config: RunConfig, checkpoint: Path,
                        splits: Splits, launcher: Launcher = SINGLE_PROCESS) -> StageOutput:
    """The fine-tuned stage from its checkpoint folder: full weights served from the folder, a LoRA
    adapter served on the base model it was trained on."""
    meta = checkpoint_meta(checkpoint)
    if meta is None:
        raise BenchError(f"{checkpoint} is not a bench checkpoint: run the finetune stage again (delete the run)")
    if meta["adapter"]:
        return _evaluate(spec, dataclasses.replace(ref, source=meta["base_source"]), config, splits, checkpoint,
                         launcher)
    return _evaluate(spec, dataclasses.replace(ref, source=str(checkpoint)), config, splits, None, launcher)


def engine_args() -> dict[str, Any]:
    text = os.environ.get(ENGINE_ENV, "").strip()
    if not text:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as bad:
        raise BenchError(f"{ENGINE_ENV} must be a JSON object of vllm.LLM arguments ({bad.msg}), e.g. "
                         '\'{"enforce_eager": true}\'') from None
    if not isinstance(args, dict):
        raise BenchError(f"{ENGINE_ENV} must be a JSON object of vllm.LLM arguments, e.g. '{{\"enforce_eager\": true}}'")
    return args


def _evaluate(spec: TaskSpec, ref: ModelRef, config: RunConfig, splits: Splits, adapter: Path | None,
              launcher: Launcher) -> StageOutput:
    started = time.perf_counter()
    precision = resolved_precision(config.precision, device())
    replicas = max(1, launcher.world_size // config.tensor_parallel)  # one process: one engine, however spread
    spread = {"distributed_executor_backend": "external_launcher", "data_parallel_size": replicas} \
        if launcher.distributed else {}
    try:
        with VLLMBackend(ref, adapter=adapter, tensor_parallel=config.tensor_parallel, dtype=VLLM_DTYPES[precision],
                         seed=config.seed, **spread, **engine_args()) as engine:
            engine_seconds = time.perf_counter() - started
            backend = DataParallel(engine, Replicas(launcher, config.tensor_parallel)) if launcher.distributed \
                else engine
            predictions = spec.kind.predict(spec, backend, splits.eval, splits.demos_from, config, "lm")
            batch = engine.batch_size
    finally:
        launcher.rejoin()
    seconds = time.perf_counter() - started - engine_seconds  # as the HF stage's: model load not counted
    model = skeleton(ref, "lm")  # the parameter counts without loading any weights
    info = {"mode": "prompt", "shots": spec.kind.shots(config, "lm"), "backend": "vllm",
            "tensor_parallel": config.tensor_parallel, "replicas": replicas,
            "adapter": str(adapter) if adapter else None,
            "eval_batch_size": batch, "eval_batch_requested": config.eval_batch_size, "precision": precision,
            "params": parameter_counts(model) if model is not None else None, "examples": len(predictions),
            "engine_start_seconds": round(engine_seconds, 2),
            "examples_per_second": round(len(predictions) / seconds, 2) if seconds else None}
    return predictions, {}, info, []
