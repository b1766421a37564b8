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
import shutil
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from harness.artefacts import read_jsonl, stored_json
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
# Columns later bench versions added to old stores (`Store._migrate`); a read-only open sees NULL instead.
ADDED_COLUMNS = {"predictions": ("output", "metric_values", "cluster")}
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,200}$")


def _absent_columns(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """(table, column) of ADDED_COLUMNS that this store's tables lack (written by an older bench)."""
    absent = []
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        absent += [(table, column) for column in columns if column not in have]
    return absent


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
    query, so a command that fails validation leaves no trace. A `read_only` store (report, export)
    never writes: it opens the file read-only, so an archived store on a read-only disk still reads."""

    def __init__(self, root: Path, *, read_only: bool = False):
        self.root = root
        self.db_path = root / "bench.sqlite"
        self.read_only = read_only
        self._connection: sqlite3.Connection | None = None
        self._missing_columns: frozenset[str] = frozenset()

    @classmethod
    def existing(cls, results: str | None, *, read_only: bool = False) -> Store:
        """The store under --results (or BENCH_RESULTS, or ./results) for commands that only read
        or add to earlier runs: a missing one is an error, not a new empty store."""
        root = results_dir(results)
        if not (root / "bench.sqlite").is_file():
            raise BenchError(f"no results store at {root}/bench.sqlite; run `bench run` first or pass --results DIR")
        return cls(root, read_only=read_only)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = None
            try:
                if self.read_only:
                    connection = self._open_read_only()
                else:
                    self.root.mkdir(parents=True, exist_ok=True)
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

    def _open_read_only(self) -> sqlite3.Connection:
        """`mode=ro`; on a folder bench cannot write (an archived store), where SQLite could not
        create the WAL index beside the file, `immutable=1`, unless a WAL journal holds commits the
        file lacks (a store copied while in use), which only a writable folder can read."""
        from urllib.parse import quote

        uri = f"file:{quote(str(self.db_path.absolute()))}?mode=ro"
        wal = self.db_path.with_name(self.db_path.name + "-wal")
        if not os.access(self.root, os.W_OK):
            if wal.is_file() and wal.stat().st_size:
                raise BenchError(f"the results store {self.db_path} has unmerged commits in {wal.name} and its folder "
                                 "is read-only: copy the folder to a writable disk and pass --results COPY")
            uri += "&immutable=1"
        connection = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
        connection.execute("PRAGMA busy_timeout=60000")
        connection.execute("PRAGMA query_only=1")
        self._missing_columns = frozenset(column for _, column in _absent_columns(connection))
        return connection

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Stores written before text tasks existed lack the output columns, and stores written
        before clustered errors the cluster column: add them in place (old rows keep NULL there,
        read as "no cluster ids stored")."""
        for table, column in _absent_columns(db):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")

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

    def discard_run(self, run_id: str) -> bool:
        """Forget a run (`--force-new`): its rows and its folder, in steps a crash cannot leave half
        done. The folder is renamed aside first (one atomic rename), then the rows go in one
        transaction, then the renamed folder is deleted; a discard cut short anywhere is finished
        by `finish_discard`, which every resume check calls first. The caller holds the run lock.
        True when there was something to discard."""
        self.finish_discard(run_id)
        folder = self.run_dir(run_id)
        if folder.exists():
            folder.rename(self._discarded(run_id))
        elif self.run_config(run_id) is None and not self.stages_of(run_id):
            return False
        self._delete_rows(run_id)
        shutil.rmtree(self._discarded(run_id), ignore_errors=True)
        return True

    def finish_discard(self, run_id: str) -> None:
        """Complete a discard that a crash interrupted (its folder is still renamed aside). The rows
        go only while no new run folder exists: a run started after they were already deleted
        writes its folder before its first row."""
        trash = self._discarded(run_id)
        if not trash.exists():
            return
        if not self.run_dir(run_id).exists():
            self._delete_rows(run_id)
        shutil.rmtree(trash, ignore_errors=True)

    def _delete_rows(self, run_id: str) -> None:
        with self._transaction() as db:
            for table in ("predictions", "stages", "judgments", "runs"):
                db.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))

    def _discarded(self, run_id: str) -> Path:
        folder = self.run_dir(run_id)
        return folder.with_name(f".{folder.name}.discarded")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _json(self, text: str | None, run_id: str, what: str) -> Any:
        """A JSON column of run `run_id`'s rows; a damaged one names the row and the fix."""
        return stored_json(text, f"{what} of run {run_id} in the results store {self.db_path}",
                           f"re-run the command that made run {run_id} (`bench run` redoes a stage whose stored "
                           "record is damaged), or restore the store from a copy")

    def run_with_stage_info(self, stage: str, field: str, value: str, *, other_than: str) -> str | None:
        """The run whose complete `stage` records `field` = `value` in its info, first finished first."""
        row = self._db.execute("SELECT run_id FROM stages WHERE stage=? AND run_id<>? AND json_extract(info, ?)=? "
                               "ORDER BY finished_at LIMIT 1", (stage, other_than, f"$.{field}", value)).fetchone()
        return row[0] if row else None

    def stage(self, run_id: str, stage: str) -> StageRecord | None:
        """The stored stage; a record that is stored but damaged raises DamagedFile."""
        row = self._db.execute("SELECT seconds, metrics, info FROM stages WHERE run_id=? AND stage=?",
                               (run_id, stage)).fetchone()
        if row is None:
            return None
        return StageRecord(run_id, stage, row[0], self._json(row[1], run_id, f"the {stage} metrics"),
                           self._json(row[2], run_id, f"the {stage} info"))

    def finished_at(self, run_id: str, stage: str) -> float | None:
        """When the stage was stored (Unix time), None if it was not."""
        row = self._db.execute("SELECT finished_at FROM stages WHERE run_id=? AND stage=?", (run_id, stage)).fetchone()
        return float(row[0]) if row else None

    def predictions(self, run_id: str, stage: str) -> list[Prediction]:
        added = ", ".join("NULL" if column in self._missing_columns else column
                          for column in ADDED_COLUMNS["predictions"])
        rows = self._db.execute(f"SELECT example_id, gold, label, scores, {added} FROM predictions "
                                "WHERE run_id=? AND stage=? ORDER BY idx", (run_id, stage)).fetchall()
        what = f"the {stage} predictions"
        return [Prediction(r[0], r[1], r[2], tuple(self._json(r[3], run_id, what)), r[4],
                           self._json(r[5], run_id, what) if r[5] else None, r[6]) for r in rows]

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
        return [dict(run_id=run_id, judge=r[0], setup=r[1], metrics=self._json(r[2], run_id, f"judgment {r[0]}"),
                     info=self._json(r[3], run_id, f"judgment {r[0]}")) for r in rows]

    def runs(self, task: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT run_id, task, model, method, preset, config FROM runs"
        rows = self._db.execute(query + (" WHERE task=?" if task else "") + " ORDER BY created_at",
                                (task,) if task else ()).fetchall()
        return [dict(run_id=r[0], task=r[1], model=r[2], method=r[3], preset=r[4],
                     config=self._json(r[5], r[0], "the config")) for r in rows]

    def run_config(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT config FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return self._json(row[0], run_id, "the config") if row else None

    def stages_of(self, run_id: str) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT stage FROM stages WHERE run_id=? ORDER BY finished_at",
                                               (run_id,))]

    def curves(self, run_id: str) -> list[dict[str, Any]]:
        """The fine-tuning curves written with the finetune stage (loss and lr per step, validation
        metrics per evaluation); empty when the run was not fine-tuned or recorded none."""
        path = self.run_dir(run_id) / "finetune" / "curves.jsonl"
        if not path.is_file():
            return []
        return read_jsonl(path, "restore it from a copy, or delete it: reports then show no training curves for "
                                f"run {run_id}")
