"""--state-dir: URLs survive SIGKILL and are resumed oldest first; a full disk refuses input."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from hf_support import WAIT, Daemon, Server, fill, lines, small_filesystem, url_list
from servers import wait_until


def test_resumed_after_sigkill_none_lost_finished_ones_not_repeated(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """SIGKILL with 500 in flight and 5,000 queued; the restart does each unfinished URL once."""
    state = str(tmp_path / "state")
    limits = ("--max-total-connections", "500", "--max-host-connections", "500")
    first = run_daemon("--state-dir", state, *limits, "--max-queued", "100000")
    early = url_list(http_server, "/size/10", 100, 0)
    first.write(lines(early))
    first.wait_for("transfer.done", 100)
    http_server.gate.clear()
    held = url_list(http_server, "/gate", 5_500, 100)
    first.write(lines(held))
    first.wait_for("transfer.added", 5_600)
    assert wait_until(lambda: http_server.open_now >= 500, WAIT)
    first.proc.kill()
    first.proc.wait(5)
    http_server.gate.set()

    second = run_daemon("--state-dir", state, *limits)
    done = second.wait_for("transfer.done", 5_500, timeout=60)
    resumed = second.events("transfer.resumed")
    assert [e["url"] for e in resumed] == held  # oldest first
    assert Counter(e["url"] for e in done) == Counter(held)
    assert all(e["result"] == 0 for e in done)
    assert {e["id"] for e in resumed} == {e["id"] for e in done}
    everywhere = first.events("transfer.done") + done
    assert Counter(e["url"] for e in everywhere if "/size/" in e["url"]) == Counter(early)
    assert {e["url"] for e in everywhere} == set(early) | set(held)
    added_ids = {e["id"] for e in first.events("transfer.added")}
    assert {e["id"] for e in resumed} <= added_ids  # the same ids across the restart
    second.write(b"stop\n")
    assert second.wait() == 0


def test_drain_timeout_defers_the_unfinished_to_the_next_start(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """--state-dir, drain timed out: transfer.deferred, not 42; the next start fetches them."""
    state = str(tmp_path / "state")
    first = run_daemon("--state-dir", state, "--shutdown-timeout", "0.5")
    first.write(lines(url_list(http_server, "/size/5", 10, 0)))
    first.wait_for("transfer.done", 10)
    http_server.gate.clear()
    held = url_list(http_server, "/gate", 200, 10)
    first.write(lines(held))
    first.wait_for("transfer.added", 210)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    deferred = first.events("transfer.deferred")
    assert sorted(e["url"] for e in deferred) == sorted(held)
    assert all("shutdown-timeout" in e["reason"] for e in deferred)
    assert len(first.events("transfer.done")) == 10
    assert first.events("daemon.stopped")[0]["deferred"] == 200
    http_server.gate.set()
    second = run_daemon("--state-dir", state)
    done = second.wait_for("transfer.done", 200)
    assert sorted(e["url"] for e in done) == sorted(held)
    assert {e["id"] for e in done} == {e["id"] for e in deferred}
    second.write(b"stop\n")
    assert second.wait() == 0


def test_restart_after_clean_stop_resumes_nothing(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """After `stop`, every URL is finished in the journal: the next start resumes none."""
    state = str(tmp_path / "state")
    first = run_daemon("--state-dir", state)
    first.write(lines(url_list(http_server, "/x", 50, 0)) + b"stop\n")
    assert first.wait() == 0
    assert len(first.events("transfer.done")) == 50
    second = run_daemon("--state-dir", state)
    second.write(b"stop\n")
    assert second.wait() == 0
    assert second.events("transfer.resumed") == []
    assert second.events("transfer.done") == []


def test_second_daemon_on_the_same_state_dir_exits_2(
    run_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """A state directory in use by a running daemon: the second one exits 2 with a message."""
    state = str(tmp_path / "state")
    first = run_daemon("--state-dir", state)
    second = run_daemon("--state-dir", state, "--fifo", str(tmp_path / "other.fifo"), wait=False)
    assert second.wait() == 2
    assert "in use by another hiperfifo" in second.stderr()
    first.write(b"stop\n")
    assert first.wait() == 0


def test_full_state_disk_refuses_input_keeps_transfers_and_recovers(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """State disk full: input.refused, running transfers finish; space back: the URLs run."""
    state = tmp_path / "state"
    with small_filesystem(state, "2m"):
        daemon = run_daemon("--state-dir", str(state))
        http_server.gate.clear()
        running = url_list(http_server, "/gate", 20, 0)
        daemon.write(lines(running))
        daemon.wait_for("transfer.added", 20)
        fill(state / "filler")
        later = url_list(http_server, "/later", 300, 0)
        writer = threading.Thread(target=daemon.write, args=(lines(later),))
        writer.start()
        (refused,) = daemon.wait_for("input.refused")
        assert "full" in refused["reason"]
        http_server.gate.set()
        done = daemon.wait_for("transfer.done", 20)
        assert sorted(e["url"] for e in done) == sorted(running)
        assert all(e["result"] == 0 for e in done)
        time.sleep(1.5)  # still refused: the later URLs wait (held or in the pipe)
        assert len(daemon.events("transfer.added")) == 20
        assert daemon.proc.poll() is None
        (state / "filler").unlink()
        done = daemon.wait_for("transfer.done", 320)
        writer.join(10)
        assert daemon.events("input.resumed")
        assert Counter(e["url"] for e in done) == Counter(running + later)
        daemon.write(b"stop\n")
        assert daemon.wait() == 0
