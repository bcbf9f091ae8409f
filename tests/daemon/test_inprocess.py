"""The daemon in this process (inprocess.py): intake, feeding, retry timing, drain, abort.

Real transfers against a real local server; the daemon's timers on a fake clock that
jumps when the loop is quiet, so backoffs and drain deadlines take no time.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from hf_support import Server
from inprocess import ListSource, Run

from hiperfifo import logs
from hiperfifo.journal import Journal
from hiperfifo.sources.base import Rejected, Stop, Url, Urls
from hiperfifo.sources.fifo import FifoSource, Tokenizer, open_fifo


def test_intake_accepts_urls_acts_on_stop_and_rejects_what_follows(
    http_server: Server,
) -> None:
    """URLs before `stop` are added (ids 1, 2) and fetched; a rejected token is logged and
    its source told (result -1, REJECTED); URLs after `stop` are rejected; exit 0."""
    items = [
        Url(http_server.url("/size/10")),
        Rejected("not a URL (no scheme)", "junk", entry="7-0"),
        Url(http_server.url("/size/20"), entry="8-0"),
        Stop(),
        Url(http_server.url("/size/30")),
    ]
    source = ListSource(items)
    run = Run([source])
    assert run.run() == 0
    added = run.events("transfer.added")
    assert [(e["id"], e.get("entry")) for e in added] == [(1, None), (2, "8-0")]
    rejected = run.events("input.rejected")
    assert [e["reason"] for e in rejected] == ["not a URL (no scheme)", "daemon is stopping"]
    assert rejected[1]["token"] == http_server.url("/size/30")
    done = {e["id"]: e for e in run.events("transfer.done")}
    assert (done[1]["bytes"], done[2]["bytes"], done[2]["entry"]) == (10, 20, "8-0")
    answers = {a["entry"]: a for a in source.answers}
    assert answers["7-0"]["result"] == -1
    assert answers["7-0"]["result_name"] == "REJECTED"
    assert (answers["8-0"]["id"], answers["8-0"]["result"], answers["8-0"]["bytes"]) == (2, 0, 20)
    assert source.calls[0] == "start"
    assert "stop" in source.calls
    assert source.calls[-1] != "resume"  # nothing reads after stop
    assert run.events("daemon.stopped")[0]["done"] == 2


def test_feeding_keeps_the_engine_within_its_bound_and_everything_finishes_once(
    http_server: Server,
) -> None:
    """60 URLs with one connection: the engine never holds more than 16 (the feed bound per
    connection), the rest wait in the daemon's queue; each URL gets one transfer.done."""
    urls = [Url(http_server.url(f"/size/{n}")) for n in range(1, 61)]
    source = ListSource([*urls, Stop()])
    run = Run([source], max_total_connections=1)
    held: list[int] = []
    original = run.daemon.jobs.feed

    def feed() -> None:
        original()
        held.append(len(run.daemon.jobs.running))

    run.daemon.jobs.feed = feed  # type: ignore[method-assign]
    assert run.run() == 0
    assert max(held) == 16
    done = run.events("transfer.done")
    assert sorted(e["id"] for e in done) == list(range(1, 61))
    assert all(e["result"] == 0 for e in done)
    assert http_server.peak == 1


def test_max_queued_pauses_the_source_and_resumes_it_when_the_backlog_halved(
    http_server: Server,
) -> None:
    """Past --max-queued the source is paused (input.paused); at half it reads again."""
    urls = [Url(http_server.url(f"/size/{n}")) for n in range(1, 101)]
    source = ListSource(urls)
    run = Run([source], max_total_connections=1, max_queued=40)
    run.at(0.5, lambda: source.hand_in([Stop()]))  # fake time: after all 100 are done
    assert run.run() == 0
    paused = run.events("input.paused")
    resumed = run.events("input.resumed")
    assert len(paused) == 1
    assert paused[0]["queued"] >= 40
    assert resumed[0]["reason"] == "backlog halved"
    assert resumed[0]["queued"] <= 20
    assert source.calls[:3] == ["start", "pause", "resume"]
    assert len(run.events("transfer.done")) == 100


