"""What a resumed run may build on: stored stages and a mid-way training state are reused only when
they were made from the same data files and the same run config as this command's.

A run's stages are compared with each other (baseline vs fine-tuned), so a stage made before the
data changed and one made after would pair different gold labels under the same example ids: a
re-run that finds such work refuses, naming the changed files, and `--force-new` starts the run
over instead. `gold_digest` (harness/records.py) is recorded with every stage, so comparisons can check the same.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from harness.artefacts import DamagedFile
from harness.options import LATER_DEFAULTS, RunConfig
from harness.records import changed_files
from harness.errors import BenchError
from harness.store import Store, atomic_write
from harness.types import Splits

# Beside the training state while fine-tuning is under way: the data hashes and config it started from.
TRAINING_INPUTS = "train_state.inputs.json"
FIX = ("to start it over on the current data, re-run with --force-new (discards its stored stages and training "
       "state), or pass --results DIR for a new results folder")


def config_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Settings whose stored value differs from this command's (both as the store keeps them, JSON;
    settings added after a run was stored count at their defaults)."""
    old = {**LATER_DEFAULTS, **_as_json(stored)}
    new = {**LATER_DEFAULTS, **_as_json(current)}
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def _as_json(values: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(values), sort_keys=True, default=str))


def check_stored_run(store: Store, run_id: str, config: RunConfig | None, splits: Splits) -> None:
    """Refuse (BenchError) to resume a run whose stored stages or training state came from other
    data files or another config. `config` None: a record whose stored config is not the command's
    own (`bench eval` keeps its checkpoint's training settings), checked by its data only."""
    store.finish_discard(run_id)
    found: list[tuple[str, Mapping[str, str]]] = []
    for stage in store.stages_of(run_id):
        try:
            record = store.stage(run_id, stage)
        except DamagedFile:  # unreadable: the runner redoes that stage, so it vouches for no data
            continue
        if record is not None:
            found.append((f"its {stage} stage", record.info.get("data_hashes") or {}))
    inputs = _training_inputs(store.run_dir(run_id))
    if inputs is not None:
        found.append(("its training state", inputs.get("data_hashes") or {}))
    for what, hashes in found:
        changed = changed_files(hashes, splits.source_hashes)
        if changed:
            raise BenchError(f"run {run_id} has stored work made from other data: {', '.join(changed)} changed since "
                             f"{what} was made (its sha256 differs), so resuming would compare stages scored on "
                             f"different examples; {FIX}")
    if config is None:
        return
    for what, stored in (("its stored config", store.run_config(run_id)),
                         ("its training state", (inputs or {}).get("config"))):
        changes = config_changes(stored, config.to_dict()) if stored is not None else []
        if changes:
            raise BenchError(f"run {run_id}: {what} differs from this command's settings in {', '.join(changes)}, "
                             f"so resuming would mix two configurations; {FIX}")


def check_stage_data(run_id: str, stage: str, info: Mapping[str, Any], splits: Splits) -> None:
    """A stage about to be skipped as complete must have been made from the current data files."""
    changed = changed_files(info.get("data_hashes") or {}, splits.source_hashes)
    if changed:
        raise BenchError(f"run {run_id}: {', '.join(changed)} changed since its {stage} stage was made (its sha256 "
                         f"differs), so that stage cannot be reused; {FIX}")


def settle_stored_runs(store: Store, runs: Sequence[tuple[str, RunConfig | None, Splits]], *,
                       force_new: bool, log: Callable[[str], None]) -> None:
    """Before any work: with --force-new, discard what the store holds of each run; otherwise check
    every run's stored work against this command's data and config, all before the first one starts,
    so a refusal leaves the store as it was."""
    for run_id, config, splits in runs:
        with store.run_lock(run_id, log):
            if force_new:
                if store.discard_run(run_id):
                    log(f"  --force-new: discarded the stored stages of run {run_id}")
            else:
                check_stored_run(store, run_id, config, splits)


def record_training_inputs(run_dir: Path, config: RunConfig, splits: Splits) -> None:
    """Written before fine-tuning starts, removed with the training state once the stage is stored:
    a training state resumed later is checked against it."""
    atomic_write(run_dir / TRAINING_INPUTS, json.dumps({"data_hashes": splits.source_hashes,
                                                        "config": _as_json(config.to_dict())}, indent=2, sort_keys=True))


def forget_training_inputs(run_dir: Path) -> None:
    (run_dir / TRAINING_INPUTS).unlink(missing_ok=True)


def _training_inputs(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / TRAINING_INPUTS
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # written atomically: unreadable only if damaged outside bench; nothing to check against
    return loaded if isinstance(loaded, dict) else None
