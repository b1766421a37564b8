"""Results store: one SQLite file (WAL) indexing runs and stages, plus one folder per run.

A stage is complete when, and only when, its row is committed. Its files (metrics, predictions,
curves, checkpoint) are written first, each atomically (temp file + rename); the row commits
last, in one transaction with its predictions. A crash anywhere leaves either a complete stage or
no trace of it in the database, so re-running the same command redoes only unfinished stages.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from harness.errors import BenchError
from harness.faults import reached
from harness.types import Prediction

RESULTS_ENV = "BENCH_RESULTS"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, task TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL,
    preset TEXT NOT NULL, config TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS stages (
    run_id TEXT NOT NULL REFERENCES runs(run_id), stage TEXT NOT NULL, seconds REAL NOT NULL,
    metrics TEXT NOT NULL, info TEXT NOT NULL, finished_at REAL NOT NULL,
    PRIMARY KEY (run_id, stage));
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, idx INTEGER NOT NULL, example_id TEXT NOT NULL,
    gold INTEGER NOT NULL, label INTEGER, scores TEXT NOT NULL, output TEXT, metric_values TEXT, cluster TEXT,
    PRIMARY KEY (run_id, stage, idx));
CREATE TABLE IF NOT EXISTS judgments (
    run_id TEXT NOT NULL, judge TEXT NOT NULL, setup TEXT NOT NULL, metrics TEXT NOT NULL, info TEXT NOT NULL,
    finished_at REAL NOT NULL, PRIMARY KEY (run_id, judge, setup));
"""
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,200}$")


@dataclass(frozen=True)
class StageRecord:
    run_id: str
    stage: str
    seconds: float
    metrics: dict[str, Any]
    info: dict[str, Any]


def results_dir(option: str | None) -> Path:
    return Path(option or os.environ.get(RESULTS_ENV) or "results")


