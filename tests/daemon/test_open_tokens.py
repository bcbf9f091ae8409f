"""A write without a trailing newline: the token is complete once the writer goes quiet for
--token-timeout (issue 12: `printf URL > fifo` then `printf stop > fifo` fetched URLstop)."""

from __future__ import annotations

import time
from collections.abc import Callable

from hf_support import Daemon, Server


def test_url_without_newline_then_stop_without_newline(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """printf URL; later printf stop: the URL is fetched as written and the daemon stops."""
    daemon = run_daemon()
    url = http_server.url("/a.txt")
    daemon.write(url.encode())
    (added,) = daemon.wait_for("transfer.added")
    assert added["url"] == url
    daemon.write(b"stop")
    assert daemon.wait() == 0
    (done,) = daemon.events("transfer.done")
    assert (done["url"], done["status"]) == (url, 200)
    assert daemon.events("input.rejected") == []


def test_a_token_split_across_quick_writes_still_joins(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """Two writes 0.3 s apart, well inside a 5 s --token-timeout: one URL, not two pieces."""
    daemon = run_daemon("--token-timeout", "5")
    url = http_server.url("/size/5")
    daemon.write(url[:12].encode())
    time.sleep(0.3)  # the gap under test (the first piece is read long before the second)
    daemon.write(url[12:].encode() + b"\nstop\n")
    assert daemon.wait() == 0
    assert [e["url"] for e in daemon.events("transfer.added")] == [url]
    assert daemon.events("input.rejected") == []


def test_quiet_longer_than_the_timeout_ends_the_token(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """The first piece alone is a token once the timeout passed; the next bytes start anew."""
    daemon = run_daemon("--token-timeout", "0.1")
    daemon.write(http_server.url("/size/5").encode())
    daemon.wait_for("transfer.added")
    daemon.write(b"/more\nstop\n")
    assert daemon.wait() == 0
    (rejected,) = daemon.events("input.rejected")
    assert rejected["token"] == "/more"
    assert [e["url"] for e in daemon.events("transfer.added")] == [http_server.url("/size/5")]


def test_token_timeout_0_waits_for_whitespace(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """--token-timeout 0: as before, a token ends only at whitespace, however long it waits."""
    daemon = run_daemon("--token-timeout", "0")
    url = http_server.url("/size/5")
    daemon.write(url[:12].encode())
    time.sleep(0.5)  # the quiet under test
    daemon.write(url[12:].encode() + b"\nstop\n")
    assert daemon.wait() == 0
    assert [e["url"] for e in daemon.events("transfer.added")] == [url]
