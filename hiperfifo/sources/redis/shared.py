"""What the stream client's two threads share, and what they hand the loop.

Owns the settings, the events the loop drains from `outbox` (Entry,
Unavailable, Available, ReaderStopped, WriterDone), the counts, the link
state (one Unavailable per outage), the state both threads work on under the
ledger's lock, and how a connection is made. No thread of its own and no
logging: reader.py and writer.py run on it, client.py is what the loop sees.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hiperfifo.sources.redis.ledger import Ledger

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
    ca_file: str = ""  # PEM CAs for a rediss:// server ("": the system's)

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


class Shared:
    """The state of one consumer that the loop, the reader and the writer share.

    Plain attributes: the loop appends to `results` without the lock (one append
    is atomic) and takes the ledger's lock only to wake a waiting writer; the
    rest changes under `ledger.lock`.
    """

    def __init__(
        self, settings: StreamSettings, wake: Callable[[], None], clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.consumer = settings.name
        self.clock = clock
        self.outbox: deque[Event] = deque()
        self.counts = Counts()
        self.ledger = Ledger(settings.window, settings.claim_idle / 6)
        self.wake = wake
        self.wake_lock = threading.Lock()  # close() silences wake: the loop may be gone
        self.link = Link(self.post, clock)
        # Results to write: the loop appends, the writer removes what it wrote; the loop
        # wakes the writer only when it waits (writer_idle), not for every result.
        self.results: list[Result] = []
        self.writer_idle = False
        self.stop_reads = threading.Event()
        self.abandon = threading.Event()  # close(): the writer gives up on what is left
        self.finishing = False  # no more results will come (under ledger.lock)
        self.reader_id: int | None = None  # CLIENT ID of the reader's connection
        self.unblock_wanted = False  # the writer should CLIENT UNBLOCK the reader (under lock)
        self.releases: list[str] = []  # held entries to give back to the group (under lock)
        self.paused = False  # the loop's back-pressure: no reads while True

    def post(self, event: Event) -> None:
        self.outbox.append(event)
        self.call_wake()

    def call_wake(self) -> None:
        with self.wake_lock:
            try:
                self.wake()
            except Exception:  # the loop closed its end: nobody to tell
                self.wake = nothing

    def connect(self, role: str) -> redis.Redis:
        tls: dict[str, str] = {}
        if self.settings.ca_file and self.settings.url[:9].lower() == "rediss://":
            tls["ssl_ca_certs"] = self.settings.ca_file  # plain connections take no ssl_*
        client = redis.Redis.from_url(
            self.settings.url,
            **tls,
            socket_timeout=SOCKET_TIMEOUT + BLOCK_MS / 1000,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),  # our own backoff: we must know what was sent
            client_name=f"hiperfifo:{self.consumer}:{role}",
            protocol=2,
        )
        client.ping()  # connects (and authenticates): an outage shows here
        self.trip(role)
        return client

    def trip(self, role: str) -> None:
        if role == "reader":
            self.counts.reader_trips += 1
        else:
            self.counts.writer_trips += 1

    def ensure_group(self, client: redis.Redis) -> None:
        """XGROUP CREATE ... 0 MKSTREAM: the group sees every entry already in the stream."""
        try:
            client.xgroup_create(self.settings.stream, self.settings.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        finally:
            self.counts.reader_trips += 1


def nothing() -> None:
    pass


def entries_of(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREADGROUP's answer for one stream: [(id, fields), ...]."""
    if not reply:
        return []
    return [(eid, fields or {}) for eid, fields in reply[0][1]]


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def drop(client: redis.Redis | None) -> None:
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