def test_retries_wait_their_backoff_on_the_daemons_clock_not_in_real_time(
    dead_port: int,
) -> None:
    """--retry 2 --retry-delay 100 against a refused port: attempts 100 s apart on the
    daemon's clock, the transfer.done elapsed counts the waits; the test does not wait."""
    source = ListSource([Url(f"http://127.0.0.1:{dead_port}/x")])
    run = Run([source], retry=2, retry_delay=100.0)
    run.at(300.0, lambda: source.hand_in([Stop()]))  # a stop sooner would end the waits
    began = time.monotonic()
    assert run.run() == 0
    assert time.monotonic() - began < 20  # 200 s of backoff, not waited for
    retries = run.events("transfer.retry")
    assert [(e["attempt"], e["result"], e["delay"]) for e in retries] == [
        (1, 7, 100.0),
        (2, 7, 100.0),
    ]
    (done,) = run.events("transfer.done")
    assert (done["result"], done["attempts"]) == (7, 3)
    assert 200.0 <= done["elapsed"] < 201.0
    assert run.clock() == 1300.0


def test_stop_ends_waiting_retries_that_would_start_after_the_drain_deadline(
    dead_port: int,
) -> None:
    """A retry due after --shutdown-timeout is not waited for: on stop the transfer ends
    at once with its last result (7), attempts 1, and the daemon exits 0."""
    source = ListSource([Url(f"http://127.0.0.1:{dead_port}/x")])
    run = Run([source], retry=3, retry_delay=50.0, shutdown_timeout=10.0)
    run.signal_at(5.0, signal.SIGTERM)
    assert run.run() == 0
    (done,) = run.events("transfer.done")
    assert (done["result"], done["attempts"]) == (7, 1)
    assert run.clock() < 1000.0 + 10.0
    assert run.events("daemon.stopping")[0]["reason"] == "SIGTERM"


def test_drain_deadline_aborts_a_hung_transfer_with_42(http_server: Server) -> None:
    """SIGTERM with a transfer that never answers: after --shutdown-timeout (fake time)
    it ends with 42 and the daemon exits 0; the server's answer is never waited for."""
    source = ListSource([Url(http_server.url("/hang"))])
    run = Run([source], shutdown_timeout=30.0, jump_while_busy=True)
    run.signal_at(1.0, signal.SIGTERM)
    assert run.run() == 0
    (done,) = run.events("transfer.done")
    assert done["result"] == 42
    assert done["error"] == "aborted: --shutdown-timeout (30 s)"
    assert run.clock() == 1031.0


def test_second_sigint_aborts_at_once_with_exit_130(http_server: Server) -> None:
    """SIGINT drains; a second SIGINT aborts what runs (42) and exits 130."""
    source = ListSource([Url(http_server.url("/hang")), Url(http_server.url("/hang"))])
    run = Run([source], shutdown_timeout=300.0, jump_while_busy=True)
    run.signal_at(1.0, signal.SIGINT)
    run.signal_at(2.0, signal.SIGINT)
    assert run.run() == 130
    done = run.events("transfer.done")
    assert [e["result"] for e in done] == [42, 42]
    assert run.events("daemon.aborting")[0]["running"] == 2


