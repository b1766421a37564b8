"""What a local model folder or checkpoint may hold before bench loads anything from it.

Weights load from safetensors only: a pickle weight file is refused wherever it lies, even next to
safetensors files (peft loads adapter_model.bin whenever adapter_model.safetensors is missing,
whatever other .safetensors file is there). A folder whose config, tokenizer or processor config
has an `auto_map` ships code of its own: refused without --trust-remote-code, even where
transformers has a built-in class it would quietly use instead. Each refusal is one `error:` line
naming the file and the fix, exit 2, with the store not created or left as it was; the pickles
here create a marker file when unpickled, and no marker may ever appear."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from test_cli_errors import FAST, assert_clean_failure  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONVERT = "`model.save_pretrained(dir, safe_serialization=True)`"


class _Payload:
    """Unpickled, it opens (so creates) the marker file: what a hostile pickle does, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (self.marker, "w")


def hostile_pickle(path: Path, marker: Path) -> Path:
    """A real torch.save file (the zip format transformers and peft load) carrying the payload."""
    torch.save({"weight": torch.zeros(2), "payload": _Payload(marker)}, path)
    return path


def copy_folder(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def store_rows(results: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a store, to show a refused command changed nothing."""
    with sqlite3.connect(results / "bench.sqlite") as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in tables}


def test_the_hostile_pickle_runs_code_when_unpickled(tmp_path: Path) -> None:
    """The payload is real: loaded without weights_only, it creates its marker (so the tests
    below, where it never appears, show that nothing unpickled it)."""
    marker = tmp_path / "ran"
    torch.load(hostile_pickle(tmp_path / "probe.bin", marker), weights_only=False)["payload"].close()
    assert marker.exists()


# ------------------------------------------------------------------ pickles in a model folder

@pytest.mark.parametrize("command", ["run", "eval"])
@pytest.mark.parametrize("layout, pickle_name", [
    pytest.param("empty-safetensors", "pytorch_model.bin", id="bin-beside-an-empty-safetensors"),
    pytest.param("real-safetensors", "pytorch_model.bin", id="bin-beside-real-safetensors"),
    pytest.param("real-safetensors", "consolidated.00.pth", id="pth-beside-real-safetensors"),
])
def test_a_pickle_in_a_model_folder_is_refused(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path,
                                               command: str, layout: str, pickle_name: str) -> None:
    model = copy_folder(tiny_model("gpt2"), tmp_path / "model")
    if layout == "empty-safetensors":  # some .safetensors file present, and no model.safetensors
        (model / "model.safetensors").unlink()
        (model / "x.safetensors").write_bytes(b"")
    marker = tmp_path / "unpickled"
    hostile_pickle(model / pickle_name, marker)
    results = tmp_path / "results"
    option = "--models" if command == "run" else "--model"
    result = bench(command, "sst2", option, model, "--data-dir", data_dir, "--results", results, *FAST)
    assert_clean_failure(result, f"model: {model / pickle_name} is a pickle", results)
    assert CONVERT in result[2] and "delete it" in result[2]
    assert not marker.exists()


def test_trainer_run_state_is_not_taken_for_weights(tiny_model: Any, tmp_path: Path) -> None:
    """transformers.Trainer leaves pickles that no model loader opens beside its checkpoints."""
    from harness.backends.models import resolve_model

    model = copy_folder(tiny_model("gpt2"), tmp_path / "checkpoint-500")
    for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_1.pth"):
        hostile_pickle(model / name, tmp_path / "unpickled")
    assert resolve_model(str(model)).family == "causal"


# ------------------------------------------------------------------ pickles in a bench checkpoint

@pytest.fixture(scope="module")
def interrupted_lora_run(tiny_model: Any, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
                         ) -> tuple[Path, tuple[str, ...]]:
    """A real LoRA run killed as its fine-tuned evaluation starts: baselines and fine-tuning are in
    the store, and a re-run resumes by loading the adapter checkpoint. (results, its run args)"""
    folder = tmp_path_factory.mktemp("lora-run")
    results = folder / "results"
    args = ("run", "sst2", "--models", str(tiny_model("gpt2")), "--method", "lora", "--data-dir", str(data_dir),
            "--results", str(results), *FAST)
    env = {**os.environ, "BENCH_CACHE": str(folder / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "BENCH_FAULTS": "kill@finetuned-started=1"}
    killed = subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stderr
    (run,) = (results / "runs").iterdir()
    assert (run / "checkpoint" / "adapter_model.safetensors").is_file()
    return results, args


def _add_adapter_pickle(checkpoint: Path, layout: str, marker: Path) -> None:
    if layout == "empty-safetensors":  # the bypass: peft falls back to adapter_model.bin
        (checkpoint / "adapter_model.safetensors").unlink()
        (checkpoint / "x.safetensors").write_bytes(b"")
    hostile_pickle(checkpoint / "adapter_model.bin", marker)


@pytest.mark.parametrize("layout", ["empty-safetensors", "real-safetensors"])
def test_a_pickle_in_a_checkpoint_is_refused_by_eval(bench: Any, data_dir: Path, tmp_path: Path, layout: str,
                                                     interrupted_lora_run: tuple[Path, tuple[str, ...]]) -> None:
    (run,) = (interrupted_lora_run[0] / "runs").iterdir()
    checkpoint = copy_folder(run / "checkpoint", tmp_path / "checkpoint")
    marker = tmp_path / "unpickled"
    _add_adapter_pickle(checkpoint, layout, marker)
    results = tmp_path / "results"
    result = bench("eval", "sst2", "--model", checkpoint, "--data-dir", data_dir, "--results", results)
    assert_clean_failure(result, f"checkpoint: {checkpoint / 'adapter_model.bin'} is a pickle", results)
    assert CONVERT in result[2]
    assert not marker.exists()


def test_a_pickle_in_the_checkpoint_of_a_resumed_run_is_refused(bench: Any, tmp_path: Path,
                                                                interrupted_lora_run: tuple[Path, tuple[str, ...]]
                                                                ) -> None:
    """Resuming loads the run's own checkpoint from the store: a pickle put there is refused, and
    the fine-tuned stage is not stored."""
    source, args = interrupted_lora_run
    results = copy_folder(source, tmp_path / "results")
    (run,) = (results / "runs").iterdir()
    marker = tmp_path / "unpickled"
    _add_adapter_pickle(run / "checkpoint", "empty-safetensors", marker)
    before = store_rows(results)
    code, out, err = bench(*[str(results) if arg == str(source) else arg for arg in args])
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint: ") and "adapter_model.bin is a pickle" in last and CONVERT in last
    assert "Traceback" not in err and out == ""
    assert store_rows(results) == before and not (run / "finetuned").exists()
    assert not marker.exists()


# ------------------------------------------------------------------ code of its own (auto_map)

def own_code_model(source: Path, target: Path, where: str, marker: Path) -> Path:
    """A copy of a tiny GPT-2 (a model type transformers has built in) whose `where` config names
    classes in the folder's own Python files, which create `marker` when imported."""
    model = copy_folder(source, target)
    touch = f"open({str(marker)!r}, 'w').close()\n"
    (model / "configuration_own.py").write_text(f"from transformers import GPT2Config\n{touch}\n\n"
                                                "class OwnConfig(GPT2Config):\n    pass\n")
    (model / "modeling_own.py").write_text("from transformers import GPT2LMHeadModel\n\n"
                                           "from .configuration_own import OwnConfig\n\n\n"
                                           "class OwnLM(GPT2LMHeadModel):\n    config_class = OwnConfig\n")
    (model / "tokenization_own.py").write_text(f"from transformers import PreTrainedTokenizerFast\n{touch}\n\n"
                                               "class OwnTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    auto_map: dict[str, Any] = {
        "config.json": {"AutoConfig": "configuration_own.OwnConfig", "AutoModelForCausalLM": "modeling_own.OwnLM"},
        "tokenizer_config.json": {"AutoTokenizer": [None, "tokenization_own.OwnTokenizer"]},
        "processor_config.json": {"AutoProcessor": "processing_own.OwnProcessor"},
        "preprocessor_config.json": {"AutoImageProcessor": "image_processing_own.OwnImageProcessor"},
    }[where]
    path = model / where
    config = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**config, "auto_map": auto_map}))
    return model


