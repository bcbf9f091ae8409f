"""--output discard (the default): the engine drops bodies itself, no write callback per block.

The daemon passes no write_function then (the engine counts size_download and discards,
docs/engine.md): real transfers against a real local server, in this process, with every
Easy the daemon hands the engine recorded and the discarding Sink's write() counted.
"""

from __future__ import annotations

from typing import Any

import pytest
from hf_support import Server
from inprocess import ListSource, Run

from hiperfifo.engine import Easy
from hiperfifo.output import Sink
from hiperfifo.sources.base import Stop, Url


def discard_run(
    monkeypatch: pytest.MonkeyPatch, urls: list[str], **options: Any
) -> tuple[Run, list[Easy], list[int]]:
    """Run the daemon in-process over `urls`; the Easy handles it added, and the sizes of
    the blocks the discarding Sink's write() was called with."""
    written: list[int] = []

    def counting_write(self: Sink, data: bytes) -> int:
        written.append(len(data))
        return len(data)

    monkeypatch.setattr(Sink, "write", counting_write)  # the discarding Sink's (not FileSink's)
    run = Run([ListSource([*map(Url, urls), Stop()])], **options)
    added: list[Easy] = []
    multi = run.daemon.jobs._multi
    add_handle = multi.add_handle

    def recording_add(easy: Easy) -> None:
        added.append(easy)
        add_handle(easy)

    monkeypatch.setattr(multi, "add_handle", recording_add)
    assert run.run() == 0
    return run, added, written


def test_discard_passes_no_write_function_and_still_counts_every_byte(
    monkeypatch: pytest.MonkeyPatch, http_server: Server
) -> None:
    """A small body, a large one (many blocks), a redirect chain: no write callback is ever
    called, and transfer.done's bytes are the bodies' sizes all the same."""
    urls = [http_server.url(p) for p in ("/size/1000", "/size/300000", "/redirect/2")]
    run, added, written = discard_run(monkeypatch, urls)
    assert len(added) == 3
    assert [easy.write_function for easy in added] == [None, None, None]
    assert written == []
    done = {e["url"]: e for e in run.events("transfer.done")}
    assert [(done[u]["result"], done[u]["bytes"]) for u in urls] == [
        (0, 1000),
        (0, 300000),
        (0, 10),
    ]
    assert done[urls[2]]["redirects"] == 2


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"retry": 2, "retry_delay": 1.0}, {"result": 0, "attempts": 3, "bytes": 16}),
        ({"log_level": "debug"}, {"result": 0, "attempts": 1, "bytes": 16}),
    ],
)
def test_discard_passes_no_write_function_on_retries_and_at_debug(
    monkeypatch: pytest.MonkeyPatch, http_server: Server, options: Any, expected: Any
) -> None:
    """Every attempt of a retried transfer (503 is transient), and the debug path, go without
    a write callback too; the last attempt's body is counted."""
    url = http_server.url("/status/503")
    run, added, written = discard_run(monkeypatch, [url], **options)
    assert len(added) == expected["attempts"]
    assert all(easy.write_function is None for easy in added)
    assert written == []
    (done,) = run.events("transfer.done")
    assert {key: done[key] for key in expected} == expected
    assert done["status"] == 503


def test_discard_still_enforces_max_filesize(
    monkeypatch: pytest.MonkeyPatch, http_server: Server
) -> None:
    """--max-filesize is the engine's check, not the write callback's: a body over it still
    fails with 63 without a write function."""
    url = http_server.url("/size/300000")
    run, added, written = discard_run(monkeypatch, [url], max_filesize=1000)
    assert [easy.write_function for easy in added] == [None]
    assert written == []
    (done,) = run.events("transfer.done")
    assert done["result"] == 63