def atomic_write(path: Path, content: str | bytes) -> None:
    """Write to a temp file beside `path`, then rename: readers see the old file or the whole new
    one, and a failed write leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content.encode("utf-8") if isinstance(content, str) else content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp creates 0600; results are meant to be shared and read
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _prediction_row(p: Prediction) -> dict[str, Any]:
    row: dict[str, Any] = {"id": p.example_id}
    if p.output is None:
        row.update(gold=p.gold, pred=p.label)
    else:
        row["output"] = p.output
    row["scores"] = p.scores
    if p.values is not None:
        row["values"] = p.values
    if p.cluster is not None:
        row["cluster"] = p.cluster
    return row


# SQLite's primary result codes of a store file this process cannot use at all, whoever holds it.
UNUSABLE_STORE = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_CANTOPEN,
                            sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_PERM, sqlite3.SQLITE_FULL})


class Store:
    """The SQLite index plus run folders under `root`. Nothing is created on disk until the first
    query, so a command that fails validation leaves no trace."""

    def __init__(self, root: Path):
        self.root = root
        self.db_path = root / "bench.sqlite"
        self._connection: sqlite3.Connection | None = None

    @classmethod
    def existing(cls, results: str | None) -> Store:
        """The store under --results (or BENCH_RESULTS, or ./results) for commands that only read
        or add to earlier runs: a missing one is an error, not a new empty store."""
        root = results_dir(results)
        if not (root / "bench.sqlite").is_file():
            raise BenchError(f"no results store at {root}/bench.sqlite; run `bench run` first or pass --results DIR")
        return cls(root)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self.root.mkdir(parents=True, exist_ok=True)
            connection = None
            try:
                connection = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA busy_timeout=60000")
                connection.executescript(SCHEMA)
                self._migrate(connection)
            except sqlite3.DatabaseError as exc:  # not a database, damaged, or on a read-only disk
                if connection is not None:
                    connection.close()
                if (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF not in UNUSABLE_STORE:
                    raise  # a store another bench holds, or wrong SQL here: "move it aside" would be bad advice
                raise BenchError(f"cannot use the results store {self.db_path}: {exc}; move it aside or pass "
                                 "--results DIR for another store") from None
            self._connection = connection
        return self._connection

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Stores written before text tasks existed lack the output columns, and stores written
        before clustered errors the cluster column: add them in place (old rows keep NULL there,
        read as "no cluster ids stored")."""
        have = {row[1] for row in db.execute("PRAGMA table_info(predictions)")}
        for column in ("output", "metric_values", "cluster"):
            if column not in have:
                db.execute(f"ALTER TABLE predictions ADD COLUMN {column} TEXT")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def run_dir(self, run_id: str) -> Path:
        if not SAFE_ID.match(run_id):
            raise BenchError(f"invalid run id {run_id!r}: letters, digits, '.', '_', '=', '-' only")
        return self.root / "runs" / run_id

    @contextmanager
    def run_lock(self, run_id: str, log: Callable[[str], None]) -> Iterator[None]:
        """Exclusive use of one run across processes: a second `bench` on the same run waits, then
        finds the stages the first one completed and skips them (never trains into the same
        checkpoint folder twice at once). An OS file lock: released even by a kill -9."""
        import fcntl

        path = self.root / "locks" / f"{self.run_dir(run_id).name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"  waiting: another bench process is working on run {run_id}")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def stage(self, run_id: str, stage: str) -> StageRecord | None:
        row = self._db.execute("SELECT seconds, metrics, info FROM stages WHERE run_id=? AND stage=?",
                               (run_id, stage)).fetchone()
        return StageRecord(run_id, stage, row[0], json.loads(row[1]), json.loads(row[2])) if row else None

    def finished_at(self, run_id: str, stage: str) -> float | None:
        """When the stage was stored (Unix time), None if it was not."""
        row = self._db.execute("SELECT finished_at FROM stages WHERE run_id=? AND stage=?", (run_id, stage)).fetchone()
        return float(row[0]) if row else None

    def predictions(self, run_id: str, stage: str) -> list[Prediction]:
        rows = self._db.execute("SELECT example_id, gold, label, scores, output, metric_values, cluster FROM "
                                "predictions WHERE run_id=? AND stage=? ORDER BY idx", (run_id, stage)).fetchall()
        return [Prediction(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], json.loads(r[5]) if r[5] else None,
                           r[6]) for r in rows]

    def complete_stage(self, run_id: str, stage: str, *, config: dict[str, Any], seconds: float,
                       metrics: dict[str, Any], info: dict[str, Any],
                       predictions: Sequence[Prediction] = (), curves: Sequence[dict[str, Any]] = ()) -> StageRecord:
        """Write the stage's files, then commit its row and predictions in one transaction."""
        folder = self.run_dir(run_id)
        atomic_write(folder / "config.json", json.dumps(config, indent=2, sort_keys=True, default=str))
        stage_dir = folder / stage.replace(":", "-")
        atomic_write(stage_dir / "metrics.json", json.dumps({"metrics": metrics, "info": info}, indent=2, default=str))
        if predictions:
            atomic_write(stage_dir / "predictions.jsonl", "".join(json.dumps(_prediction_row(p)) + "\n"
                                                                  for p in predictions))
        if curves:
            atomic_write(stage_dir / "curves.jsonl", "".join(json.dumps(point) + "\n" for point in curves))
        reached(f"{stage.replace(':', '-')}-files", 1)
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?)",
                       (run_id, config["task"], config["model"], config["method"], config["preset"],
                        json.dumps(config, sort_keys=True, default=str), time.time()))
            db.execute("DELETE FROM predictions WHERE run_id=? AND stage=?", (run_id, stage))
            db.executemany("INSERT INTO predictions (run_id, stage, idx, example_id, gold, label, scores, output, "
                           "metric_values, cluster) VALUES (?,?,?,?,?,?,?,?,?,?)", [
                (run_id, stage, i, p.example_id, p.gold, p.label, json.dumps(p.scores), p.output,
                 json.dumps(p.values) if p.values is not None else None, p.cluster)
                for i, p in enumerate(predictions)])
            db.execute("INSERT OR REPLACE INTO stages VALUES (?,?,?,?,?,?)",
                       (run_id, stage, seconds, json.dumps(metrics, default=str), json.dumps(info, default=str),
                        time.time()))
        return StageRecord(run_id, stage, seconds, metrics, info)

    def complete_judgment(self, run_id: str, judge: str, setup: str, *, metrics: dict[str, Any],
                          info: dict[str, Any], items: Sequence[dict[str, Any]]) -> None:
        """Per-item judgments go to the run folder first (atomically); the summary row commits last."""
        slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", f"{judge}__{setup}").strip("-")[:180]
        atomic_write(self.run_dir(run_id) / "judge" / f"{slug}.jsonl",
                     "".join(json.dumps(item, default=str) + "\n" for item in items))
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO judgments VALUES (?,?,?,?,?,?)",
                       (run_id, judge, setup, json.dumps(metrics, default=str),
                        json.dumps({**info, "items_file": f"judge/{slug}.jsonl"}, default=str), time.time()))

    def judgments(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT judge, setup, metrics, info FROM judgments WHERE run_id=? ORDER BY finished_at",
                                (run_id,)).fetchall()
        return [dict(run_id=run_id, judge=r[0], setup=r[1], metrics=json.loads(r[2]), info=json.loads(r[3]))
                for r in rows]

    def runs(self, task: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT run_id, task, model, method, preset, config FROM runs"
        rows = self._db.execute(query + (" WHERE task=?" if task else "") + " ORDER BY created_at",
                                (task,) if task else ()).fetchall()
        return [dict(run_id=r[0], task=r[1], model=r[2], method=r[3], preset=r[4], config=json.loads(r[5]))
                for r in rows]

    def run_config(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT config FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def stages_of(self, run_id: str) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT stage FROM stages WHERE run_id=? ORDER BY finished_at",
                                               (run_id,))]

    def curves(self, run_id: str) -> list[dict[str, Any]]:
        """The fine-tuning curves written with the finetune stage (loss and lr per step, validation
        metrics per evaluation); empty when the run was not fine-tuned or recorded none."""
        path = self.run_dir(run_id) / "finetune" / "curves.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
