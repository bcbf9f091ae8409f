"""The Redis stream client's threads against a real redis-server: reads, acks, claims, outages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from redis_support import RedisServer

from hiperfifo.sources.redis import reader, shared
from hiperfifo.sources.redis.client import (
    Available,
    Entry,
    Event,
    ReaderStopped,
    Result,
    StreamClient,
    StreamSettings,
    Unavailable,
    WriterDone,
)

WAIT = 20.0


class Inbox:
    """What one client posted, gathered as the loop would: woken, then drain the outbox."""

    def __init__(self) -> None:
        self.woken = threading.Event()
        self.events: list[Event] = []
        self.client: StreamClient | None = None

    def wake(self) -> None:
        self.woken.set()

    def drain(self) -> None:
        assert self.client is not None
        while self.client.outbox:
            self.events.append(self.client.outbox.popleft())

    def entries(self) -> list[Entry]:
        self.drain()
        return [e for e in self.events if isinstance(e, Entry)]

    def wait(self, what: Callable[[], bool], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            if what():
                return
            assert time.monotonic() < deadline, f"gave up waiting; events: {self.events[-5:]}"
            self.woken.wait(0.05)
            self.woken.clear()

    def of(self, kind: type) -> list[Event]:
        self.drain()
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def clients(redis_server: RedisServer) -> Iterator[Callable[..., tuple[StreamClient, Inbox]]]:
    """Start StreamClients on the test server (settings overridable); closed afterwards."""
    started: list[StreamClient] = []

    def make(**overrides: object) -> tuple[StreamClient, Inbox]:
        settings = StreamSettings(**{"url": redis_server.url, "consumer": "a", **overrides})  # type: ignore[arg-type]
        inbox = Inbox()
        client = StreamClient(settings, inbox.wake)
        inbox.client = client
        started.append(client)
        client.start()
        return client, inbox

    yield make
    for client in started:
        client.close(5)


def add_urls(server: RedisServer, count: int, stream: str = "hiperfifo:urls") -> list[str]:
    with server.client() as r:
        pipe = r.pipeline(transaction=False)
        for n in range(count):
            pipe.xadd(stream, {"url": f"http://example.test/{n}"})
        return [eid.decode() for eid in pipe.execute()]


def result_for(entry: Entry) -> Result:
    return Result(entry.id, {"entry": entry.id, "url": (entry.url or b"").decode(), "result": 0})


def reader_blocked(server: RedisServer) -> bool:
    """The reader's connection is inside a blocking XREADGROUP."""
    with server.client() as r:
        return any(
            c.get("name", "").endswith(":reader") and "b" in c.get("flags", "")
            for c in r.client_list()
        )


def pending(server: RedisServer) -> dict[str, int]:
    """Pending entries per consumer of the group."""
    with server.client() as r:
        summary = r.xpending("hiperfifo:urls", "hiperfifo")
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}


def test_group_is_made_from_id_0_and_entries_added_before_are_read(
    redis_server: RedisServer, clients: Callable[..., tuple[StreamClient, Inbox]]
) -> None:
    """Entries XADDed before any daemon started are read (the group starts at 0, MKSTREAM)."""
    ids = add_urls(redis_server, 5)
    client, inbox = clients()
    inbox.wait(lambda: len(inbox.entries()) == 5)
    assert [e.id for e in inbox.entries()] == ids
    assert inbox.entries()[0].url == b"http://example.test/0"
    assert pending(redis_server) == {"a": 5}
    assert client.counts.read == 5


def test_results_are_written_and_acked_in_one_transaction(
    redis_server: RedisServer, clients: Callable[..., tuple[StreamClient, Inbox]]
) -> None:
    """A submitted result lands in the results stream and its entry leaves the pending list."""
    add_urls(redis_server, 3)
    client, inbox = clients()
    inbox.wait(lambda: len(inbox.entries()) == 3)
    for entry in inbox.entries():
        client.submit(result_for(entry))
    inbox.wait(lambda: client.counts.acked == 3)
    with redis_server.client() as r:
        results = r.xrange("hiperfifo:results")
    assert [fields[b"entry"].decode() for _, fields in results] == [e.id for e in inbox.entries()]
    assert pending(redis_server) == {}


def test_reads_only_as_many_as_the_window_allows(
    redis_server: RedisServer, clients: Callable[..., tuple[StreamClient, Inbox]]
) -> None:
    """With a window of 4, four entries are held until acks make room; then four more."""
    add_urls(redis_server, 10)
    client, inbox = clients(window=4)
    inbox.wait(lambda: len(inbox.entries()) == 4)
    time.sleep(0.3)  # not synchronisation: a chance for a wrong extra read to show
    assert len(inbox.entries()) == 4
    assert pending(redis_server) == {"a": 4}
    for entry in inbox.entries():
        client.submit(result_for(entry))
    inbox.wait(lambda: len(inbox.entries()) == 8)
    assert pending(redis_server) == {"a": 4}


