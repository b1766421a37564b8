"""Run configuration: every run option declared once, as a RunConfig field with its help, choices
and flag spelling, from which the command-line flags, the sweep's grid axes and the stored config
are derived; presets and per-method defaults. The resolved config is stored with every run and
its hash names the run, so the same command resumes the same run. Resolution and validation:
harness/resolve.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping


METHODS = ("full", "lora", "qlora", "freeze:N", "head")
OBJECTIVES = ("auto", "head", "lm")  # auto: lm for models with an LM head, head for encoders
BASELINES = ("auto", "prompt", "head")  # auto: prompt for LMs, head for encoders
OPTIMIZERS = ("adamw", "sgd", "sgd-momentum")
SCHEDULES = ("linear", "cosine", "constant")
EARLY_STOP_METRICS = ("auto", "accuracy", "f1_macro", "loss")  # loss: validation loss, lower is better
CHAT_TEMPLATES = ("auto", "on", "off")  # text generation: wrap prompts in the tokenizer's chat template
GRADIENT_CHECKPOINTING = ("auto", "on", "off")  # auto: see harness/train/methods.py gradient_checkpointing_wanted
BACKENDS = ("hf", "vllm")  # what evaluates prompt scoring and generation (training is always transformers)

# quick: minutes on a 2-core CPU with a ~100M model; paper: the seeds' settings on full data.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(train_samples=1000, eval_samples=500, validation_samples=200, epochs=1.0,
                  batch_size=16, max_length=128, weight_decay=0.0, warmup_ratio=0.06,
                  evals_per_epoch=4),
    "paper": dict(train_samples=None, eval_samples=None, validation_samples=1000, epochs=3.0,
                  batch_size=16, max_length=512, weight_decay=0.01, warmup_ratio=0.06,
                  evals_per_epoch=1, lr=2e-5),
}
# Learning rates that work per method when the preset does not fix one (LoRA and heads need more).
METHOD_LR = {"full": 5e-5, "freeze": 1e-4, "head": 1e-3, "lora": 5e-4, "qlora": 5e-4}
# A new classification head behind LoRA adapters needs a larger step than adapters on a pretrained
# LM head (sst2 quick preset, minilm: accuracy 0.63 at 5e-4, 0.735 at 2e-3).
LORA_HEAD_LR = 2e-3

# More passes than this over the training data is a typo (1e5 for 1e-5?), not a plan: the step
# count and the schedule it sets would run for ever, or past what a float holds.
MAX_EPOCHS = 10_000
# A run's integer settings are stored (SQLite, JSON) and reach numpy and torch as signed 64-bit
# integers; a larger one fails there, or as an OverflowError wherever it meets a float.
INT64_MAX = 2**63 - 1

# Fields added after the first stored runs, with the defaults that leave a run's digest unchanged.
LATER_DEFAULTS: dict[str, Any] = {"precision": "auto", "compile": False, "train_seed": None, "lm_eval": None,
                                  "lm_eval_include": None, "lm_eval_limit": None, "fsdp": False,
                                  "gradient_checkpointing": "auto", "backend": "hf", "tensor_parallel": 1}


@dataclass(frozen=True)
class Flag:
    """How a run option is typed on the command line and in a sweep grid; declared once, on its
    RunConfig field. `group` says which commands take it: "common" (run, sweep, eval, export-task),
    "training" (run, sweep), "serving" (run, sweep, eval) or "lm_eval" (run, sweep)."""
    help: str
    group: str
    parser: Callable[[str], Any] | None = None  # None: text; a bool field is an on/off switch
    spellings: tuple[str, ...] = ()  # () : --the-field-name
    grid: bool = True  # a `bench sweep --grid` axis
    choices: tuple[str, ...] | None = None  # checked by `validate` with its own error line, not argparse
    flag_default: bool = False  # argparse default is the field's default (else None: "not given")


def option(default: Any, help: str, group: str = "training", **flag: Any) -> Any:
    """A RunConfig field that is also a command-line flag and (unless grid=False) a grid axis."""
    return dataclasses.field(default=default, metadata={"flag": Flag(help, group, **flag)})


def not_a_flag(why: str, default: Any = dataclasses.MISSING) -> Any:
    """A RunConfig field no flag sets directly (`why` says what does)."""
    return dataclasses.field(default=default, metadata={"flag": None, "why": why})


def csv_list(value: str) -> tuple[str, ...]:
    """`a, b,c` -> ("a", "b", "c"): a comma-separated option."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def baseline_list(value: str) -> tuple[str, ...]:
    """--baseline prompt,head; `both` is short for that pair."""
    return tuple(dict.fromkeys(part for name in csv_list(value) for part in
                               (("prompt", "head") if name == "both" else (name,))))


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run. The field order is the stored config's order: new fields go last."""
    task: str = not_a_flag("the positional TASK (a task name with its options: the registry's key)")
    model: str = not_a_flag("--models (run, sweep) or --model (eval): one run per model")
    method: str = option("lora", "full | lora (default) | qlora | freeze:N | head")
    objective: str = option("auto", "auto (default: lm for causal/seq2seq models, head for encoders, --method head "
                            "and squad_v2 span) | head (new classification head) | lm (train the LM on the label "
                            "verbalizer, prompt masked)", choices=OBJECTIVES)
    baselines: tuple[str, ...] = option(("auto",), "prompt, head or both (comma-separated); default auto: prompt for "
                                        "LMs, head for encoders", "common", parser=baseline_list,
                                        spellings=("--baseline",), grid=False, choices=BASELINES)
    shots: int = option(0, "few-shot demonstrations in the prompt baseline (default 0)", "common", parser=int)
    preset: str = option("quick", "quick (default: minutes on a CPU) or paper (the seeds' settings)", "common",
                         grid=False, choices=tuple(PRESETS), flag_default=True)
    train_samples: int | None = option(1000, "training examples (class-balanced, seeded)", "common", parser=int)
    eval_samples: int | None = option(500, "eval examples (seeded sample)", "common", parser=int,
                                      spellings=("--eval-samples", "--limit"))
    validation_samples: int = option(200, "validation examples for early stopping", "common", parser=int)
    epochs: float = option(1.0, "epochs (fractions allowed)", parser=float)
    lr: float = option(5e-4, "learning rate (quick default by method: lora/qlora 5e-4, or 2e-3 with a new head; full "
                       "5e-5; freeze 1e-4; head 1e-3; paper: the task's, e.g. 2e-5)", parser=float)
    batch_size: int = option(16, "train batch size (default 16, or the task's)", parser=int)
    eval_batch_size: int = option(32, "eval batch size (default 32, or the task's)", "common", parser=int)
    grad_accum: int = option(1, "gradient accumulation steps (default 1)", parser=int)
    max_length: int = option(128, "max tokens per example (default 128 quick, 512 paper, or the task's: alpaca, "
                             "samsum, squad_v2, wikitext set their own)", "common", parser=int)
    optimizer: str = option("adamw", "adamw (default) | sgd | sgd-momentum", choices=OPTIMIZERS)
    schedule: str = option("linear", "linear (default) | cosine | constant, after warmup", choices=SCHEDULES)
    warmup_ratio: float = option(0.06, "fraction of steps warming up (default 0.06)", parser=float)
    max_grad_norm: float = option(1.0, "gradient clipping norm (default 1.0)", parser=float)
    weight_decay: float = option(0.0, "AdamW weight decay (default 0; paper 0.01)", parser=float)
    evals_per_epoch: int = option(4, "validation evaluations per epoch", parser=int)
    patience: int | None = option(None, "early stopping: evaluations without improvement", parser=int)
    early_stop_metric: str = option("auto", "auto (default: f1_macro for classification, held-out loss for text "
                                    "tasks) | accuracy | f1_macro (classification) | loss (text tasks)",
                                    choices=EARLY_STOP_METRICS)
    seed: int = option(0, "seed for sampling, init and training (default 0); see --train-seed", "common", parser=int)
    # Seeds only what training draws (new heads and adapters, batch order, dropout); None: `seed`.
    # Varying it alone measures fine-tuning variance on fixed data: same splits, same eval examples.
    train_seed: int | None = option(None, "seed for training only (new heads and adapters, batch order, dropout; "
                                    "default: --seed): vary it to measure fine-tuning variance on the same data, "
                                    "e.g. --grid train_seed=0,1,2", parser=int)
    lora_rank: int = option(8, "LoRA rank (default 8)", parser=int)
    lora_alpha: int = option(16, "LoRA alpha (default 16)", parser=int)
    lora_dropout: float = option(0.05, "LoRA dropout (default 0.05)", parser=float)
    lora_targets: tuple[str, ...] | None = option(None, "module names to adapt (default: per architecture)",
                                                  parser=csv_list, grid=False)
    chat_template: str = option("auto", "text tasks: auto (default: when the tokenizer has one) | on | off",
                                "common", choices=CHAT_TEMPLATES)
    max_new_tokens: int | None = option(None, "text tasks: generation length (default per task)", "common",
                                        parser=int)
    # see harness/backends/precision.py
    precision: str = option("auto", "auto (default: bf16 autocast on a GPU that has it, else fp32) | fp32 | bf16",
                            "common")
    compile: bool = option(False, "torch.compile the model for training (pays on a GPU for long runs; costs compile "
                           "time)")
    task_options: tuple[tuple[str, Any], ...] = not_a_flag(
        "--labels, --mode, --max-response-chars and --task-option KEY=VALUE (see recorded_task_options)", ())
    # lm-eval tasks run on the model before and after fine-tuning (harness/run/lm_eval_bridge.py)
    lm_eval: tuple[str, ...] | None = option(None, "lm-eval-harness tasks (comma-separated) run on each model before "
                                             "and after fine-tuning, paired per item: the general-ability "
                                             "(forgetting) check", "lm_eval", parser=csv_list, grid=False)
    lm_eval_include: str | None = option(None, "a folder of lm-eval YAML tasks (local files) for --lm-eval",
                                         "lm_eval", grid=False)
    lm_eval_limit: int | None = option(None, "the first N documents of each --lm-eval task", "lm_eval", parser=int,
                                       grid=False)
    # Under torchrun / accelerate launch: full fine-tuning sharded by FSDP2 instead of DDP's replicas
    # (harness/train/data_parallel.py). Not the number of processes: that is not part of a run.
    fsdp: bool = option(False, "several processes (torchrun, accelerate launch): shard full fine-tuning over them "
                        "with FSDP2 (fully_shard) instead of a DDP replica of the model on each", grid=False)
    # Recompute each block's activations in the backward pass instead of keeping them: same loss and
    # gradients, a fraction of the training memory, about a third more compute (harness/train/methods.py).
    gradient_checkpointing: str = option("auto", "auto (default: on for LM-objective training on text targets: "
                                         "samsum, alpaca, squad_v2 generate, wikitext) | on | off: recompute "
                                         "activations in the backward pass (less memory, ~1/3 more compute)",
                                         choices=GRADIENT_CHECKPOINTING)
    # The backend is part of the run id: vLLM's kernels give numerically different (if close) scores
    # and generations, so a vLLM run and an HF run are two runs (see harness/run/vllm_stages.py).
    backend: str = option("hf", "hf (default: transformers) | vllm: prompt scoring and generation (the prompt "
                          "baseline and --objective lm evaluations) served by vLLM, installed with "
                          "scripts/vllm_env.sh; head and span stages, and all training, stay on transformers",
                          "serving", choices=BACKENDS)
    tensor_parallel: int = option(1, "--backend vllm: shard each model over N devices (vLLM's tensor parallel; "
                                  "default 1)", "serving", parser=int, grid=False)

    @property
    def method_name(self) -> str:
        return self.method.split(":")[0]

    @property
    def training_seed(self) -> int:
        return self.seed if self.train_seed is None else self.train_seed

    @property
    def freeze_blocks(self) -> int | None:
        return int(self.method.split(":")[1]) if self.method.startswith("freeze:") else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        # Settings added after runs were first stored count only when changed from their default,
        # so an earlier run keeps its name (and resumes) under the new code.
        values = {key: value for key, value in self.to_dict().items() if LATER_DEFAULTS.get(key, ...) != value}
        canonical = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def flags(group: str | None = None) -> Iterator[tuple[str, Flag]]:
    """(field name, flag) of every RunConfig field typed as a flag, in field order; only `group`'s if given."""
    for item in dataclasses.fields(RunConfig):
        flag = item.metadata.get("flag")
        if flag is not None and group in (None, flag.group):
            yield item.name, flag


