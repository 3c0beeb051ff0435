"""The journal: the daemon's durable memory of every micrograph seen and every result committed (SQLite).

It decides *what* has been done, so that across ``kill -9`` at any moment nothing is lost and nothing is
picked twice.  A result is keyed by (content identity, model version, generation): the identity is the
SHA-256 of the file's bytes, so a micrograph copied under another name is not picked again, and
``generation`` is raised only by an explicit reprocess.  The order that makes "exactly once" hold
(architecture.md): commit the result (the full pick message, with its journal sequence number), then
publish it, then mark it published.  After a crash, committed-but-unpublished results are re-sent with
their original sequence number and key, so subscribers recognise a re-send; micrographs seen but not
committed are queued again.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed transaction survives a process kill and a
power cut.  One connection, guarded by a lock, is shared by the daemon's threads.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS micrographs (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER,
    mtime REAL,
    identity TEXT,
    state TEXT NOT NULL,
    error TEXT,
    landed REAL NOT NULL,
    complete REAL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS micrographs_state ON micrographs(state);
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    micrograph_id INTEGER NOT NULL REFERENCES micrographs(id),
    identity TEXT NOT NULL,
    model_version TEXT NOT NULL,
    generation INTEGER NOT NULL,
    message BLOB NOT NULL,
    committed REAL NOT NULL,
    published REAL,
    timings TEXT,
    UNIQUE(identity, model_version, generation)
);
CREATE INDEX IF NOT EXISTS results_unpublished ON results(published) WHERE published IS NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Micrograph states.  'waiting': not yet whole; 'queued': whole, waiting to be picked; 'done': a result is
# committed for the current generation; 'failed': reported once, not retried unless the file changes;
# 'duplicate': same content as a micrograph already picked.
STATES = ("waiting", "queued", "done", "failed", "duplicate")


@dataclass(frozen=True)
class MicrographRecord:
    """A micrograph row."""

    id: int
    path: str
    size: int | None
    mtime: float | None
    identity: str | None
    state: str
    error: str | None
    landed: float
    complete: float | None


@dataclass(frozen=True)
class ResultRecord:
    """A committed result: its journal sequence number and the pick message committed with it."""

    seq: int
    micrograph_id: int
    identity: str
    model_version: str
    generation: int
    message: dict
    published: float | None


def _pack(message: dict) -> bytes:
    return zlib.compress(json.dumps(message, separators=(",", ":")).encode(), 3)


def _unpack(blob: bytes) -> dict:
    return json.loads(zlib.decompress(blob))


class Journal:
    """The SQLite journal.  Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, *, clock=time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------------------------ micrographs

    def observe(self, path: str, size: int | None, mtime: float | None) -> MicrographRecord:
        """Record that ``path`` exists (new: state 'waiting').  A known path whose size or mtime changed
        after it failed goes back to 'waiting' (the file was rewritten); otherwise the row is unchanged."""
        now = self._clock()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT * FROM micrographs WHERE path = ?", (path,)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO micrographs (path, size, mtime, state, landed, updated) "
                                 "VALUES (?, ?, ?, 'waiting', ?, ?)", (path, size, mtime, now, now))
            elif row[5] == "failed" and (row[2], row[3]) != (size, mtime):
                self._db.execute("UPDATE micrographs SET size = ?, mtime = ?, state = 'waiting', error = NULL, "
                                 "updated = ? WHERE id = ?", (size, mtime, now, row[0]))
            return self._micrograph_where("path = ?", (path,))

    def set_state(self, micrograph_id: int, state: str, *, error: str | None = None,
                  identity: str | None = None, complete: float | None = None) -> None:
        """Move a micrograph to ``state`` (one of :data:`STATES`), optionally with an error, identity or
        completion time."""
        if state not in STATES:
            raise ValueError(f"unknown micrograph state {state!r}")
        with self._lock, self._db:
            self._db.execute(
                "UPDATE micrographs SET state = ?, error = ?, identity = COALESCE(?, identity), "
                "complete = COALESCE(?, complete), updated = ? WHERE id = ?",
                (state, error, identity, complete, self._clock(), micrograph_id))

    def micrograph(self, micrograph_id: int) -> MicrographRecord | None:
        with self._lock:
            return self._micrograph_where("id = ?", (micrograph_id,))

    def micrographs_in(self, *states: str) -> list[MicrographRecord]:
        """Micrographs in any of ``states``, oldest landing first."""
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM micrographs WHERE state IN ({marks}) ORDER BY landed, id",
                                    states).fetchall()
        return [MicrographRecord(*row[:9]) for row in rows]

    def _micrograph_where(self, where: str, args: tuple) -> MicrographRecord | None:
        row = self._db.execute(f"SELECT * FROM micrographs WHERE {where}", args).fetchone()
        return None if row is None else MicrographRecord(*row[:9])

    # ---------------------------------------------------------------------------------------- results

    def find_result(self, identity: str, model_version: str, generation: int) -> ResultRecord | None:
        """The result already committed for this key, if any."""
        with self._lock:
            row = self._db.execute("SELECT * FROM results WHERE identity = ? AND model_version = ? AND "
                                   "generation = ?", (identity, model_version, generation)).fetchone()
        return None if row is None else _result(row)

    def commit_result(self, micrograph_id: int, identity: str, model_version: str, generation: int,
                      build_message, timings: dict | None = None) -> ResultRecord:
        """Commit a result once per key, atomically with the micrograph's move to 'done'.

        ``build_message(seq)`` returns the pick message for the sequence number this commit gets, so the
        committed message carries its own ``seq``.  If the key is already committed (a crash came between
        commit and the caller's bookkeeping), the existing result is returned unchanged.
        """
        now = self._clock()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT * FROM results WHERE identity = ? AND model_version = ? AND "
                                   "generation = ?", (identity, model_version, generation)).fetchone()
            if row is None:
                cursor = self._db.execute(
                    "INSERT INTO results (micrograph_id, identity, model_version, generation, message, "
                    "committed, timings) VALUES (?, ?, ?, ?, x'', ?, ?)",
                    (micrograph_id, identity, model_version, generation, now, json.dumps(timings or {})))
                seq = cursor.lastrowid
                self._db.execute("UPDATE results SET message = ? WHERE seq = ?", (_pack(build_message(seq)), seq))
                row = self._db.execute("SELECT * FROM results WHERE seq = ?", (seq,)).fetchone()
            self._db.execute("UPDATE micrographs SET state = 'done', identity = ?, error = NULL, updated = ? "
                             "WHERE id = ?", (identity, now, micrograph_id))
            return _result(row)

    def mark_published(self, seq: int) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE results SET published = ? WHERE seq = ? AND published IS NULL",
                             (self._clock(), seq))

    def unpublished(self) -> list[ResultRecord]:
        """Committed results not yet marked published, in sequence order (re-sent after a restart)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM results WHERE published IS NULL ORDER BY seq").fetchall()
        return [_result(row) for row in rows]

    def results_since(self, since: int, limit: int = 500) -> list[ResultRecord]:
        """Results with ``seq > since`` in sequence order, at most ``limit`` (for ``replay``)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM results WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (since, limit)).fetchall()
        return [_result(row) for row in rows]

    def iter_latest_results(self, model_version: str, generation: int = 0, batch: int = 200):
        """The newest result of each micrograph for one model version and generation, in sequence order,
        fetched a batch at a time (a long session's results do not all sit in memory at once)."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT * FROM results WHERE seq > ? AND model_version = ? AND generation = ? AND seq IN "
                    "(SELECT MAX(seq) FROM results WHERE model_version = ? AND generation = ? "
                    "GROUP BY micrograph_id) ORDER BY seq LIMIT ?",
                    (last, model_version, generation, model_version, generation, batch)).fetchall()
            if not rows:
                return
            for row in rows:
                yield _result(row)
            last = rows[-1][0]

    def generation(self, micrograph_id: int) -> int:
        """The current generation for a micrograph: 0, raised by each explicit reprocess."""
        with self._lock:
            value = self._db.execute("SELECT value FROM meta WHERE key = ?",
                                     (f"generation:{micrograph_id}",)).fetchone()
        return int(value[0]) if value else 0

    def bump_generation(self, micrograph_id: int) -> int:
        """Start a new generation (explicit reprocess) and queue the micrograph again."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            key = f"generation:{micrograph_id}"
            value = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            new = (int(value[0]) if value else 0) + 1
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(new)))
            self._db.execute("UPDATE micrographs SET state = 'queued', error = NULL, updated = ? WHERE id = ?",
                             (self._clock(), micrograph_id))
            return new

    def done_without(self, model_version: str) -> list[MicrographRecord]:
        """Micrographs picked ('done') that have no result of ``model_version`` yet (to re-pick with it),
        oldest landing first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM micrographs m WHERE state = 'done' AND NOT EXISTS (SELECT 1 FROM results r "
                "WHERE r.micrograph_id = m.id AND r.model_version = ?) ORDER BY landed, id",
                (model_version,)).fetchall()
        return [MicrographRecord(*row[:9]) for row in rows]

    def count_results(self, model_version: str) -> int:
        """How many micrographs have a result of ``model_version``."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(DISTINCT micrograph_id) FROM results "
                                        "WHERE model_version = ?", (model_version,)).fetchone()[0])

    def get_meta(self, key: str) -> str | None:
        """A value the daemon keeps across restarts (the active model, the training history)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def counts(self) -> dict[str, int]:
        """Micrographs per state, plus results committed and published."""
        with self._lock:
            states = dict(self._db.execute("SELECT state, COUNT(*) FROM micrographs GROUP BY state").fetchall())
            committed, published = self._db.execute(
                "SELECT COUNT(*), COUNT(published) FROM results").fetchone()
        return {**{s: states.get(s, 0) for s in STATES}, "results": committed, "published": published}

    def last_seq(self) -> int:
        with self._lock:
            value = self._db.execute("SELECT MAX(seq) FROM results").fetchone()[0]
        return int(value or 0)


def _result(row: tuple) -> ResultRecord:
    return ResultRecord(seq=row[0], micrograph_id=row[1], identity=row[2], model_version=row[3],
                        generation=row[4], message=_unpack(row[5]), published=row[7])
