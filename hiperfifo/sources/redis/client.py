"""The Redis side of the stream source: redis-py on two threads, never on the loop.

Owns the two connections and what runs on them. The reader thread re-reads
this consumer's own pending entries (from id 0), then reads new ones
(XREADGROUP ... BLOCK, COUNT = the ledger's credit) and now and then claims
entries others left idle past --redis-claim-idle (XAUTOCLAIM). The writer
thread writes results and acks (XADD + XACK in one MULTI/EXEC per batch) and
keeps held entries ours (XCLAIM ... JUSTID). Both reconnect with backoff on
their own and report outages. Everything for the loop goes into `outbox`,
followed by a call of `wake` (thread-safe: a pyuv.Async send); this module
never logs and never touches the loop's objects.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hiperfifo.sources.redis.ledger import Backoff, ClaimScan, Ledger

BLOCK_MS = 2000  # XREADGROUP BLOCK while idle: a stop unblocks it at once (CLIENT UNBLOCK)
SOCKET_TIMEOUT = 10.0  # beyond BLOCK: a Redis that stopped answering is an outage
CONNECT_TIMEOUT = 5.0
WRITE_BATCH = 512  # results per MULTI/EXEC at most
# A lone result waits this long for others to share its MULTI/EXEC (unless WRITE_SOON
# are there already): a round trip costs the daemon far more than a result in it.
WRITE_DELAY = 0.005
WRITE_SOON = 64
REFRESH_BATCH = 1000  # ids per XCLAIM at most
URL_FIELD = b"url"
# Every error is an outage (one redis.unavailable line, retried with backoff): refused or
# reset connections, timeouts, LOADING after a restart, READONLY after a failover, but
# also WRONGTYPE or NOPERM, which an operator must fix; the FIFO keeps working meanwhile.
REDIS_ERRORS = (redis.RedisError, OSError)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Where the shared queue lives and how this consumer takes part in it."""

    url: str
    stream: str = "hiperfifo:urls"
    group: str = "hiperfifo"
    consumer: str = ""  # "": the host name
    results: str = "hiperfifo:results"
    results_maxlen: int = 1_000_000
    claim_idle: float = 60.0
    window: int = 1024  # entries held at most (read or claimed, not yet acked)

    @property
    def name(self) -> str:
        return self.consumer or socket.gethostname()


# -- what the threads tell the loop --


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry taken by this consumer: its id and raw url field (None: none)."""

    id: str
    url: bytes | None
    claimed: bool = False  # taken over from another consumer (XAUTOCLAIM)
    deliveries: int = 1


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Redis could not be reached or answered with an error (one per outage)."""

    error: str