@pytest.mark.parametrize("command", ["run", "eval"])
@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json", "processor_config.json",
                                   "preprocessor_config.json"])
def test_auto_map_is_refused_without_trust_remote_code(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path,
                                                       command: str, where: str) -> None:
    marker = tmp_path / "code-ran"
    model = own_code_model(tiny_model("gpt2"), tmp_path / "own-code", where, marker)
    results = tmp_path / "results"
    option = "--models" if command == "run" else "--model"
    result = bench(command, "sst2", option, model, "--data-dir", data_dir, "--results", results, *FAST)
    assert_clean_failure(result, f"model: {model / where} has an auto_map", results)
    assert "pass --trust-remote-code" in result[2]
    assert not marker.exists()


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_auto_map_loads_with_trust_remote_code(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path,
                                               where: str) -> None:
    marker = tmp_path / "code-ran"
    model = own_code_model(tiny_model("gpt2"), tmp_path / f"own-{where.split('.')[0]}", where, marker)
    results = tmp_path / "results"
    code, out, err = bench("eval", "sst2", "--model", model, "--trust-remote-code", "--data-dir", data_dir,
                           "--results", results, "--eval-samples", "8")
    assert code == 0, err
    assert marker.exists()  # the folder's own code ran, as asked
    assert f"sst2 | {model} | prompt 0-shot | n 8 |" in out


def test_auto_map_in_a_checkpoint_is_refused_without_trust_remote_code(
        bench: Any, data_dir: Path, tmp_path: Path, interrupted_lora_run: tuple[Path, tuple[str, ...]]) -> None:
    (run,) = (interrupted_lora_run[0] / "runs").iterdir()
    checkpoint = copy_folder(run / "checkpoint", tmp_path / "checkpoint")
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "tokenization_own.OwnTokenizer"]}
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(config))
    results = tmp_path / "results"
    assert_clean_failure(bench("eval", "sst2", "--model", checkpoint, "--data-dir", data_dir, "--results", results),
                         f"checkpoint: {checkpoint / 'tokenizer_config.json'} has an auto_map", results)
