"""What a local model folder or checkpoint must pass before anything in it is read: safetensors
weights only (a pickle can run any code when loaded), and no Python code of its own unless
--trust-remote-code.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from harness.errors import BenchError

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
