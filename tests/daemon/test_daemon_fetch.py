"""The real daemon fetching from a real local server: volume, junk, writers, failures."""

from __future__ import annotations

import base64
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from hf_support import Daemon, Server


def stop(daemon: Daemon) -> int:
    daemon.write(b"stop\n")
    return daemon.wait()


def test_thousand_urls_in_one_write_each_done_once(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """1,000 URLs in one write: one transfer.done each, 200, right sizes, ≤ 8 connections."""
    daemon = run_daemon("--max-total-connections", "8")
    urls = [http_server.url(f"/size/{i}") for i in range(1000)]
    started = time.monotonic()
    daemon.write(("\n".join(urls) + "\n").encode())
    done = daemon.wait_for("transfer.done", 1000)
    elapsed = time.monotonic() - started
    assert Counter(e["url"] for e in done) == Counter(urls)
    assert len({e["id"] for e in done}) == 1000
    assert all(e["result"] == 0 and e["status"] == 200 for e in done)
    assert all(e["bytes"] == int(e["url"].rsplit("/", 1)[1]) for e in done)
    assert http_server.peak <= 8
    assert stop(daemon) == 0
    print(f"1000 URLs in {elapsed:.2f}s over {http_server.connections} connections")


def test_junk_is_rejected_and_valid_urls_around_it_fetched(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """Empty lines, CRLF, NUL, non-UTF-8, a 100 KB token, file:// and gopher:// are rejected."""
    daemon = run_daemon()
    good = [http_server.url(f"/ok/{i}") for i in range(4)]
    junk = (
        b"\n\n   \t\n"
        + good[0].encode()
        + b"\r\n"
        + b"http://a/\x00b\n"
        + b"http://\xff\xfe/\n"
        + good[1].encode()
        + b" "
        + b"http://"
        + b"x" * 100_000
        + b"\nfile:///etc/passwd gopher://x\n"
        + good[2].encode()
        + b"\r\n\r\n"
        + good[3].encode()
        + b"\n"
    )
    daemon.write(junk)
    done = daemon.wait_for("transfer.done", 4)
    rejected = daemon.wait_for("input.rejected", 5)
    assert sorted(e["url"] for e in done) == sorted(good)
    assert all(e["result"] == 0 for e in done)
    reasons = [e["reason"] for e in rejected]
    assert len(rejected) == 5
    assert any("NUL" in r for r in reasons)
    assert any("UTF-8" in r for r in reasons)
    assert any("longer than" in r for r in reasons)
    assert sum("scheme" in r for r in reasons) == 2
    assert all(len(e["token"]) <= 200 for e in rejected)
    assert "http://\\xff\\xfe/" in [e["token"] for e in rejected]
    assert daemon.proc.poll() is None
    assert stop(daemon) == 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_empty_writers_and_many_writers_lose_nothing_and_idle_quietly(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """Writers that write nothing cause no busy loop; 20 concurrent writers lose no URL."""
    daemon = run_daemon()
    for _ in range(5):
        daemon.write(b"")
    before = cpu_seconds(daemon.proc.pid)
    time.sleep(1.0)  # a window to measure the idle CPU in
    assert cpu_seconds(daemon.proc.pid) - before < 0.2

    def writer(n: int) -> None:
        for i in range(10):
            daemon.write(f"{http_server.url(f'/w/{n}/{i}')}\n".encode())

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    done = daemon.wait_for("transfer.done", 200)
    assert len({e["url"] for e in done}) == 200
    assert daemon.events("input.rejected") == []
    daemon.wait_for_match("queue.remaining", running=0)  # all done: idle from here
    before = cpu_seconds(daemon.proc.pid)
    time.sleep(1.0)  # a window to measure the idle CPU in
    assert cpu_seconds(daemon.proc.pid) - before < 0.2
    assert stop(daemon) == 0


def test_dead_port_logs_result_7(run_daemon: Callable[..., Daemon], dead_port: int) -> None:
    """A refused connection is transfer.done with result 7 and a null status."""
    daemon = run_daemon()
    daemon.write(f"http://127.0.0.1:{dead_port}/x\n".encode())
    (done,) = daemon.wait_for("transfer.done")
    assert (done["result"], done["result_name"], done["status"]) == (7, "COULDNT_CONNECT", None)
    assert done["error"]
    assert stop(daemon) == 0
    assert daemon.events("daemon.stopped")[0]["failed"] == 1


def test_slow_server_with_timeout_logs_result_28(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """--timeout 1 against a server that answers after 5 s: result 28 after about a second."""
    daemon = run_daemon("--timeout", "1")
    daemon.write(f"{http_server.url('/slow/5')}\n".encode())
    (done,) = daemon.wait_for("transfer.done", timeout=4)
    assert done["result"] == 28
    assert done["result_name"] == "OPERATION_TIMEDOUT"
    assert 0.9 <= done["elapsed"] < 3
    assert stop(daemon) == 0


def test_redirects_are_followed(run_daemon: Callable[..., Daemon], http_server: Server) -> None:
    """A chain of three 302s ends in a 200, with redirects 3 and the final effective_url."""
    daemon = run_daemon()
    daemon.write(f"{http_server.url('/redirect/3')}\n".encode())
    (done,) = daemon.wait_for("transfer.done")
    assert (done["result"], done["status"], done["redirects"]) == (0, 200, 3)
    assert done["effective_url"] == http_server.url("/redirect/0")
    assert done["bytes"] == 10
    assert stop(daemon) == 0


def test_effective_url_is_the_normalised_url(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """transfer.done's effective_url is the URL as sent, as curl shows it (`/x/../status/./201`
    went out as `/status/201`); url stays as written."""
    daemon = run_daemon()
    given = http_server.url("/x/../status/./201")
    daemon.write(f"{given}\n".encode())
    (done,) = daemon.wait_for("transfer.done")
    assert (done["result"], done["status"], done["redirects"]) == (0, 201, 0)
    assert (done["url"], done["effective_url"]) == (given, http_server.url("/status/201"))
    assert stop(daemon) == 0


def test_http_error_status_is_result_0(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """A 404 is a completed transfer: result 0, status 404 (as curl without --fail)."""
    daemon = run_daemon()
    daemon.write(f"{http_server.url('/status/404')}\n".encode())
    (done,) = daemon.wait_for("transfer.done")
    assert (done["result"], done["status"]) == (0, 404)
    assert stop(daemon) == 0


def test_progress_is_logged_at_most_once_a_second(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """A 2.5 s transfer logs transfer.progress at least once, never twice within a second."""
    daemon = run_daemon()
    daemon.write(f"{http_server.url('/drip/10')}\n".encode())
    (done,) = daemon.wait_for("transfer.done")
    assert (done["result"], done["bytes"]) == (0, 10 * 1024)
    progress = daemon.events("transfer.progress")
    assert 1 <= len(progress) <= 3
    assert all(p["id"] == done["id"] and p["total"] == 10 * 1024 for p in progress)
    stamps = [datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")) for p in progress]
    assert all((b - a).total_seconds() >= 0.99 for a, b in itertools.pairwise(stamps))
    assert stop(daemon) == 0


def test_short_transfers_log_no_progress_however_long_they_waited(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """Time spent queued or waiting for the head does not count: one-chunk bodies log none."""
    http_server.gate.clear()
    daemon = run_daemon("--max-total-connections", "1")
    daemon.write(f"{http_server.url('/gate')}\n{http_server.url('/size/16')}\n".encode())
    daemon.wait_for("transfer.added", 2)
    time.sleep(1.2)  # time passing is the point: both accepted over a second ago, no body byte
    http_server.gate.set()
    daemon.wait_for("transfer.done", 2)
    assert daemon.events("transfer.progress") == []
    assert stop(daemon) == 0


def test_fail_flag_makes_http_errors_result_22(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """With HIPERFIFO_FAIL=true (as --fail), a 404 is result 22 while a 200 stays 0."""
    daemon = run_daemon(env={"HIPERFIFO_FAIL": "true"})
    daemon.write(f"{http_server.url('/status/404')}\n{http_server.url('/a')}\n".encode())
    done = sorted(daemon.wait_for("transfer.done", 2), key=lambda e: e["id"])
    assert [(e["result"], e["status"]) for e in done] == [(22, 404), (0, 200)]
    assert done[0]["result_name"] == "HTTP_RETURNED_ERROR"
    assert stop(daemon) == 0


def test_passwords_never_reach_the_log(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """A URL with user:password is logged as user:***; the password appears in no line."""
    daemon = run_daemon()
    port = http_server.server_address[1]
    daemon.write(f"http://alice:s3cr3tpw@127.0.0.1:{port}/private\nstop\n".encode())
    assert daemon.wait() == 0
    (done,) = daemon.events("transfer.done")
    assert done["url"] == f"http://alice:***@127.0.0.1:{port}/private"
    assert "s3cr3tpw" not in daemon.log.read_text()


def test_json_lines_start_with_timestamp_level_event(run_daemon: Callable[..., Daemon]) -> None:
    """Each JSON line begins with timestamp, level, event (readable under tail -f)."""
    daemon = run_daemon("--log-level", "debug")
    daemon.write(b"stop\n")
    assert daemon.wait() == 0
    assert all(list(e)[:3] == ["timestamp", "level", "event"] for e in daemon.events())


def test_debug_level_logs_request_and_response_heads_with_credentials_hidden(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """--log-level debug shows each head like curl -v; the Authorization the engine built from
    user:password shows its scheme only, and neither the password nor its base64 is logged."""
    daemon = run_daemon("--log-level", "debug")
    port = http_server.server_address[1]
    daemon.write(f"http://alice:s3cr3tpw@127.0.0.1:{port}/redirect/1\nstop\n".encode())
    assert daemon.wait() == 0
    heads = [e for e in daemon.events("transfer.debug") if "head" in e]
    assert [e["kind"] for e in heads] == ["header_out", "header_in"] * 2
    request, response = heads[0]["head"], heads[1]["head"]
    assert request[0] == "GET /redirect/1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in request
    assert "Authorization: Basic ***" in request
    assert response[0].startswith("HTTP/1.1 302")
    assert "Location: /redirect/0" in response
    assert all(e["url"] == f"http://alice:***@127.0.0.1:{port}/redirect/1" for e in heads)
    text = daemon.log.read_text()
    assert "s3cr3tpw" not in text
    assert base64.b64encode(b"alice:s3cr3tpw").decode() not in text
