"""The evaluation batch starts from a memory estimate: the requested size when it fits, else the
largest power of two that the estimate says fits; the stage records the size that ran."""
from __future__ import annotations

import json
import sqlite3

import pytest

torch = pytest.importorskip("torch")

from harness.backends.batch_size import HEADROOM, bytes_per_example, start_batch_size  # noqa: E402


def test_estimate_counts_cache_activations_and_logits(tiny_model):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model("llama"))
    width, layers, inner, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    kv_width = width * config.num_key_value_heads // config.num_attention_heads
    per_token = layers * 2 * kv_width + 4 * width + 2 * inner
    config._attn_implementation = "sdpa"
    assert bytes_per_example(config, 100, 4) == 100 * per_token * 4 + vocab * 4
    config._attn_implementation = "eager"  # unfused attention materialises heads x seq x seq scores
    assert bytes_per_example(config, 100, 4) == (100 * per_token + config.num_attention_heads * 100 * 100) * 4 + vocab * 4


def test_start_batch_is_capped_by_the_estimate(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model("llama"))
    one = bytes_per_example(model.config, 128, 4)
    room_for = lambda n: int(n * one / HEADROOM) + 1  # noqa: E731
    cpu = torch.device("cpu")
    assert start_batch_size(model, 32, 128, cpu, available=room_for(1000)) == 32  # fits: as requested
    assert start_batch_size(model, 32, 128, cpu, available=room_for(12)) == 8  # power of two under 12
    assert start_batch_size(model, 32, 128, cpu, available=0) == 1  # never below one


def test_stage_records_requested_and_used_eval_batch(bench, data_dir, tiny_model, tmp_path):
    code, _, err = bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", tmp_path,
                         "--train-samples", "16", "--eval-samples", "16", "--validation-samples", "8",
                         "--eval-batch-size", "8", "--batch-size", "8", "--max-length", "64")
    assert code == 0, err
    with sqlite3.connect(tmp_path / "bench.sqlite") as db:
        infos = [json.loads(info) for (info,) in db.execute("SELECT info FROM stages WHERE stage != 'finetune'")]
    assert infos and all(info["eval_batch_requested"] == 8 and info["eval_batch_size"] == 8 for info in infos)
