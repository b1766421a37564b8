"""A persistent judgment cache: one SQLite file beside the results store.

Keyed by a hash of (judge, template version, rendered prompt, sample index, attempt), so a re-run
or a run resumed after a crash replays every answer already paid for. Only replies the API
actually returned are kept; failures are not, so they are tried again next time. Keys are never
stored (the judge id has none), and the file is written in WAL mode, one commit per reply.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from harness.judging.backend import Reply

SCHEMA = """CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY, judge TEXT NOT NULL, template TEXT NOT NULL, text TEXT NOT NULL,
    input_tokens INTEGER, output_tokens INTEGER, created_at REAL NOT NULL)"""


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


class JudgeCache:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()  # one connection shared by the engine's worker threads
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=60000")
            self._db.execute(SCHEMA)
        return self._db

    def get(self, key: str) -> Reply | None:
        with self._lock:
            row = self._connect().execute("SELECT text, input_tokens, output_tokens FROM replies WHERE key=?",
                                          (key,)).fetchone()
        return Reply(row[0], row[1], row[2]) if row else None

    def put(self, key: str, judge: str, template: str, reply: Reply) -> None:
        with self._lock:
            self._connect().execute("INSERT OR REPLACE INTO replies VALUES (?,?,?,?,?,?,?)",
                                    (key, judge, template, reply.text, reply.input_tokens, reply.output_tokens,
                                     time.time()))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
