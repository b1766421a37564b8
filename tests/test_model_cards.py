"""Model cards and `bench push`: every finished run's checkpoint folder holds a Hugging Face model
card (parsed back with huggingface_hub's own ModelCard.load), written also when an interrupted run
resumes; `bench push` uploads the folder to a real local HTTP server speaking the hub API, fails
with one line before any request when offline, and never shows the token."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from hub_server import HubServer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL = ("--train-samples", "24", "--eval-samples", "16", "--validation-samples", "8", "--eval-batch-size", "8",
         "--batch-size", "8", "--max-length", "96")
HUB_ID = "bench-tests/tiny-bert"
TOKEN = "hf_CardTestTokenThatMustNeverShow0123"


def hub_cache_with(model_dir: Path, cache: Path) -> None:
    """`model_dir` laid out as the hub's download cache holds HUB_ID, so an offline run loads it
    by its hub id, as a run of a hub model does."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + HUB_ID.replace("/", "--"))
    shutil.copytree(model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def bench_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def stored(results: Path, run_id: str) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        rows = db.execute("SELECT stage, metrics FROM stages WHERE run_id = ?", (run_id,)).fetchall()
    return {stage: json.loads(metrics) for stage, metrics in rows}


def card_metrics(card: Any) -> dict[str, tuple[float, dict[str, Any]]]:
    (index,) = card.data.to_dict()["model-index"]
    return {m["name"]: (m["value"], m.get("args", {})) for result in index["results"] for m in result["metrics"]}


@pytest.fixture(scope="module")
def hub_run(tiny_model, data_dir, tmp_path_factory) -> dict[str, Any]:
    """A LoRA run of a hub-id model, killed after every stage is stored but before its card is
    written, then resumed: what the resume left, and the environment it ran in."""
    root = tmp_path_factory.mktemp("hub-run")
    hub_cache_with(tiny_model("bert"), root / "hub")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_CACHE": str(root / "hub"), "HF_HUB_OFFLINE": "1",
           "BENCH_CACHE": str(root / "cache")}
    env.pop("BENCH_FAULTS", None)
    results = root / "results"
    command = ("run", "sst2", "--models", HUB_ID, "--method", "lora", "--data-dir", str(data_dir), "--results",
               str(results), *SMALL)
    killed = bench_process(*command, env={**env, "BENCH_FAULTS": "kill@model-card=1"})
    (run_dir,) = (results / "runs").iterdir()
    before = (run_dir / "checkpoint" / "README.md").read_text() if (run_dir / "checkpoint" / "README.md").exists() \
        else ""
    resumed = bench_process(*command, env=env)
    return {"killed": killed, "card_before": before, "resumed": resumed, "run_id": run_dir.name,
            "checkpoint": run_dir / "checkpoint", "results": results, "env": env, "data_dir": data_dir}


