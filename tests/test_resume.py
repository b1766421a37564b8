"""Re-running a command skips completed stages and prints the same table. (A run killed mid-stage
resumes to the uninterrupted result: tests/test_crash_safety.py, at exact points of every stage.)"""
from __future__ import annotations

import pytest

pytest.importorskip("torch")


def test_rerun_skips_completed_stages_and_prints_the_same_table(bench, data_dir, tiny_model, tmp_path):
    args = ("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", tmp_path,
            "--train-samples", "16", "--eval-samples", "8", "--validation-samples", "8")
    code, first, _ = bench(*args)
    assert code == 0
    code, second, err = bench(*args)
    assert code == 0
    assert err.count("complete in the store, skipped") == 3
    strip = lambda text: [line for line in text.splitlines() if "wall time" not in line]  # noqa: E731
    assert strip(first) == strip(second)
    # the same folder with a trailing "/" (as shell completion writes it) is the same run
    code, third, err = bench(*[f"{a}/" if a == tiny_model("gpt2") else a for a in args])
    assert code == 0 and err.count("complete in the store, skipped") == 3, err
    assert strip(third) == strip(first)


def test_a_training_state_save_that_fails_leaves_the_previous_state_whole(tmp_path, monkeypatch):
    """Disk full while writing the mid-training state: one BenchError, no `.partial` folder
    is left taking the space, and the state saved before is still there to resume from."""
    import errno
    import os

    import safetensors.torch
    import torch

    from harness.train.state import STATE_FILE, LoopState, save_state

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loop = LoopState(step=1, epoch=0, batches_done=1, micro=0, epoch_rng={}, evals_without_gain=0, result={})
    folder = tmp_path / "train_state"
    save_state(folder, model, optimizer, scheduler, None, loop)

    def full(tensors, path, *args, **kwargs):
        open(path, "wb").write(b"\0" * 16)  # a file begun, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    from harness.errors import BenchError

    # one error line naming the folder and the fix, not the OSError's traceback
    with pytest.raises(BenchError, match="No space left on device: .*train_state.partial; free space"):
        save_state(folder, model, optimizer, scheduler, None, LoopState(**{**loop.__dict__, "step": 2}))
    assert not folder.with_name("train_state.partial").exists()
    assert '"step": 1' in (folder / STATE_FILE).read_text()
