"""The durable queue: accepted URLs kept in SQLite until their transfer.done is logged.

Owns the state directory's files (`queue.sqlite3` in WAL mode, and a `lock`
that keeps a second daemon out), the schema, and batching: accepted URLs are
written in one transaction per FIFO read, before the daemon logs
transfer.added; finished ids are collected and deleted in one transaction per
loop iteration, after transfer.done is logged, so a crash in between repeats
a transfer rather than losing one. Imports no pyuv and does not log: every
failure raises JournalError and the daemon decides (it refuses input while
the disk is full).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

DATABASE = "queue.sqlite3"
LOCK = "lock"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the daemon's transfer id, kept across restarts
    url TEXT NOT NULL,
    accepted REAL NOT NULL                 -- Unix time the URL was read from the FIFO
)
"""

Row = tuple[int, str]


class JournalError(Exception):
    """The state directory or its database cannot be used or written (full, unwritable)."""


class Journal:
    """The unfinished URLs of this state directory, oldest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / DATABASE
        self._lock_fd = _lock(directory)
        self._finished: list[tuple[int]] = []
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            os.close(self._lock_fd)
            raise JournalError(f"--state-dir {directory}: {DATABASE}: {exc}") from exc
        try:
            self._setup()
        except sqlite3.Error as exc:
            self.close()
            raise JournalError(f"--state-dir {directory}: {DATABASE}: {exc}") from exc

    def _setup(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode {mode})")
        # NORMAL in WAL mode: a commit survives the process being killed (the WAL is
        # written before COMMIT returns); only an OS crash or power loss can lose the
        # last transactions. FULL would fsync once per loop iteration.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"<Journal {self.path} finished-unflushed={len(self._finished)}>"

    def next_id(self) -> int:
        """The first transfer id never used in this state directory."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
        return int(row[0]) + 1 if row else 1

    def unfinished(self) -> list[Row]:
        """(id, url) of every URL recorded and not finished, oldest first."""
        try:
            rows = self._db.execute("SELECT id, url FROM queue ORDER BY id").fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"reading {self.path}: {exc}") from exc
        return [(int(i), str(u)) for i, u in rows]

    def record(self, rows: Sequence[Row]) -> None:
        """Write accepted URLs in one committed transaction; JournalError (nothing kept) if not."""
        if not rows:
            return
        now = time.time()
        self._write(
            "INSERT INTO queue (id, url, accepted) VALUES (?, ?, ?)",
            [(transfer_id, url, now) for transfer_id, url in rows],
        )

    def finish(self, transfer_id: int) -> None:
        """Note that `transfer_id` is done; written by the next flush()."""
        self._finished.append((transfer_id,))

    @property
    def unflushed(self) -> int:
        """Finished ids not yet written."""
        return len(self._finished)

    def flush(self) -> None:
        """Delete the finished ids in one transaction; kept for the next try on JournalError."""
        if not self._finished:
            return
        self._write("DELETE FROM queue WHERE id = ?", self._finished)
        self._finished = []

    def _write(self, sql: str, params: Sequence[tuple[object, ...]]) -> None:
        try:
            self._db.execute("BEGIN")
            self._db.executemany(sql, params)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise JournalError(f"writing {self.path}: {exc}") from exc

    def close(self) -> None:
        """Flush what can be flushed, close the database, release the directory."""
        try:
            self.flush()
        except JournalError:
            pass  # the unflushed ones run again on the next start: at least once, never lost
        self._db.close()
        os.close(self._lock_fd)


def _lock(directory: Path) -> int:
    """Create `directory` if needed and take its lock; JournalError if another daemon holds it."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise JournalError(f"--state-dir {directory}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise JournalError(
            f"--state-dir {directory} is in use by another hiperfifo (its {LOCK} is held)"
        ) from exc
    return fd