def converter(name: str, flag: Flag) -> Callable[[str], Any]:
    """How the text of option `name` becomes its value: an on/off field reads true/false."""
    boolean_field = RunConfig.__dataclass_fields__[name].type in ("bool", bool)
    return boolean if boolean_field else flag.parser or str


# Every keyword option a registered task factory declares, each a `bench run/sweep/eval` flag (a
# test checks this against the registry) and a grid axis: name -> (value type, help). Their order
# is the order a run's config records them in, which its run id depends on.
TASK_OPTION_FLAGS: dict[str, tuple[Callable[[str], Any], str]] = {
    "labels": (int, "task option: number of labels (goemotions: 2, 4, 8, 16)"),
    "mode": (str, "task option: squad_v2 span (span head, default) or generate (prompted)"),
    "max_response_chars": (int, "task option: alpaca keeps responses shorter than this (the seed used 512)"),
}
TASK_OPTIONS = tuple(TASK_OPTION_FLAGS)
# Grid keys that are not options: the model, and freeze=N for method=freeze:N.
GRID_EXTRAS: dict[str, Callable[[str], Any]] = {"model": str, "freeze": int}


def grid_axes() -> dict[str, Callable[[str], Any]]:
    """Grid key -> value converter: the run options declared grid axes and the task options, with
    the types their flags apply, so a grid value parses exactly as the option would."""
    axes = {name: converter(name, flag) for name, flag in flags() if flag.grid}
    axes.update((name, convert) for name, (convert, _) in TASK_OPTION_FLAGS.items())
    return {**axes, **GRID_EXTRAS}


def shown_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run config as tables show its settings: the training seed it actually used (a run
    without --train-seed, or one given equal to --seed, trained with --seed)."""
    shown = dict(config)
    if shown.get("train_seed") is None:
        shown["train_seed"] = shown.get("seed", 0)
    return shown




def boolean(text: str) -> bool:
    """An on/off value typed as text (a grid's compile=true,false; a task option)."""
    value = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}.get(text.lower())
    if value is None:
        raise ValueError(f"{text!r} is not true or false")
    return value


def recorded_task_options(values: Mapping[str, Any]) -> tuple[tuple[str, Any], ...] | None:
    """The task options given (name -> value; None = not given) as a run's config records them."""
    options = tuple((name, values[name]) for name in TASK_OPTIONS if values.get(name) is not None)
    # a plugin's own options (`--task-option KEY=VALUE`) after the flagged ones, by name: the order
    # they were typed in does not change the run id
    options += tuple(sorted((name, value) for name, value in values.items()
                            if name not in TASK_OPTIONS and value is not None))
    return options or None
