"""output.py: safe names, temp-then-rename, no clobbering, write failures kept for the log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hiperfifo.output import DirectoryOutput, Output, safe_name


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://h/a/b/report.pdf", "report.pdf"),
        ("http://h/", "index.html"),
        ("http://h", "index.html"),
        ("http://h/../../etc/passwd", "passwd"),
        ("http://h/x/..", "index.html"),
        ("http://h/.bashrc", "bashrc"),
        ("http://h/a%2F..%2Fb", "a_2F.._2Fb"),
        ("http://h/sp ace;rm -rf", "sp_ace_rm_-rf"),
        ("http://h/dir/?q=1", "index.html"),
    ],
)
def test_safe_name_is_a_plain_visible_file_name(url: str, name: str) -> None:
    """Names come from the last path segment, with only [A-Za-z0-9._-] and no leading dot."""
    assert safe_name(url) == name


def test_safe_name_is_bounded() -> None:
    """A very long segment gives a name of at most 200 characters."""
    assert len(safe_name("http://h/" + "a" * 5000)) == 200


def test_body_appears_only_when_complete(tmp_path: Path) -> None:
    """While writing, only a hidden .part exists; finish(ok) renames it to the final name."""
    out = DirectoryOutput(tmp_path)
    sink = out.sink(1, "http://h/file.txt")
    assert sink.write(b"hello ") == 6
    assert not (tmp_path / "file.txt").exists()
    assert [p.name.startswith(".") for p in tmp_path.iterdir()] == [True]
    assert sink.write(b"world") == 5
    assert sink.finish(True)
    assert (tmp_path / "file.txt").read_bytes() == b"hello world"
    assert sink.path == str(tmp_path / "file.txt")
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]
    out.close()


def test_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    """Same name three times (one pre-existing): suffixes .1 and .2, nothing replaced."""
    (tmp_path / "a.txt").write_bytes(b"old")
    out = DirectoryOutput(tmp_path)
    for body in (b"one", b"two"):
        sink = out.sink(1 if body == b"one" else 2, "http://h/a.txt")
        sink.write(body)
        assert sink.finish(True)
    assert (tmp_path / "a.txt").read_bytes() == b"old"
    assert (tmp_path / "a.txt.1").read_bytes() == b"one"
    assert (tmp_path / "a.txt.2").read_bytes() == b"two"
    out.close()


def test_failed_transfer_leaves_nothing(tmp_path: Path) -> None:
    """finish(False) removes the partial temporary file."""
    out = DirectoryOutput(tmp_path)
    sink = out.sink(1, "http://h/a.txt")
    sink.write(b"partial")
    sink.finish(False)
    assert list(tmp_path.iterdir()) == []
    out.close()


def test_empty_body_still_makes_a_file(tmp_path: Path) -> None:
    """A complete transfer with no body bytes gives an empty file."""
    out = DirectoryOutput(tmp_path)
    sink = out.sink(1, "http://h/empty")
    assert sink.finish(True)
    assert (tmp_path / "empty").read_bytes() == b""
    out.close()


def test_vanished_directory_fails_the_write_not_the_process(tmp_path: Path) -> None:
    """When DIR is gone, write() returns 0 (a short count) and keeps the error text."""
    target = tmp_path / "out"
    out = DirectoryOutput(target)
    os.rmdir(target)
    sink = out.sink(1, "http://h/a.txt")
    assert sink.write(b"data") == 0
    assert sink.error is not None
    assert "No such file" in sink.error
    assert not sink.finish(True)
    out.close()


def test_discard_takes_everything() -> None:
    """--output discard: every chunk is accepted and no file is named."""
    sink = Output().sink(1, "http://h/x")
    assert sink.write(b"x" * 100) == 100
    assert sink.finish(True)
    assert sink.path is None
