"""Options that only the model or the step arithmetic can refuse are refused when the run is planned:
one `error:` line, exit 2, and the results folder absent or byte for byte as it was. Each of these
once failed only after the model had loaded or the baseline was stored (an IndexError past the
position table, an OverflowError in the step count, an allocator error for a huge LoRA rank)."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_errors import FAST, assert_clean_failure

HUGE = str(10**400)  # past any float: an OverflowError wherever it met one


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_max_length_past_the_position_limit(bench, tiny_model, data_dir, results, family):
    """The tiny models have 512 positions (n_positions for GPT-2, max_position_embeddings for BERT and
    Llama); imdb reviews run past that, which crashed the baseline's forward pass."""
    model = tiny_model(family)
    result = bench("run", "imdb", "--models", model, "--data-dir", data_dir, "--results", results, *FAST,
                   "--max-length", "4096")
    assert_clean_failure(result, f"--max-length 4096: {model} has positions for at most 512 tokens; use "
                                 "--max-length 512 or less", results)


def test_every_model_is_checked_before_the_first_runs(bench, tiny_model, data_dir, results):
    """T5's relative positions have no limit, so the first model would run; the second's limit is
    found before it does, and nothing is stored for either."""
    t5, gpt2 = tiny_model("t5"), tiny_model("gpt2")
    result = bench("run", "sst2", "--models", f"{t5},{gpt2}", "--data-dir", data_dir, "--results", results, *FAST,
                   "--max-length", "1024")
    assert_clean_failure(result, f"{gpt2} has positions for at most 512 tokens", results)


def test_relative_positions_have_no_limit(tiny_model):
    """The tiny T5's config carries n_positions 512 (as real T5 configs do), but its positions are
    relative buckets: no table to run past, so no limit to refuse a long --max-length by."""
    from harness.backends.models import position_limit, resolve_model

    assert position_limit(resolve_model(str(tiny_model("t5")))) is None
    assert position_limit(resolve_model(str(tiny_model("gpt2")))) == 512


def test_seq2seq_new_tokens_past_the_decoder_limit(bench, tiny_model, data_dir, results, capsys):
    """A seq2seq decoder generates --max-new-tokens on positions of its own."""
    bart = tiny_bart(tiny_model("t5"), results.parent / "bart")
    capsys.readouterr()  # save_pretrained's progress bar is not the command's output
    result = bench("run", "samsum", "--models", bart, "--data-dir", data_dir, "--results", results, *FAST,
                   "--max-length", "160", "--max-new-tokens", "600")
    assert_clean_failure(result, f"--max-new-tokens 600: {bart}'s decoder has positions for at most 512 tokens",
                         results)


def tiny_bart(t5: Path, folder: Path) -> Path:
    """A tiny BART (learned positions on both sides) with the tiny T5's tokenizer."""
    import shutil

    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(vocab_size=1000, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=512,
                        pad_token_id=0, eos_token_id=1, bos_token_id=1, decoder_start_token_id=0)
    BartForConditionalGeneration(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (t5 / name).exists():
            shutil.copy(t5 / name, folder / name)
    return folder


@pytest.mark.parametrize("option, value, expected", [
    pytest.param("--epochs", "1e308", "--epochs 1e+308 is more than 10,000 passes over the training data; use "
                 "--epochs 10000 or fewer", id="epochs"),
    pytest.param("--evals-per-epoch", HUGE, "--evals-per-epoch (a 1329-bit integer) is out of range", id="evals"),
    pytest.param("--grad-accum", str(2**64), f"--grad-accum {2**64} is out of range: integer settings are stored "
                 "as signed 64-bit integers (at most 2**63 - 1)", id="grad-accum"),
    pytest.param("--batch-size", str(2**63), f"--batch-size {2**63} is out of range", id="batch-size"),
    pytest.param("--lora-alpha", HUGE, "--lora-alpha (a 1329-bit integer) is out of range", id="lora-alpha"),
    pytest.param("--patience", str(2**70), f"--patience {2**70} is out of range", id="patience"),
    pytest.param("--shots", "100000", "--shots 100000: a prompt of --max-length 128 tokens cannot hold",
                 id="shots"),  # once: every training example a demonstration, minutes of tokenizing
])
def test_step_arithmetic_overflow(bench, tiny_model, data_dir, results, option, value, expected):
    """Values past what the step count, the schedule or the store can hold."""
    result = bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", results,
                   *FAST, option, value)
    assert_clean_failure(result, expected, results)


