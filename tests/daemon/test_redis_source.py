"""The Redis source on a real pyuv loop and a real redis-server, with a stand-in daemon Inbox.

Entries reach the loop through the waker, bad ones come in as Rejected (with
their entry id), done() writes results and acks, pause() stops reads, and
close() gives back what was never answered.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
import structlog
from redis_support import RedisServer

from hiperfifo import logs
from hiperfifo.config import Config
from hiperfifo.driver import Driver
from hiperfifo.engine import Multi
from hiperfifo.sources.base import Item, Rejected, Source, Url
from hiperfifo.sources.redis.source import RedisSource, check

WAIT = 20.0


class Inbox:
    """The daemon's side, reduced: records items; answers URLs at once unless told not to."""

    def __init__(self, answer: bool = True) -> None:
        self.items: list[Item] = []
        self.answer = answer

    def take(self, source: Source, items: Sequence[Item]) -> None:
        self.items.extend(items)
        for item in items:
            if isinstance(item, Url) and self.answer:
                source.done(_done(item.entry, item.url, 0, "OK"))
            elif isinstance(item, Rejected):
                source.done(_done(item.entry, item.token, -1, "REJECTED", item.reason))

    def room(self) -> int:
        return 1000

    def lost(self, source: Source, reason: str) -> None:
        raise AssertionError(reason)


def _done(entry: str | None, url: str, result: int, name: str, error: str = "") -> dict[str, Any]:
    return {
        "id": 7,
        "url": url,
        "entry": entry,
        "result": result,
        "result_name": name,
        "status": 200 if result == 0 else None,
        "bytes": 5,
        "elapsed": 0.01,
        "error": error,
    }


def run_until(driver: Driver, what: Callable[[], bool]) -> None:
    """Run the loop until `what()` holds (checked every 20 ms); fail after WAIT s."""
    deadline = time.monotonic() + WAIT

    def check_now() -> None:
        if what() or time.monotonic() > deadline:
            driver.stop()

    handle = driver.every(0.02, check_now)
    driver.run()
    handle.stop()
    assert what(), "gave up waiting"


@pytest.fixture
def loop() -> Iterator[Driver]:
    """A pyuv loop (the daemon's Driver) with logs going to a StringIO."""
    logs.configure("json", "debug", io.StringIO())
    driver = Driver(Multi(), lambda messages: None)
    yield driver
    driver.close()
    structlog.reset_defaults()


def source_for(server: RedisServer, **options: Any) -> RedisSource:
    config = Config(redis=server.url, redis_consumer="c1", **options)
    return RedisSource(config, logs.get())


def add(server: RedisServer, entries: list[Mapping[str, str]]) -> list[str]:
    with server.client() as r:
        return [r.xadd("hiperfifo:urls", dict(fields)).decode() for fields in entries]


def test_check_takes_what_the_fifo_takes() -> None:
    """A url field is checked as a FIFO token; the entry id goes with the outcome."""
    assert check("1-0", b" http://example.org/x\n", 100) == Url("http://example.org/x", "1-0")
    assert check("1-1", None, 100) == Rejected("entry has no url field", "", "1-1")
    assert isinstance(check("1-2", b"ftp://x/", 100), Rejected)
    assert check("1-3", b"http://a/ b", 100) == Rejected("whitespace in URL", "http://a/ b", "1-3")
    stop = check("1-4", b"stop", 100)
    assert isinstance(stop, Rejected)
    assert stop.token == "stop"
    long = check("1-5", b"http://a/" + b"x" * 200, 100)
    assert isinstance(long, Rejected)
    assert "longer than 100" in long.reason


def test_entries_come_through_the_loop_and_are_answered(
    redis_server: RedisServer, loop: Driver
) -> None:
    """Good and bad entries reach the Inbox in order; results and acks follow done()."""
    ids = add(redis_server, [{"url": "http://example.org/1"}, {"nourl": "x"}])
    source = source_for(redis_server)
    inbox = Inbox()
    source.start(loop, inbox)
    run_until(loop, lambda: source.client.counts.acked == 2)
    source.close()
    assert inbox.items == [
        Url("http://example.org/1", ids[0]),
        Rejected("entry has no url field", "", ids[1]),
    ]
    with redis_server.client() as r:
        results = [
            {k.decode(): v.decode() for k, v in f.items()}
            for _, f in r.xrange("hiperfifo:results")
        ]
        assert r.xpending("hiperfifo:urls", "hiperfifo")["pending"] == 0
    assert results[0] == {
        "id": "7",
        "url": "http://example.org/1",
        "result": "0",
        "result_name": "OK",
        "status": "200",
        "bytes": "5",
        "elapsed": "0.01",
        "error": "",
        "consumer": "c1",
        "entry": ids[0],
    }
    assert results[1]["result"] == "-1"
    assert results[1]["result_name"] == "REJECTED"
    assert results[1]["status"] == "0"


def test_paused_source_reads_nothing(redis_server: RedisServer, loop: Driver) -> None:
    """pause(): no reads while the daemon's queue is full; resume(): the entries come."""
    source = source_for(redis_server)
    inbox = Inbox()
    # Paused before the reader thread exists: a read it issued before pause() may still
    # deliver (within its credit, which is what back-pressure promises), so pausing after
    # start() would race the first XREADGROUP.
    source.pause()
    source.start(loop, inbox)
    add(redis_server, [{"url": "http://example.org/1"}])
    run_until(loop, lambda: source.client.counts.round_trips > 0)
    time.sleep(0.3)  # not synchronisation: a chance for a wrong read to show
    run_until(loop, lambda: True)
    assert inbox.items == []
    source.resume()
    run_until(loop, lambda: len(inbox.items) == 1)
    source.close()


def test_close_gives_back_unanswered_and_aborted_entries(
    redis_server: RedisServer, loop: Driver
) -> None:
    """Entries handed in but never done, and one aborted (42), are released, not acked."""
    ids = add(redis_server, [{"url": f"http://example.org/{n}"} for n in range(3)])
    source = source_for(redis_server, redis_claim_idle=30)
    inbox = Inbox(answer=False)
    source.start(loop, inbox)
    run_until(loop, lambda: len(inbox.items) == 3)
    source.done(_done(ids[0], "http://example.org/0", 0, "OK"))
    source.done(_done(ids[1], "http://example.org/1", 42, "ABORTED_BY_CALLBACK"))
    source.stop()
    source.close()
    assert source.client.counts.acked == 1
    assert source.client.counts.released == 2
    with redis_server.client() as r:
        pending = r.xpending_range("hiperfifo:urls", "hiperfifo", "-", "+", 10)
    assert sorted(p["message_id"].decode() for p in pending) == ids[1:]
    assert all(p["time_since_delivered"] >= 60_000 for p in pending)  # claimable at once
