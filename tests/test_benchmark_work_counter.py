"""The zero-shot benchmark's work counter: the positions it reports are what the model computed, so the
"FLOP bound" it prints (what a speed-up can reach at equal FLOP rates) rests on real counts."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from harness.backends.hf import score_causal  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "zero_shot_scoring.py"


def _work_counter():
    spec = importlib.util.spec_from_file_location("zero_shot_scoring", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WorkCounter


def test_counts_body_and_head_positions_of_full_forward_and_of_bench_scoring(tiny_model):
    path = tiny_model("llama")
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    counter = _work_counter()(model)
    embeddings = model.get_input_embeddings().weight.numel()
    assert counter.body_params == sum(p.numel() for p in model.model.parameters()) - embeddings
    assert counter.head_params == model.lm_head.weight.numel()

    with torch.inference_mode():
        model(input_ids=torch.ones(2, 7, dtype=torch.long))  # a full forward: the head runs at every position
    assert (counter.body_positions, counter.head_positions) == (14, 14)
    assert counter.flops == 2.0 * 14 * (counter.body_params + counter.head_params)

    counter.reset()
    # bench: one batch of 3 left-padded rows (longest 9), one-token labels: the head runs at the last position only.
    contexts = [[5 + i for i in range(n)] for n in (4, 6, 9)]
    score_causal(model, contexts, [[11], [12]], 0, 3)
    assert (counter.body_positions, counter.head_positions) == (27, 3)