@pytest.mark.parametrize("family, rank, layers, width", [("gpt2", 100, "c_attn", 64), ("llama", 40, "v_proj", 32)])
def test_lora_rank_wider_than_the_adapted_layers(bench, tiny_model, data_dir, results, family, rank, layers, width):
    """peft's default targets: GPT-2's c_attn (64 -> 192), Llama's q_proj (64 -> 64) and v_proj
    (64 -> 32, grouped-query heads): the narrowest decides."""
    model = tiny_model(family)
    result = bench("run", "sst2", "--models", model, "--data-dir", data_dir, "--results", results, *FAST,
                   "--lora-rank", str(rank))
    assert_clean_failure(result, f"--lora-rank {rank}: {model}'s adapted layers ({layers}) are {width} wide, so a "
                                 f"rank above {width} adds nothing; use --lora-rank {width} or less", results)


def test_lora_rank_of_named_targets(bench, tiny_model, data_dir, results):
    """--lora-targets decide which widths count: Llama's q_proj alone is 64 wide, so 40 is refused only
    with v_proj among the targets."""
    model = tiny_model("llama")
    result = bench("run", "sst2", "--models", model, "--data-dir", data_dir, "--results", results, *FAST,
                   "--lora-rank", "40", "--lora-targets", "q_proj,v_proj,o_proj")
    assert_clean_failure(result, f"{model}'s adapted layers (v_proj) are 32 wide", results)


@pytest.mark.parametrize("grid, expected", [
    ("lora_rank=4,100", "sweep cell lora_rank=100: --lora-rank 100: "),
    ("epochs=1,1e308", "sweep cell epochs=1e+308: --epochs 1e+308 is more than 10,000 passes"),
    ("max_length=64,4096", "sweep cell max_length=4096: --max-length 4096: "),
])
def test_sweep_refuses_a_bad_cell_before_any_runs(bench, tiny_model, data_dir, results, grid, expected):
    """The first cell is valid and would run; the bad one is found when the grid is planned."""
    result = bench("sweep", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", results,
                   *FAST, "--grid", grid)
    assert_clean_failure(result, expected, results)
    assert not results.exists()


def test_eval_checks_before_opening_the_store(bench, tiny_model, data_dir, results):
    """`bench eval` refuses a too-long --max-length and a prompt baseline on an encoder before it opens
    the store: an existing store is left byte for byte as it was (no lock file, no run folder)."""
    gpt2, bert = tiny_model("gpt2"), tiny_model("bert")
    for model, extra, expected in ((gpt2, ("--max-length", "4096"), "has positions for at most 512 tokens"),
                                   (bert, ("--baseline", "prompt"), "--baseline prompt needs a language-model head")):
        result = bench("eval", "imdb", "--model", model, "--data-dir", data_dir, "--results", results,
                       "--eval-samples", "8", *extra)
        assert_clean_failure(result, expected, results)
        assert not results.exists()
    code, _, err = bench("eval", "sst2", "--model", gpt2, "--data-dir", data_dir, "--results", results,
                         "--eval-samples", "8")
    assert code == 0, err
    before = snapshot(results)
    for model, extra in ((gpt2, ("--max-length", "4096")), (bert, ("--baseline", "prompt"))):
        code, out, err = bench("eval", "imdb", "--model", model, "--data-dir", data_dir, "--results", results,
                               "--eval-samples", "8", *extra)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
        assert snapshot(results) == before


def test_run_leaves_an_existing_store_as_it_was(bench, tiny_model, data_dir, results):
    """A refused run beside earlier results changes none of their bytes."""
    gpt2 = tiny_model("gpt2")
    code, _, err = bench("eval", "sst2", "--model", gpt2, "--data-dir", data_dir, "--results", results,
                         "--eval-samples", "8")
    assert code == 0, err
    before = snapshot(results)
    for extra in (("--lora-rank", "100"), ("--epochs", "1e308"), ("--max-length", "4096")):
        code, out, err = bench("run", "sst2", "--models", gpt2, "--data-dir", data_dir, "--results", results, *FAST,
                               *extra)
        assert code == 2 and out == "" and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert snapshot(results) == before
