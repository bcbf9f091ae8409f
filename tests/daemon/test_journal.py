"""journal.py on its own: record, finish, flush, resume order, ids across reopen, the lock."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from hiperfifo.journal import DATABASE, Journal, JournalError


def test_unfinished_rows_survive_a_reopen_oldest_first(tmp_path: Path) -> None:
    """Recorded and not finished: returned after reopening, in id order; ids go on from there."""
    journal = Journal(tmp_path / "state")
    assert journal.next_id() == 1
    journal.record([(1, "http://a/1"), (2, "http://a/2"), (3, "http://a/3")])
    journal.record([(4, "http://a/4")])
    journal.finish(2)
    journal.flush()
    journal.close()
    again = Journal(tmp_path / "state")
    assert again.unfinished() == [(1, "http://a/1"), (3, "http://a/3"), (4, "http://a/4")]
    assert again.next_id() == 5
    again.close()


def test_ids_are_not_reused_after_everything_finished(tmp_path: Path) -> None:
    """Once every row is finished, the next id still follows the highest ever used."""
    journal = Journal(tmp_path)
    journal.record([(7, "http://a/")])
    journal.finish(7)
    journal.close()  # close flushes
    again = Journal(tmp_path)
    assert again.unfinished() == []
    assert again.next_id() == 8
    again.close()


def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    """The database file uses write-ahead logging."""
    Journal(tmp_path).close()
    # `with sqlite3.connect()` commits but does not close: 3.13 warns (ResourceWarning)
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_second_journal_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    """Two daemons on one state directory would run every URL twice: the lock refuses it."""
    first = Journal(tmp_path)
    with pytest.raises(JournalError, match="in use by another hiperfifo"):
        Journal(tmp_path)
    first.close()
    Journal(tmp_path).close()


def test_failed_record_keeps_nothing_and_raises(tmp_path: Path) -> None:
    """A record that cannot be written (a duplicate id here) raises JournalError, keeps nothing."""
    journal = Journal(tmp_path)
    journal.record([(1, "http://a/1")])
    with pytest.raises(JournalError, match="writing"):
        journal.record([(2, "http://a/2"), (1, "http://a/dup")])
    assert journal.unfinished() == [(1, "http://a/1")]
    journal.close()


def test_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A state-dir path that is a regular file: JournalError naming --state-dir."""
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(JournalError, match="--state-dir"):
        Journal(path)


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277], ids=oct)
def test_files_are_0600_and_a_created_directory_0700_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    """queue.sqlite3, its -wal and -shm and the lock are 0600; the directory made is 0700
    (queued URLs may carry passwords; the log redacts them, the state must not show them)."""
    state = tmp_path / "parent" / "state"
    old = os.umask(umask)
    try:
        journal = Journal(state)
        journal.record([(1, "http://carol:s3cret@127.0.0.1/")])
        modes = _modes(state)
        journal.close()
    finally:
        os.umask(old)
    assert {DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", "lock"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_files_left_readable_by_an_earlier_run_are_made_0600(tmp_path: Path) -> None:
    """A state directory from before this rule (files 0644) is tightened on open."""
    state = tmp_path / "state"
    old = os.umask(0o022)
    try:
        state.mkdir(mode=0o700)
        db = sqlite3.connect(state / DATABASE)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        wal = state / f"{DATABASE}-wal"
        (state / "lock").touch(0o644)
        journal = Journal(state)
        db.close()
        journal.record([(1, "http://127.0.0.1/")])
        modes = _modes(state)
        journal.close()
    finally:
        os.umask(old)
    assert wal.name in modes
    assert set(modes.values()) == {0o600}, modes


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o700, False), (0o750, False), (0o755, True), (0o701, True)],
    ids=["0700", "0750", "0755", "0701"],
)
def test_a_directory_others_may_enter_is_warned_about(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    """warning() names the mode when other users have any access; group access is the admin's."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    journal = Journal(state)
    try:
        warning = journal.warning()
    finally:
        journal.close()
    assert (warning is not None) == warned
    if warned:
        assert f"mode {mode:04o}" in str(warning)
