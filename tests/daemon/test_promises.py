"""Promises of docs/daemon.md that had no test: queue.remaining, journal.failed,
comma-separated HIPERFIFO_*_NETWORK, SIGTERM finishing queued URLs, transfer.debug states."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from hf_support import Daemon, Server, fill, small_filesystem, url_lines


def when(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def test_queue_remaining_at_most_once_a_second_and_at_zero(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """40 URLs of 0.1 s over 2 connections (about 2 s): queue.remaining lines at least 1 s
    apart, counts never growing, the last one at running 0, queued 0."""
    daemon = run_daemon("--max-total-connections", "2")
    daemon.write(url_lines(http_server, "/slow/0.1", 40))
    daemon.wait_for("transfer.done", 40)
    daemon.wait_for_match("queue.remaining", running=0, queued=0)
    daemon.write(b"stop\n")
    assert daemon.wait() == 0
    lines = daemon.events("queue.remaining")
    assert (lines[-1]["running"], lines[-1]["queued"]) == (0, 0)
    before_zero = [e for e in lines if e["running"] > 0]
    assert before_zero, "no queue.remaining while transfers ran"
    gaps = [when(b) - when(a) for a, b in itertools.pairwise(before_zero)]
    assert all(gap >= 0.99 for gap in gaps), gaps
    assert all(e["queued"] <= e["running"] <= 40 for e in lines)
    running = [e["running"] for e in lines]
    assert running == sorted(running, reverse=True)


def test_journal_failed_when_finished_ids_cannot_be_deleted(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """--state-dir on a full disk while transfers finish: one journal.failed (error,
    unflushed); the transfers still end OK; with space back the daemon stops cleanly."""
    state = tmp_path / "state"
    with small_filesystem(state, "2m"):
        daemon = run_daemon("--state-dir", str(state))
        http_server.gate.clear()
        daemon.write(url_lines(http_server, "/gate", 20))
        daemon.wait_for("transfer.added", 20)
        fill(state / "filler")
        http_server.gate.set()
        done = daemon.wait_for("transfer.done", 20)
        assert all(e["result"] == 0 for e in done)
        (failed,) = daemon.wait_for("journal.failed")
        assert failed["level"] == "error"
        assert failed["unflushed"] >= 1
        assert failed["error"]
        (state / "filler").unlink()
        daemon.write(b"stop\n")
        assert daemon.wait() == 0
        again = run_daemon("--state-dir", str(state))  # the finished ids were deleted after all
        again.write(b"stop\n")
        assert again.wait() == 0
        assert again.events("transfer.resumed") == []


def test_comma_separated_network_variables(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """HIPERFIFO_DENY_NETWORK / HIPERFIFO_ALLOW_NETWORK take comma-separated CIDRs (spaces
    allowed): each one listed in daemon.started and each one applied."""
    deny = run_daemon(env={"HIPERFIFO_DENY_NETWORK": "10.0.0.0/8, 127.0.0.0/8,192.168.0.0/16"})
    started = deny.events("daemon.started")[0]
    assert started["deny_network"] == ["10.0.0.0/8", "127.0.0.0/8", "192.168.0.0/16"]
    deny.write(f"{http_server.url('/x')}\nstop\n".encode())
    assert deny.wait() == 0
    (done,) = deny.events("transfer.done")
    assert done["result"] == 7
    assert "127.0.0.1 is in denied network 127.0.0.0/8" in done["error"]

    allow = run_daemon(env={"HIPERFIFO_ALLOW_NETWORK": "127.0.0.2/32,127.0.0.1/32"})
    assert allow.events("daemon.started")[0]["allow_network"] == ["127.0.0.2/32", "127.0.0.1/32"]
    port = http_server.server_address[1]
    allow.write(f"{http_server.url('/y')}\nhttp://127.0.0.3:{port}/z\nstop\n".encode())
    assert allow.wait() == 0
    results = {e["url"]: (e["result"], e["error"]) for e in allow.events("transfer.done")}
    assert results[http_server.url("/y")] == (0, "")
    assert results[f"http://127.0.0.3:{port}/z"][0] == 7
    assert "not in an allowed network" in results[f"http://127.0.0.3:{port}/z"][1]
    assert http_server.paths() == ["/y"]


def test_sigterm_finishes_queued_urls_not_only_running_ones(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """60 URLs over 2 connections, SIGTERM while most still wait in the queue: every one is
    fetched OK (docs: stop lets every accepted transfer finish, those still queued too)."""
    daemon = run_daemon("--max-total-connections", "2")
    http_server.gate.clear()
    daemon.write(url_lines(http_server, "/gate", 60))
    daemon.wait_for("transfer.added", 60)
    daemon.signal(signal.SIGTERM)
    (stopping,) = daemon.wait_for("daemon.stopping")
    assert (stopping["reason"], stopping["running"]) == ("SIGTERM", 60)
    http_server.gate.set()
    assert daemon.wait() == 0
    done = daemon.events("transfer.done")
    assert len(done) == 60
    assert all(e["result"] == 0 for e in done)
    assert daemon.events("daemon.stopped")[0]["done"] == 60
    assert http_server.peak <= 2


def test_debug_level_logs_each_state_change(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """--log-level debug: transfer.debug kind state, one line per state change, in order
    (curl --verbose's progress through a transfer); none at the default level."""
    daemon = run_daemon("--log-level", "debug")
    daemon.write(f"{http_server.url('/size/3')}\nstop\n".encode())
    assert daemon.wait() == 0
    states = [e["text"] for e in daemon.events("transfer.debug") if e["kind"] == "state"]
    assert states == [
        "INIT -> CONNECT",
        "CONNECT -> CONNECTING",
        "CONNECTING -> SENDING",
        "SENDING -> RECEIVING",
        "RECEIVING -> DONE",
    ]
    quiet = run_daemon()
    quiet.write(f"{http_server.url('/size/3')}\nstop\n".encode())
    assert quiet.wait() == 0
    assert quiet.events("transfer.debug") == []