@dataclass(frozen=True, slots=True)
class Available:
    """Redis answers again after an outage of `seconds`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class ReaderStopped:
    """The reader took its last entries: none come after this."""


@dataclass(frozen=True, slots=True)
class WriterDone:
    """Every result handed over is written and acked (or Redis stayed away: `unwritten`)."""

    unwritten: int


Event = Entry | Unavailable | Available | ReaderStopped | WriterDone


@dataclass(frozen=True, slots=True)
class Result:
    """One results-stream entry to write, and the source entry it acks."""

    entry: str
    fields: dict[str, str | int | float]


@dataclass
class Counts:
    """What the threads did; plain ints written by one thread each, read by the loop."""

    read: int = 0  # entries taken by XREADGROUP
    claimed: int = 0  # entries taken by XAUTOCLAIM
    acked: int = 0  # results written and acked
    reader_trips: int = 0  # request/answer exchanges with Redis, one count per thread
    writer_trips: int = 0
    refreshed: int = 0  # XCLAIM JUSTID of held entries
    released: int = 0  # held entries given back unanswered (stop, abort)

    @property
    def round_trips(self) -> int:
        return self.reader_trips + self.writer_trips


class Link:
    """Up or down, as both threads see it: one Unavailable per outage, one Available after."""

    def __init__(self, post: Callable[[Event], None], clock: Callable[[], float]) -> None:
        self._post = post
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None

    @property
    def up(self) -> bool:
        return self._down_since is None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = self._clock()
        self._post(Unavailable(describe(exc)))

    def answered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            self._post(Available(round(self._clock() - since, 3)))


class StreamClient:
    """The reader and writer threads of one consumer, and what the loop may ask of them.

    The loop calls submit(), stop_reading(), finish() and close() and drains
    `outbox` when woken; none of them blocks on Redis.
    """

    def __init__(
        self,
        settings: StreamSettings,
        wake: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.consumer = settings.name
        self.outbox: deque[Event] = deque()
        self.counts = Counts()
        self.ledger = Ledger(settings.window, settings.claim_idle / 6)
        self._wake = wake
        self._wake_lock = threading.Lock()  # close() silences wake: the loop may be gone
        self._clock = clock
        self._link = Link(self._post, clock)
        self._claims = ClaimScan(every=max(settings.claim_idle / 2, 0.05))
        # Results to write: the loop appends (no lock: one append is atomic), the writer
        # removes what it wrote (under the lock); the loop takes the lock to wake the writer
        # only when it waits (_writer_idle), not for every result.
        self._results: list[Result] = []
        self._writer_idle = False
        self._stop_reads = threading.Event()
        self._abandon = threading.Event()  # close(): the writer gives up on what is left
        self._finishing = False  # no more results will come (under ledger.lock)
        self._reader_id: int | None = None  # CLIENT ID of the reader's connection
        self._unblock = False  # the writer should CLIENT UNBLOCK the reader (under lock)
        self._releases: list[str] = []  # held entries to give back to the group (under lock)
        self.paused = False  # the loop's back-pressure: no reads while True
        self._threads = [
            threading.Thread(target=self._read_forever, name="redis-reader", daemon=True),
            threading.Thread(target=self._write_forever, name="redis-writer", daemon=True),
        ]

    # -- the loop's side --

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def available(self) -> bool:
        return self._link.up

    @property
    def unwritten(self) -> int:
        """Results handed over and not yet written."""
        return len(self._results)

    def submit(self, result: Result) -> None:
        """Write `result` and ack its entry (soon, in a batch; after an outage, later)."""
        self._results.append(result)
        if self._writer_idle:  # the first result since the writer began to wait wakes it
            with self.ledger.lock:
                self._writer_idle = False
                self.ledger.lock.notify_all()

    def release(self, ids: list[str]) -> None:
        """Give held entries back unanswered: pending as idle long enough to be claimed.

        XCLAIM ... IDLE 2*S JUSTID keeps them in our pending list (our next start
        reads them again) but lets any consumer's next XAUTOCLAIM pass take them.
        """
        with self.ledger.lock:
            self._releases.extend(ids)
            self.ledger.lock.notify_all()

    def pause(self, paused: bool) -> None:
        """Back-pressure from the loop: no reads while paused (cheap when nothing changes)."""
        if paused == self.paused:
            return
        with self.ledger.lock:
            self.paused = paused
            self.ledger.lock.notify_all()

    def stop_reading(self) -> None:
        """No new reads: a blocked XREADGROUP is cut short; ReaderStopped follows."""
        self._stop_reads.set()
        with self.ledger.lock:
            self._unblock = True
            self.ledger.lock.notify_all()

    def finish(self) -> None:
        """No more results will come: write what is left, then WriterDone."""
        with self.ledger.lock:
            self._finishing = True
            self.ledger.lock.notify_all()

    def close(self, timeout: float) -> None:
        """After the loop: stop reading, write what is left, give back what was never
        answered (release), and stop both threads, waiting at most `timeout` s.

        The loop is gone: nothing is posted any more. What cannot be written in
        time (Redis unavailable) stays pending in Redis, not acked: another
        consumer takes it after --redis-claim-idle, or this one on its next start.
        """
        with self._wake_lock:
            self._wake = _nothing
        self.stop_reading()
        deadline = time.monotonic() + timeout
        reader, writer = self._threads
        if reader.is_alive():
            reader.join(max(0.0, deadline - time.monotonic()))
        with self.ledger.lock:
            answered = {result.entry for result in self._results}
            answered.update(self._releases)
            self._releases += [entry for entry in self.ledger.held if entry not in answered]
            self._finishing = True
            self.ledger.lock.notify_all()
        if writer.is_alive():
            writer.join(max(0.0, deadline - time.monotonic()))
        self._abandon.set()
        self._stop_reads.set()
        with self.ledger.lock:
            self.ledger.lock.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(1.0)

    def _post(self, event: Event) -> None:
        self.outbox.append(event)
        self._call_wake()

    def _call_wake(self) -> None:
        with self._wake_lock:
            try:
                self._wake()
            except Exception:  # the loop closed its end: nobody to tell
                self._wake = _nothing

    # -- connections --

    def _connect(self, role: str) -> redis.Redis:
        client = redis.Redis.from_url(
            self.settings.url,
            socket_timeout=SOCKET_TIMEOUT + BLOCK_MS / 1000,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),  # our own backoff: we must know what was sent
            client_name=f"hiperfifo:{self.consumer}:{role}",
            protocol=2,
        )
        client.ping()  # connects (and authenticates): an outage shows here
        self._trip(role)
        return client

    def _trip(self, role: str) -> None:
        if role == "reader":
            self.counts.reader_trips += 1
        else:
            self.counts.writer_trips += 1

    def _ensure_group(self, client: redis.Redis) -> None:
        """XGROUP CREATE ... 0 MKSTREAM: the group sees every entry already in the stream."""
        try:
            client.xgroup_create(self.settings.stream, self.settings.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        finally:
            self.counts.reader_trips += 1

    # -- the reader thread --

    def _read_forever(self) -> None:
        backoff = Backoff()
        client: redis.Redis | None = None
        cursor: str | None = "0"  # re-reading our own pending entries from here; None: done
        while not self._stop_reads.is_set():
            try:
                if client is None:
                    client = self._connect("reader")
                    self._reader_id = int(client.client_id())
                    self.counts.reader_trips += 1
                    self._ensure_group(client)
                    cursor = "0"  # after every (re)connect: a reply lost may have given us some
                credit = self._wait_for_credit()
                if credit:
                    cursor = self._read_once(client, credit, cursor)
                self._link.answered()
                backoff.reset()
            except REDIS_ERRORS as exc:
                _drop(client)  # NOGROUP (the stream was deleted): made again on reconnect
                client = None
                self._link.failed(exc)
                self._stop_reads.wait(backoff.next(random.random()))
        _drop(client)
        self._post(ReaderStopped())

    def _wait_for_credit(self) -> int:
        with self.ledger.lock:
            while (self.paused or not self.ledger.credit()) and not self._stop_reads.is_set():
                self.ledger.lock.wait(BLOCK_MS / 1000)
            return 0 if self._stop_reads.is_set() else self.ledger.credit()

    def _read_once(self, client: redis.Redis, credit: int, cursor: str | None) -> str | None:
        """One read: own pending (cursor), abandoned entries (claims due) or new ones."""
        settings = self.settings
        if cursor is not None:
            reply = client.xreadgroup(
                settings.group, self.consumer, {settings.stream: cursor}, count=credit
            )
            self.counts.reader_trips += 1
            entries = _entries(reply)
            self._take(entries, claimed=False)
            return entries[-1][0].decode() if entries else None
        now = self._clock()
        if self._claims.is_due(now):
            self._claim(client, credit, now)
            return None
        block = max(1, min(BLOCK_MS, int((self._claims.due - now) * 1000)))
        reply = client.xreadgroup(
            settings.group, self.consumer, {settings.stream: ">"}, count=credit, block=block
        )
        self.counts.reader_trips += 1
        self._take(_entries(reply), claimed=False)
        return None

    def _claim(self, client: redis.Redis, credit: int, now: float) -> None:
        settings = self.settings
        reply: Any = client.xautoclaim(
            settings.stream,
            settings.group,
            self.consumer,
            min_idle_time=int(settings.claim_idle * 1000),
            start_id=self._claims.cursor,
            count=credit,
        )
        self.counts.reader_trips += 1
        self._claims.advance(_text(reply[0]), now)
        # Redis 6.2 answers nil for an entry deleted from the stream: nothing to fetch
        self._take([(eid, fields) for eid, fields in reply[1] if eid is not None], claimed=True)

    def _take(self, entries: list[tuple[bytes, dict[bytes, bytes]]], claimed: bool) -> None:
        if not entries:
            return
        ids = [_text(eid) for eid, _ in entries]
        with self.ledger.lock:
            new = set(self.ledger.take(ids, self._clock()))
        taken = [
            Entry(eid, fields.get(URL_FIELD), claimed)
            for eid, (_, fields) in zip(ids, entries, strict=True)
            if eid in new
        ]
        if claimed:
            self.counts.claimed += len(taken)
        else:
            self.counts.read += len(taken)
        if taken:
            self.outbox.extend(taken)
            self._call_wake()

    # -- the writer thread --

    def _write_forever(self) -> None:
        backoff = Backoff()
        client: redis.Redis | None = None
        while not self._abandon.is_set():
            work = self._next_work()
            if work is None:
                break
            batch, refresh, releases, unblock = work
            try:
                if client is None:
                    client = self._connect("writer")
                if unblock:
                    self._unblock_reader(client)
                if refresh:
                    self._refresh(client, refresh)
                if batch:
                    self._write(client, batch)
                if releases:
                    self._release(client, releases)
                self._link.answered()
                backoff.reset()
            except REDIS_ERRORS as exc:
                _drop(client)
                client = None
                self._link.failed(exc)
                self._abandon.wait(backoff.next(random.random()))
        _drop(client)
        self._post(WriterDone(len(self._results)))

    def _next_work(self) -> tuple[list[Result], list[str], list[str], bool] | None:
        """Wait for results, releases, a refresh that is due or an unblock; None: done."""
        with self.ledger.lock:
            while not self._abandon.is_set():
                self._writer_idle = True  # before looking: a result added after is notified
                now = self._clock()
                refresh = self.ledger.refresh_due(now)
                unblock, self._unblock = self._unblock, False
                if self._results and not (refresh or unblock or self._releases):
                    self._gather(now)
                if self._results or self._releases or refresh or unblock:
                    self._writer_idle = False
                    batch = self._results[:WRITE_BATCH]
                    return batch, refresh, self._releases[:REFRESH_BATCH], unblock
                if self._finishing:
                    self._writer_idle = False
                    return None
                due = self.ledger.next_refresh()
                self.ledger.lock.wait(None if due is None else max(0.001, due - now))
            return None

    def _gather(self, now: float) -> None:
        """Let a few results gather for one MULTI/EXEC: WRITE_SOON of them, or WRITE_DELAY s
        (under the lock; the loop does not wake us for each one)."""
        until = now + WRITE_DELAY
        self._writer_idle = False
        while len(self._results) < WRITE_SOON and not self._finishing:
            left = until - self._clock()
            if left <= 0:
                return
            self.ledger.lock.wait(left)

    def _write(self, client: redis.Redis, batch: list[Result]) -> None:
        """XADD each result and XACK their entries in one MULTI/EXEC."""
        settings = self.settings
        pipe = client.pipeline(transaction=True)
        for result in batch:
            pipe.xadd(
                settings.results,
                result.fields,  # type: ignore[arg-type]
                maxlen=settings.results_maxlen,
                approximate=True,
            )
        ids = [result.entry for result in batch]
        pipe.xack(settings.stream, settings.group, *ids)
        try:
            pipe.execute()
        finally:
            self.counts.writer_trips += 1
        with self.ledger.lock:
            del self._results[: len(batch)]
            self.ledger.release(ids)
        self.counts.acked += len(batch)

    def _refresh(self, client: redis.Redis, ids: list[str]) -> None:
        """XCLAIM ... 0 ids JUSTID: held entries stay ours (their idle time starts again)."""
        settings = self.settings
        for start in range(0, len(ids), REFRESH_BATCH):
            chunk = ids[start : start + REFRESH_BATCH]
            client.xclaim(
                settings.stream, settings.group, self.consumer, 0, list[Any](chunk), justid=True
            )
            self.counts.writer_trips += 1
            self.counts.refreshed += len(chunk)
            with self.ledger.lock:
                self.ledger.refreshed(chunk, self._clock())

    def _release(self, client: redis.Redis, ids: list[str]) -> None:
        """XCLAIM ... 0 ids IDLE 2*S JUSTID: still ours, but claimable by anyone at once."""
        settings = self.settings
        idle_ms = int(settings.claim_idle * 2000)
        client.xclaim(
            settings.stream,
            settings.group,
            self.consumer,
            0,
            list[Any](ids),
            idle=idle_ms,
            justid=True,
        )
        self.counts.writer_trips += 1
        self.counts.released += len(ids)
        with self.ledger.lock:
            del self._releases[: len(ids)]
            self.ledger.release(ids)

    def _unblock_reader(self, client: redis.Redis) -> None:
        if self._reader_id is not None:
            client.client_unblock(self._reader_id)
            self.counts.writer_trips += 1


def _nothing() -> None:
    pass


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREADGROUP's answer for one stream: [(id, fields), ...]."""
    if not reply:
        return []
    return [(eid, fields or {}) for eid, fields in reply[0][1]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _drop(client: redis.Redis | None) -> None:
    """Close a connection, broken or not."""
    if client is not None:
        try:
            client.close()
        except Exception:  # closing a broken connection: nothing to add
            pass


def describe(exc: BaseException) -> str:
    """One line for a log: the exception's class and message."""
    text = str(exc).strip() or "no detail"
    return f"{type(exc).__name__}: {text}"