def test_abort_with_a_journal_defers_journaled_urls_for_the_next_start(
    http_server: Server, tmp_path: Path
) -> None:
    """With a journal, an abort keeps a journaled source's URLs (transfer.deferred, still
    in the journal) and ends a non-journaled source's with 42."""
    kept = ListSource([Url(http_server.url("/hang"))], journaled=True)
    other = ListSource([Url(http_server.url("/hang"), entry="1-0")])
    journal = Journal(tmp_path / "state")
    run = Run([kept, other], journal=journal, shutdown_timeout=5.0, jump_while_busy=True)
    run.signal_at(1.0, signal.SIGTERM)
    try:
        assert run.run() == 0
    finally:
        journal.close()
    deferred = run.events("transfer.deferred")
    assert [e["url"] for e in deferred] == [http_server.url("/hang")]
    (done,) = run.events("transfer.done")
    assert (done["result"], done["entry"]) == (42, "1-0")
    assert [a["result"] for a in other.answers] == [42]
    assert kept.answers == []
    assert run.events("daemon.stopped")[0]["deferred"] == 1
    again = Journal(tmp_path / "state")
    try:
        assert [url for _, url in again.unfinished()] == [http_server.url("/hang")]
    finally:
        again.close()


def test_the_fifo_source_in_process_reads_urls_and_recreates_a_deleted_fifo(
    http_server: Server, tmp_path: Path
) -> None:
    """FifoSource on the in-process loop: URLs written before the start are fetched; the
    FIFO deleted at 1 s is recreated by the next check (fifo.recreated) and read: a URL
    and `stop` written into the new one end the run, exit 0."""
    path = tmp_path / "in.fifo"
    fifo = open_fifo(path, 0o600)
    writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.write(writer, f"{http_server.url('/size/1')} {http_server.url('/size/2')}\n".encode())
    os.close(writer)

    def write_into_the_new_one() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, f"{http_server.url('/size/3')}\nstop\n".encode())
        os.close(fd)

    run = Run(lambda: [FifoSource(fifo, 0o600, 8192, logs.get())])
    run.at(1.0, path.unlink)
    run.at(3.0, write_into_the_new_one)
    try:
        assert run.run() == 0
    finally:
        run.sources[0].close()
    (recreated,) = run.events("fifo.recreated")
    assert recreated["reason"] == "deleted"
    fetched = [e["bytes"] for e in run.events("transfer.done")]
    assert sorted(fetched[:2]) == [1, 2]  # the first two run at once: either may end first
    assert fetched[2:] == [3]
    assert not path.exists()  # ours, and closed: unlinked


def test_runs_of_urls_are_added_as_each_url_alone_would_be(dead_port: int) -> None:
    """FIFO reads of plain lines (one Urls item each) get the transfer.added lines of their
    URLs one at a time: ids in order, a quote or backslash escaped as json.dumps does, an
    "@" looked at for a password; a URL with a password (not a plain run) shown redacted."""
    base = f"http://127.0.0.1:{dead_port}"
    reads = [
        f'{base}/a"b {base}/c\\d\n'.encode(),  # JSON escapes these
        f"{base}/e@f\n".encode(),  # an "@", but no password
        f"http://u:secret@127.0.0.1:{dead_port}/g\n".encode(),
        f"{base}/h\r\n{base}/i?j=k#l\n".encode(),
    ]
    tokenizer = Tokenizer()
    batches = [tokenizer.feed(data) for data in reads]
    assert [type(batch[0]) for batch in batches] == [Urls, Urls, Url, Urls]
    source = ListSource([])
    run = Run([source])
    for n, batch in enumerate(batches):
        run.at(0.01 * n, lambda batch=batch: source.hand_in(batch))
    run.at(1.0, lambda: source.hand_in([Stop()]))
    assert run.run() == 0
    lines = [line for line in run.stream.getvalue().splitlines() if '"transfer.added"' in line]
    assert [line == json.dumps(json.loads(line)) for line in lines] == [True] * 6
    added = [json.loads(line) for line in lines]
    assert [(e["id"], e["url"]) for e in added] == [
        (1, f'{base}/a"b'),
        (2, f"{base}/c\\d"),
        (3, f"{base}/e@f"),
        (4, f"http://u:***@127.0.0.1:{dead_port}/g"),
        (5, f"{base}/h"),
        (6, f"{base}/i?j=k#l"),
    ]
    assert len(run.events("transfer.done")) == 6