def test_an_interrupted_run_gets_its_card_on_resume_with_the_stored_metrics(hub_run):
    from huggingface_hub import ModelCard

    assert hub_run["killed"].returncode == -9, hub_run["killed"].stderr
    assert "model-index" not in hub_run["card_before"]  # at most peft's placeholder: no card yet
    resumed = hub_run["resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("complete in the store, skipped") == 3  # baseline, finetune, finetuned

    card = ModelCard.load(hub_run["checkpoint"] / "README.md")
    data = card.data
    assert data.base_model == HUB_ID and data.library_name == "peft" and data.datasets == ["stanfordnlp/sst2"]
    assert {"bench", "sst2", "lora", "text-classification"} <= set(data.tags)
    stages = stored(hub_run["results"], hub_run["run_id"])
    after, before = stages["finetuned"]["accuracy"], stages["baseline:head"]["accuracy"]
    metrics = card_metrics(card)
    value, args = metrics["accuracy (fine-tuned)"]
    assert value == round(after["value"], 6) and args["ci95"] == [round(x, 6) for x in after["ci"]]
    value, args = metrics["accuracy (before fine-tuning: head (untrained) baseline)"]
    assert value == round(before["value"], 6) and args["ci95"] == [round(x, 6) for x in before["ci"]]
    (delta_name,) = [name for name in metrics if name.startswith("delta accuracy")]
    delta, args = metrics[delta_name]
    assert delta == pytest.approx(after["value"] - before["value"], abs=1e-6)
    assert args["ci95"][0] <= delta <= args["ci95"][1] and 0.0 <= args["p_value"] <= 1.0
    settings = data.bench["training"]
    assert settings["method"] == "lora" and settings["objective"] == "head" and settings["train_samples"] == 24
    assert {"lr", "epochs", "batch_size", "seed", "lora_rank"} <= set(settings)
    assert data.bench["version"] and data.bench["run_id"] == hub_run["run_id"]
    assert card.data.to_dict()["model-index"][0]["results"][0]["dataset"]["type"] == "stanfordnlp/sst2"
    assert data.bench["command"] in card.text  # the body repeats it under Reproduce


def test_the_cards_command_reproduces_the_same_run(hub_run):
    from huggingface_hub import ModelCard

    command = ModelCard.load(hub_run["checkpoint"] / "README.md").data.bench["command"]
    words = shlex.split(command)
    assert words[:2] == ["bench", "run"]
    again = bench_process(*words[1:], env=hub_run["env"])
    assert again.returncode == 0, again.stderr
    assert f"run {hub_run['run_id']}" in again.stderr  # the same config, so the same run id
    assert again.stderr.count("complete in the store, skipped") == 3


def test_push_uploads_the_checkpoint_to_the_hub_api_and_never_shows_the_token(hub_run):
    env = {key: value for key, value in hub_run["env"].items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with HubServer(TOKEN, echo_token=True) as hub:  # the server quotes the token back in its replies
        pushed = bench_process("push", hub_run["run_id"], "--repo", "tester/tiny-card", "--private", "--results",
                               str(hub_run["results"]), env={**env, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN})
    assert pushed.returncode == 0, pushed.stderr
    assert TOKEN not in pushed.stdout + pushed.stderr and TOKEN[:12] not in pushed.stdout + pushed.stderr
    assert "uploaded 6 files" in pushed.stdout and "tester/tiny-card" in pushed.stdout
    repo = hub.repos["tester/tiny-card"]
    assert repo["private"]
    checkpoint = hub_run["checkpoint"]
    assert repo["files"] == {path.name: path.read_bytes() for path in checkpoint.iterdir()}
    assert repo["files"]["README.md"].decode() in hub.validated  # the card's YAML went to the hub's validator
    # The token travelled only in the Authorization header, never in a URL or a body.
    for request in hub.requests:
        assert TOKEN not in request["path"] and TOKEN.encode() not in request["body"]


def test_push_with_a_refused_token_is_one_line_without_the_token(hub_run):
    env = {key: value for key, value in hub_run["env"].items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with HubServer("hf_the_right_token_is_another_one") as hub:  # its 401 reply quotes the token sent
        pushed = bench_process("push", hub_run["run_id"], "--repo", "tester/x", "--results", str(hub_run["results"]),
                               env={**env, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN})
    assert pushed.returncode == 2 and pushed.stderr.startswith("error: ") and pushed.stderr.count("\n") == 1
    assert "refused the token (HTTP 401)" in pushed.stderr and TOKEN[:12] not in pushed.stderr
    assert [r["path"] for r in hub.requests] == ["/api/whoami-v2"] and not hub.repos  # nothing created


def _snapshot(results: Path) -> dict[str, bytes]:
    return {str(p.relative_to(results)): p.read_bytes() for p in sorted(results.rglob("*"))
            if p.is_file() and "-wal" not in p.name and "-shm" not in p.name}


@pytest.mark.parametrize("env, expected", [
    ({"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": TOKEN}, "cannot reach the Hugging Face Hub at "
                                                               "http://127.0.0.1:9"),
    ({"HF_HUB_OFFLINE": "1", "HF_TOKEN": TOKEN}, "HF_HUB_OFFLINE=1 is set"),
    ({"HF_TOKEN": ""}, "no Hugging Face token"),
    ({"HF_TOKEN": "hf_two words"}, "holds a space"),
], ids=["unreachable", "offline", "no-token", "bad-token"])
def test_push_that_cannot_upload_is_one_line_before_anything(bench, hub_run, monkeypatch, tmp_path, env, expected):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token file
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    import huggingface_hub.constants  # read at its import: this process may have imported it already

    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = _snapshot(hub_run["results"])
    code, out, err = bench("push", hub_run["run_id"], "--repo", "tester/x", "--results", hub_run["results"])
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert "nothing was uploaded" in err and TOKEN not in err + out
    assert _snapshot(hub_run["results"]) == before


def test_push_dry_run_lists_the_files_and_needs_no_hub(bench, hub_run, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = bench("push", hub_run["run_id"], "--repo", "tester/x", "--dry-run", "--results",
                           hub_run["results"])
    assert code == 0, err
    for path in hub_run["checkpoint"].iterdir():
        assert f"  {path.name}  {path.stat().st_size} bytes" in out


def test_push_refuses_a_run_without_a_card_and_a_bad_repo_id(bench, hub_run, tmp_path):
    results = tmp_path / "copy"
    shutil.copytree(hub_run["results"], results)
    card = results / "runs" / hub_run["run_id"] / "checkpoint" / "README.md"
    card.write_text(hub_run["card_before"])  # what the killed run left: peft's placeholder at most
    code, _, err = bench("push", hub_run["run_id"], "--repo", "tester/x", "--dry-run", "--results", results)
    assert code == 2 and "has no model card yet" in err and err.count("\n") == 1, err
    code, _, err = bench("push", hub_run["run_id"], "--repo", "bad repo!", "--results", hub_run["results"])
    assert code == 2 and "is not a hub repo id" in err and err.count("\n") == 1, err


def test_a_full_fine_tune_of_a_local_model_gets_a_transformers_card(bench, tiny_model, data_dir, tmp_path):
    from huggingface_hub import ModelCard

    model = tiny_model("gpt2")
    code, _, err = bench("run", "sst2", "--models", model, "--method", "full", "--data-dir", data_dir, "--results",
                         tmp_path, *SMALL)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    card = ModelCard.load(run_dir / "checkpoint" / "README.md")
    assert card.data.library_name == "transformers" and card.data.base_model is None  # the hub refuses a path
    assert str(model) in card.text and card.data.bench["training"]["objective"] == "lm"
    assert not any(name.startswith("lora") for name in card.data.bench["training"])
    after = stored(tmp_path, run_dir.name)["finetuned"]["accuracy"]
    value, args = card_metrics(card)["accuracy (fine-tuned)"]
    assert value == round(after["value"], 6) and len(args["ci95"]) == 2