def test_own_pending_entries_are_read_again_on_start(
    redis_server: RedisServer, clients: Callable[..., tuple[StreamClient, Inbox]]
) -> None:
    """A consumer that stopped without acking gets its pending entries back first."""
    ids = add_urls(redis_server, 3)
    first, inbox = clients(consumer="same")
    inbox.wait(lambda: len(inbox.entries()) == 3)
    first.close(5)
    add_urls(redis_server, 2)
    _, again = clients(consumer="same")
    again.wait(lambda: len(again.entries()) == 5)
    assert [e.id for e in again.entries()][:3] == ids
    assert not any(e.claimed for e in again.entries())  # its own, read again: not claimed


def test_entries_of_a_dead_consumer_are_claimed_after_the_idle_time(
    redis_server: RedisServer, clients: Callable[..., tuple[StreamClient, Inbox]]
) -> None:
    """Entries pending on a consumer that stopped refreshing are claimed by another."""
    ids = add_urls(redis_server, 3)
    dead, inbox = clients(consumer="dead", claim_idle=0.5)
    inbox.wait(lambda: len(inbox.entries()) == 3)
    dead.close(5)  # it holds 3, acks nothing and no longer refreshes them
    _, other = clients(consumer="other", claim_idle=0.5)
    other.wait(lambda: len(other.entries()) == 3)
    assert sorted(e.id for e in other.entries()) == sorted(ids)
    assert all(e.claimed for e in other.entries())
    assert pending(redis_server) == {"other": 3}


def test_held_entries_are_refreshed_so_nobody_claims_them(
    redis_server: RedisServer, clients: Callable[..., tuple[StreamClient, Inbox]]
) -> None:
    """A live consumer holding entries far past the idle time keeps them (XCLAIM JUSTID)."""
    add_urls(redis_server, 3)
    slow, inbox = clients(consumer="slow", claim_idle=0.6)
    inbox.wait(lambda: len(inbox.entries()) == 3)
    _, other = clients(consumer="other", claim_idle=0.6)
    inbox.wait(lambda: slow.counts.refreshed >= 3 * 30)  # refreshed every 0.1 s: 5 idle times
    assert other.entries() == []
    assert pending(redis_server) == {"slow": 3}


def test_an_outage_is_one_unavailable_and_one_available_and_loses_nothing(
    redis_server: RedisServer, clients: Callable[..., tuple[StreamClient, Inbox]]
) -> None:
    """Redis killed with results waiting: one Unavailable; restarted: one Available, written."""
    add_urls(redis_server, 4)
    client, inbox = clients()
    inbox.wait(lambda: len(inbox.entries()) == 4)
    redis_server.kill()
    for entry in inbox.entries():
        client.submit(result_for(entry))
    inbox.wait(lambda: bool(inbox.of(Unavailable)))
    time.sleep(1.0)  # several reconnect tries fail meanwhile: still one line
    redis_server.start()
    inbox.wait(lambda: client.counts.acked == 4)
    inbox.wait(lambda: bool(inbox.of(Available)))
    assert len(inbox.of(Unavailable)) == 1
    assert len(inbox.of(Available)) == 1
    with redis_server.client() as r:
        assert r.xlen("hiperfifo:results") == 4
    assert pending(redis_server) == {}


def test_stop_reading_is_prompt_and_finish_flushes(
    redis_server: RedisServer,
    clients: Callable[..., tuple[StreamClient, Inbox]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """stop_reading() cuts a blocked read short (CLIENT UNBLOCK, not the end of BLOCK);
    finish() writes the last results first."""
    monkeypatch.setattr(shared, "BLOCK_MS", 30_000)  # a read that would block for 30 s
    monkeypatch.setattr(reader, "BLOCK_MS", 30_000)
    add_urls(redis_server, 2)
    client, inbox = clients()
    inbox.wait(lambda: len(inbox.entries()) == 2)
    inbox.wait(lambda: reader_blocked(redis_server))
    began = time.monotonic()
    client.stop_reading()
    inbox.wait(lambda: bool(inbox.of(ReaderStopped)))
    assert time.monotonic() - began < 15  # half the block: the unblock ended it
    for entry in inbox.entries():
        client.submit(result_for(entry))
    client.finish()
    inbox.wait(lambda: bool(inbox.of(WriterDone)))
    assert inbox.of(WriterDone) == [WriterDone(0)]
    assert pending(redis_server) == {}
    add_urls(redis_server, 1)
    time.sleep(0.2)
    assert len(inbox.entries()) == 2


def test_close_gives_back_what_was_never_answered(
    redis_server: RedisServer, clients: Callable[..., tuple[StreamClient, Inbox]]
) -> None:
    """Held entries without a result at close() are claimable at once, not after the idle time."""
    add_urls(redis_server, 3)
    first, inbox = clients(consumer="first", claim_idle=30)
    inbox.wait(lambda: len(inbox.entries()) == 3)
    answered = inbox.entries()[0]
    first.submit(result_for(answered))
    first.close(5)
    assert first.counts.acked == 1
    assert first.counts.released == 2
    began = time.monotonic()
    _, other = clients(consumer="other", claim_idle=30)
    other.wait(lambda: len(other.entries()) == 2)
    assert time.monotonic() - began < 10  # not the 30 s idle time
    assert all(e.claimed for e in other.entries())
    assert answered.id not in {e.id for e in other.entries()}
