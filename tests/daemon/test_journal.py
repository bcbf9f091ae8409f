"""journal.py on its own: record, finish, flush, resume order, ids across reopen, the lock."""

from __future__ import annotations

import sqlite3
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
    with sqlite3.connect(tmp_path / DATABASE) as db:
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
