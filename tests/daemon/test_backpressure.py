"""Memory and back-pressure: queued URLs are cheap; past --max-queued the writers wait."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from hf_support import WAIT, Daemon, Server, status_kib, url_lines


def count(daemon: Daemon, event: str) -> int:
    """How many `event` lines so far (a text count: cheap on a 100,000-line log)."""
    if not daemon.log.exists():
        return 0
    return daemon.log.read_text(encoding="utf-8").count(f'"event": "{event}"')


def wait_count(daemon: Daemon, event: str, n: int, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while count(daemon, event) < n:
        assert daemon.proc.poll() is None, "the daemon exited"
        assert time.monotonic() < deadline, f"{count(daemon, event)}/{n} {event}"
        time.sleep(0.1)


def test_100000_queued_urls_cost_about_48_mib(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """100,000 URLs to a server that never answers: all accepted, peak RSS about 48 MiB as
    docs/daemon.md says. Measured (3 runs): VmHWM 48.7 MiB, 27.9 MiB of it the idle daemon,
    so ~21 MiB (~210 bytes a URL) for the queue; bounds: 60 MiB peak, 30 MiB growth."""
    daemon = run_daemon("--shutdown-timeout", "0")
    idle = status_kib(daemon.proc.pid, "VmHWM") / 1024
    data = url_lines(http_server, "/hang", 100_000)
    writer = threading.Thread(target=daemon.write, args=(data,))
    writer.start()
    writer.join(60)
    wait_count(daemon, "transfer.added", 100_000, timeout=60)
    peak = status_kib(daemon.proc.pid, "VmHWM") / 1024
    print(f"100,000 queued URLs: VmHWM {peak:.1f} MiB, idle {idle:.1f} MiB")
    assert peak < 60
    assert peak - idle < 30
    assert daemon.proc.poll() is None


def test_past_max_queued_the_fifo_waits_and_nothing_is_lost(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """--max-queued 500: input.paused, the writer blocks; once answered, every URL done once."""
    daemon = run_daemon("--max-queued", "500", "--max-total-connections", "4")
    http_server.gate.clear()
    data = url_lines(http_server, "/gate", 5_000)
    writer = threading.Thread(target=daemon.write, args=(data,))
    writer.start()
    (paused,) = daemon.wait_for("input.paused")
    assert paused["queued"] >= 500
    time.sleep(0.5)  # a window in which nothing more may be read (absence takes a while)
    added = count(daemon, "transfer.added")
    assert added < 500 + 4 * 16 + 300  # the queue, the engine's share, one read
    assert writer.is_alive()  # blocked on the full pipe: back-pressure
    http_server.gate.set()
    writer.join(WAIT)
    done = daemon.wait_for("transfer.done", 5_000, timeout=60)
    assert Counter(e["url"] for e in done) == Counter(data.decode().split())
    # every pause lasts until half the backlog has gone, and nothing is read meanwhile
    cycle = [e for e in daemon.events() if e["event"] in ("input.paused", "input.resumed")]
    assert [e["event"] for e in cycle] == ["input.paused", "input.resumed"] * (len(cycle) // 2)
    assert all(e["queued"] >= 500 for e in cycle[0::2])
    assert all(e["reason"] == "backlog halved" and e["queued"] <= 250 for e in cycle[1::2])
    paused = False
    for event in daemon.events():
        paused = {"input.paused": True, "input.resumed": False}.get(event["event"], paused)
        assert not (paused and event["event"] == "transfer.added"), "read while paused"
    daemon.write(b"stop\n")
    assert daemon.wait() == 0


def test_stop_drains_the_daemon_queue_too(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """3,000 URLs and `stop` in one write with a small engine share: all 3,000 fetched."""
    daemon = run_daemon("--max-total-connections", "2")
    daemon.write(url_lines(http_server, "/size/3", 3_000) + b"stop\n")
    assert daemon.wait(60) == 0
    done = daemon.events("transfer.done")
    assert len(done) == 3_000
    assert all(e["result"] == 0 for e in done)
    assert daemon.events("daemon.stopped")[0]["done"] == 3_000
