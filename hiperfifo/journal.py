"""The durable queue: accepted URLs kept in SQLite until their transfer.done is logged.

Owns the state directory's files (`queue.sqlite3` in WAL mode, and a `lock`
that keeps a second daemon out), the schema, and batching: accepted URLs are
written in one transaction per FIFO read, before the daemon logs
transfer.added; finished ids are collected and deleted in one transaction per
loop iteration, after transfer.done is logged, so a crash in between repeats
a transfer rather than losing one. The queue holds URLs with their
passwords: every file here is 0600 and a directory it creates 0700, whatever
the umask; `warning()` says when others may look into the directory. Imports
no pyuv and does not log: every failure raises JournalError and the daemon
decides (it refuses input while the disk is full). `NullJournal` stands in
without --state-dir, so the daemon never asks whether there is a journal.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

DATABASE = "queue.sqlite3"
LOCK = "lock"
FILE_MODE = 0o600  # the queue, its -wal and -shm, the lock: URLs may carry passwords
DIR_MODE = 0o700  # a state directory the daemon creates
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

    durable = True  # what it records survives the process (NullJournal: nothing does)

    def __init__(self, directory: Path) -> None:
        import sqlite3  # loaded by the first Journal: none without --state-dir

        self.directory = directory
        self.path = directory / DATABASE
        self._lock_fd = _lock(directory)
        self._finished: list[tuple[int]] = []
        try:
            _private_files(directory)
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            os.close(self._lock_fd)
            raise JournalError(f"--state-dir {directory}: {DATABASE}: {exc}") from exc
        try:
            self._setup()
        except sqlite3.Error as exc:
            self.close()
            raise JournalError(f"--state-dir {directory}: {DATABASE}: {exc}") from exc

    def _setup(self) -> None:
        import sqlite3  # loaded by the first Journal: none without --state-dir

        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode {mode})")
        # NORMAL in WAL mode: a commit survives the process being killed (the WAL is
        # written before COMMIT returns); only an OS crash or power loss can lose the
        # last transactions. FULL would fsync once per loop iteration.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def warning(self) -> str | None:
        """What is unsafe about who may look into the state directory, or None."""
        mode = stat.S_IMODE(os.stat(self.directory).st_mode)
        if not mode & stat.S_IRWXO:
            return None
        return (
            f"--state-dir {self.directory}: other users may list or enter it (mode {mode:04o});"
            f" its files are {FILE_MODE:04o}, but it holds the queued URLs with their"
            f" passwords: chmod o-rwx it"
        )

    def __repr__(self) -> str:
        return f"<Journal {self.path} finished-unflushed={len(self._finished)}>"

    def next_id(self) -> int:
        """The first transfer id never used in this state directory."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
        return int(row[0]) + 1 if row else 1

    def unfinished(self) -> list[Row]:
        """(id, url) of every URL recorded and not finished, oldest first."""
        import sqlite3  # loaded by the first Journal: none without --state-dir

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
        import sqlite3  # loaded by the first Journal: none without --state-dir

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


def _private_files(directory: Path) -> None:
    """The database, its -wal and -shm exist and are FILE_MODE before SQLite opens them.

    SQLite creates the database with 0644 & ~umask and gives -wal/-shm the
    database's mode, so creating it 0600 first covers all three; files left by
    an earlier version are tightened.
    """
    path = directory / DATABASE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        try:
            os.chmod(f"{path}{suffix}", FILE_MODE, follow_symlinks=False)
        except FileNotFoundError:
            pass


def _make_directory(directory: Path) -> None:
    """Create `directory` DIR_MODE whatever the umask (its parents as mkdir -p does)."""
    try:
        directory.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        return
    os.chmod(directory, DIR_MODE)


def _lock(directory: Path) -> int:
    """Create `directory` if needed and take its lock; JournalError if another daemon holds it."""
    try:
        _make_directory(directory)
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
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


class NullJournal:
    """No --state-dir: nothing is recorded, nothing survives the process (ids from 1)."""

    durable = False
    unflushed = 0

    def __repr__(self) -> str:
        return "<NullJournal>"

    def warning(self) -> str | None:
        return None

    def next_id(self) -> int:
        return 1

    def unfinished(self) -> list[Row]:
        return []

    def record(self, rows: Sequence[Row]) -> None:
        pass

    def finish(self, transfer_id: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
