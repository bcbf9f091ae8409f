"""Faults the daemon survives, each against a local server misbehaving on purpose.

For each: the right libcurl code in transfer.done, the daemon still running,
and the next URL, to a good server, fetched.
"""

from __future__ import annotations

import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_support import Daemon, Server, daemon_env, status_kib
from servers import (
    HTTPServer,
    Peer,
    answers_with,
    huge_headers,
    never_answers,
    raw,
    redirect,
    respond,
    stale_after_first,
    trickle,
)
from servers import Server as PeerServer

Serve = Callable[[Any], Any]


def survives(
    daemon: Daemon, good: Server, url: str, result: int, timeout: float = 20
) -> dict[str, Any]:
    """`url` ends with `result`; the daemon runs on and fetches a good URL after it."""
    before = len(daemon.events("transfer.done"))  # counted before the write: a fast daemon
    daemon.write(f"{url}\n".encode())  # may log this one's done before we look again
    done = daemon.wait_for("transfer.done", before + 1, timeout)
    event = done[-1]
    assert (event["url"], event["result"]) == (url, result), event
    assert event["error"] or result == 0, "a failure says why"
    assert daemon.proc.poll() is None
    after = good.url(f"/after/{event['id']}")
    daemon.write(f"{after}\n".encode())
    last = daemon.wait_for("transfer.done", len(done) + 1)[-1]
    assert (last["url"], last["result"], last["status"]) == (after, 0, 200)
    return event


def test_reset_mid_body_is_56(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """Headers and 10 of 100 bytes, then RST: 56 (RECV_ERROR)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
    rude = serve(HTTPServer(default=raw(head, then="reset", delay=0.1)))
    event = survives(run_daemon(), http_server, rude.url("/"), 56)
    assert event["status"] == 200


def test_truncated_body_is_18(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """Content-Length 10, 3 bytes, FIN: 18 (PARTIAL_FILE)."""
    short = serve(answers_with(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
    event = survives(run_daemon(), http_server, short.url("/"), 18)
    assert event["bytes"] == 3


def test_one_byte_a_second_under_speed_limit_is_28(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """1 byte/s with --speed-limit 100 --speed-time 1: 28 within about two seconds."""
    slow = serve(HTTPServer(default=trickle(b"x" * 100, interval=1.0)))
    daemon = run_daemon("--speed-limit", "100", "--speed-time", "1")
    event = survives(daemon, http_server, slow.url("/"), 28)
    assert "too slow" in event["error"].lower()
    assert event["elapsed"] < 4


def test_server_that_never_answers_with_timeout_is_28(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """Accepts, reads, says nothing; --timeout 1: 28 after about a second."""
    silent = serve(never_answers())
    event = survives(run_daemon("--timeout", "1"), http_server, silent.url("/"), 28)
    assert 0.9 <= event["elapsed"] < 3


def test_garbage_status_line_is_1(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """`HTXP/9 abc`: 1 (UNSUPPORTED_PROTOCOL, as libcurl refuses HTTP/0.9)."""
    odd = serve(answers_with(b"HTXP/9 abc\r\n\r\n"))
    survives(run_daemon(), http_server, odd.url("/"), 1)


def test_one_megabyte_of_headers_is_56_with_memory_bounded(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """A 1 MB header block: 56 (RECV_ERROR); the daemon's peak RSS grows by far less than that."""
    big = serve(HTTPServer(default=huge_headers(1_000_000)))
    daemon = run_daemon()
    before = status_kib(daemon.proc.pid, "VmHWM")
    event = survives(daemon, http_server, big.url("/"), 56)
    assert status_kib(daemon.proc.pid, "VmHWM") - before < 2_000
    assert "header" in event["error"].lower()


def test_redirect_loop_is_47(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """A 302 to itself: 47 (TOO_MANY_REDIRECTS) after the default 30 hops."""
    loop = serve(HTTPServer({"/loop": redirect("/loop")}))
    event = survives(run_daemon(), http_server, loop.url("/loop"), 47)
    assert event["redirects"] == 30


def test_more_bytes_than_content_length_then_a_fresh_connection(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """`Content-Length: 3` then `abcEXTRA`: OK with 3 bytes; the next transfer connects anew."""
    extra = serve(
        HTTPServer(
            {
                "/extra": raw(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA"),
                "/next": respond(b"next"),
            }
        )
    )
    daemon = run_daemon()
    daemon.write(f"{extra.url('/extra')}\n".encode())
    (first,) = daemon.wait_for("transfer.done")
    assert (first["result"], first["bytes"]) == (0, 3)
    daemon.write(f"{extra.url('/next')}\n".encode())
    second = daemon.wait_for("transfer.done", 2)[-1]
    assert (second["result"], second["status"], second["bytes"]) == (0, 200, 4)
    assert extra.accepted == 2  # EXTRA was never read as the next response
    survives(daemon, http_server, extra.url("/extra"), 0)


def test_broken_chunked_encoding_is_56(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """A chunk size that is not hex: 56 (RECV_ERROR)."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    broken = serve(HTTPServer(default=raw(head + b"zz\r\nabc\r\n0\r\n\r\n", then="close")))
    survives(run_daemon(), http_server, broken.url("/"), 56)


def test_kept_alive_connection_closed_while_idle_is_replaced(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """The server closes each kept-alive connection after one answer: the pool finds it
    closed before reuse, and the next transfer is OK on a fresh connection."""
    stale = serve(stale_after_first(b"first"))
    daemon = run_daemon("--max-host-connections", "1")
    for i in range(5):
        daemon.write(f"{stale.url(f'/{i}')}\n".encode())
        done = daemon.wait_for("transfer.done", i + 1)
        assert (done[-1]["result"], done[-1]["bytes"]) == (0, 5), done[-1]
    survives(daemon, http_server, stale.url("/again"), 0)


def test_kept_alive_connection_closed_when_the_request_arrives_is_sent_again(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """The server answers one request per connection and closes the kept-alive connection
    when the next request arrives on it: the engine sends that request again on a fresh
    connection (the server sees it twice), and every transfer is OK without --retry."""

    def one_answer_per_connection(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            peer.read_request()  # the next request on this connection: never answered

    racy = serve(PeerServer(one_answer_per_connection))
    daemon = run_daemon("--max-host-connections", "1")
    for i in range(4):
        daemon.write(f"{racy.url(f'/{i}')}\n".encode())
        done = daemon.wait_for("transfer.done", i + 1)
        assert (done[-1]["result"], done[-1]["bytes"], done[-1]["attempts"]) == (0, 5, 1)
    assert racy.wait_for(lambda: len(racy.requests) == 7)
    assert racy.paths() == ["/0", "/1", "/1", "/2", "/2", "/3", "/3"]
    assert daemon.events("transfer.retry") == []
    survives(daemon, http_server, racy.url("/again"), 0)


def test_redirect_to_a_non_ascii_location_is_followed_percent_encoded(
    run_daemon: Callable[..., Daemon], http_server: Server, serve: Serve
) -> None:
    """A raw UTF-8 `Location: /caf\u00e9` and a Latin-1 one: each followed, its bytes sent
    percent-encoded (/caf%C3%A9, /caf%E9), as curl sends them; the daemon runs on."""
    utf8 = b"HTTP/1.1 302 Found\r\nLocation: /caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n"
    latin1 = b"HTTP/1.1 302 Found\r\nLocation: /caf\xe9\r\nContent-Length: 0\r\n\r\n"
    odd = serve(HTTPServer({"/utf8": raw(utf8), "/latin1": raw(latin1)}, default=respond(b"x")))
    daemon = run_daemon()
    event = survives(daemon, http_server, odd.url("/utf8"), 0)
    assert (event["status"], event["redirects"]) == (200, 1)
    event = survives(daemon, http_server, odd.url("/latin1"), 0)
    assert (event["status"], event["redirects"]) == (200, 1)
    assert odd.paths() == ["/utf8", "/caf%C3%A9", "/latin1", "/caf%E9"]


LIMITS = ["--max-total-connections", "500", "--max-host-connections", "500"]  # past 64 fds


def limited_daemon(tmp_path: Path, soft: int, hard: int) -> Daemon:
    """The daemon with LIMITS under `ulimit -Sn soft -Hn hard`."""
    fifo, log = tmp_path / "in.fifo", tmp_path / "daemon.log"

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    proc = subprocess.Popen(
        [*python_m_hiperfifo(), "--fifo", str(fifo), "--log-file", str(log), *LIMITS],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=daemon_env(),
        preexec_fn=set_limit,
    )
    return Daemon(proc, fifo, log)


def fetch_1000(daemon: Daemon, http_server: Server) -> float:
    """1,000 URLs answered after 50 ms each: all OK, each once; then one more and stop."""
    urls = [http_server.url(f"/slow/0.05?n={i}") for i in range(1_000)]
    started = time.monotonic()
    daemon.write(("\n".join(urls) + "\n").encode())
    done = daemon.wait_for("transfer.done", 1_000, timeout=60)
    elapsed = time.monotonic() - started
    failed = [(e["result"], e["error"]) for e in done if e["result"] != 0]
    assert failed == [], f"{len(failed)} of 1,000 failed, e.g. {failed[:3]}"
    assert sorted(e["url"] for e in done) == sorted(urls)
    daemon.write(f"{http_server.url('/after')}\nstop\n".encode())
    assert daemon.wait(30) == 0
    assert daemon.events("transfer.done")[-1]["result"] == 0
    return elapsed


def test_fd_exhaustion_fails_cleanly_and_keeps_fifo_and_logs(
    http_server: Server, tmp_path: Path
) -> None:
    """`ulimit -n 64` (hard), 1,000 URLs: the connection limit is lowered to fit, all 1,000
    OK (docs/daemon.md), none hangs; the FIFO still works."""
    daemon = limited_daemon(tmp_path, 64, 64)
    try:
        daemon.wait_for("daemon.started")
        (limited,) = daemon.events("daemon.limited")  # 500 connections cannot fit in 64 fds
        assert "lowered to 32" in limited["reason"]
        elapsed = fetch_1000(daemon, http_server)
        assert http_server.peak <= 32
        print(f"fd limit 64: all 1,000 OK in {elapsed:.1f} s, at most {http_server.peak} open")
    finally:
        daemon.reap()


def test_a_low_soft_fd_limit_is_raised_to_fit_the_connections(
    http_server: Server, tmp_path: Path
) -> None:
    """Soft `ulimit -n 64` under a hard 4096: the daemon raises its soft limit to what 500
    connections need (no daemon.limited) and uses more than 64 descriptors' worth of them."""
    hard = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    daemon = limited_daemon(tmp_path, 64, hard)
    try:
        daemon.wait_for("daemon.started")
        limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
        (line,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
        soft_now = int(line.split()[3])
        assert 500 < soft_now <= hard, line
        assert daemon.events("daemon.limited") == []
        elapsed = fetch_1000(daemon, http_server)
        assert http_server.peak > 64, f"at most {http_server.peak} connections at once"
        print(
            f"soft limit raised to {soft_now}: 1,000 OK in {elapsed:.1f} s, "
            f"{http_server.peak} open at once"
        )
    finally:
        daemon.reap()


def python_m_hiperfifo() -> list[str]:
    import sys

    return [sys.executable, "-m", "hiperfifo"]
