"""The Redis stream source on the loop's side: entries in, results out, outages logged.

Owns what the loop sees of the stream: checking each entry's url as the FIFO
would (the daemon logs a bad one as input.rejected and done() answers it with
a REJECTED result, acked), handing entries to the daemon's Inbox, logging
redis.unavailable / redis.available / redis.claimed, the results-stream
fields of a finished transfer, and the counts for systemd's STATUS. Redis
itself is client.py's, on its threads: nothing here blocks, and the engine
never learns where a URL came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from hiperfifo.redact import redact
from hiperfifo.sources.base import Inbox, Item, Loop, Rejected, Url, Waker
from hiperfifo.sources.fifo import show, url_problem
from hiperfifo.sources.redis.client import (
    Available,
    Entry,
    ReaderStopped,
    Result,
    StreamClient,
    StreamSettings,
    Unavailable,
    WriterDone,
)

# A daemon holds at most this many entries per allowed connection (read or claimed, not
# yet acked): what the engine is fed at once, so a slow daemon does not hoard work a
# fast one could do, and results waiting for Redis in an outage stay bounded.
HELD_PER_CONNECTION = 16
# libcurl's CURLE_ABORTED_BY_CALLBACK: what the daemon's abort at --shutdown-timeout gives an
# unfinished transfer. Such an entry was not fetched: it is given back, not answered.
ABORTED = 42
# At exit, the last results wait this long at most for a Redis that is unavailable (the
# drain may have used --shutdown-timeout already, and systemd's TimeoutStopSec follows).
CLOSE_WAIT_AT_MOST = 10.0
RESULT_FIELDS = ("id", "url", "result", "result_name", "status", "bytes", "elapsed", "error")
_WHITESPACE = re.compile(rb"[ \t\r\n\x0b\x0c]")
_FIELD_TYPES = (str, int, float)


class Options(Protocol):
    """The daemon's settings this source reads (hiperfifo.config.Config has them)."""

    @property
    def redis(self) -> str | None: ...
    @property
    def redis_stream(self) -> str: ...
    @property
    def redis_group(self) -> str: ...
    @property
    def redis_consumer(self) -> str | None: ...
    @property
    def redis_results(self) -> str: ...
    @property
    def redis_results_maxlen(self) -> int: ...
    @property
    def redis_claim_idle(self) -> float: ...
    @property
    def redis_cacert(self) -> os.PathLike[str] | None: ...
    @property
    def max_queued(self) -> int: ...
    @property
    def max_total_connections(self) -> int: ...
    @property
    def max_url_length(self) -> int: ...
    @property
    def shutdown_timeout(self) -> float: ...


def settings(config: Options) -> StreamSettings:
    """The stream settings of --redis and friends (config.redis must be set)."""
    assert config.redis is not None
    return StreamSettings(
        url=config.redis,
        stream=config.redis_stream,
        group=config.redis_group,
        consumer=config.redis_consumer or "",
        results=config.redis_results,
        results_maxlen=config.redis_results_maxlen,
        claim_idle=config.redis_claim_idle,
        ca_file=os.fspath(config.redis_cacert) if config.redis_cacert is not None else "",
        window=min(config.max_queued, HELD_PER_CONNECTION * config.max_total_connections),
    )


def check(entry: str, raw: bytes | None, max_length: int) -> Url | Rejected:
    """An entry's url field as the FIFO would take it (whitespace around it is dropped)."""
    if raw is None:
        return Rejected("entry has no url field", "", entry)
    raw = raw.strip(b" \t\r\n\x0b\x0c")
    if len(raw) > max_length:
        return Rejected(f"url longer than {max_length} bytes", show(raw[: max_length + 1]), entry)
    if _WHITESPACE.search(raw):
        return Rejected("whitespace in URL", show(raw), entry)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected("not UTF-8", show(raw), entry)
    if text == "stop":
        return Rejected("not a URL (stop is a word for the FIFO)", "stop", entry)
    reason = url_problem(text)
    if reason:
        return Rejected(reason, show(raw), entry)
    return Url(text, entry)


class RedisSource:
    """This daemon as one consumer of the stream's group (the daemon's Source)."""

    name = "redis"
    journaled = False  # the stream's pending list is the record, until the ack
    wants_done = True  # each entry's result is written back, then it is acked

    def __init__(self, config: Options, log: FilteringBoundLogger) -> None:
        self.settings = settings(config)
        self._max_url_length = config.max_url_length
        self._close_timeout = min(config.shutdown_timeout, CLOSE_WAIT_AT_MOST)
        self._log = log
        self._inbox: Inbox | None = None
        self._waker: Waker | None = None
        self.client = StreamClient(self.settings, self._wake)
        self.reading = False

    @property
    def consumer(self) -> str:
        return self.client.consumer

    def _wake(self) -> None:  # on the client's threads
        if self._waker is not None:
            self._waker.send()

    # -- Source --

    def describe(self) -> dict[str, object]:
        """For daemon.started: where the stream is and who this consumer is."""
        return {
            "redis": redact(self.settings.url),
            "redis_stream": self.settings.stream,
            "redis_group": self.settings.group,
            "redis_consumer": self.consumer,
            "redis_results": self.settings.results,
            "redis_claim_idle": self.settings.claim_idle,
            "redis_held_at_most": self.settings.window,
        }

    def start(self, loop: Loop, inbox: Inbox) -> None:
        self._inbox = inbox
        self._waker = loop.waker(self._drain)
        self.client.start()
        self.reading = True

    def pause(self) -> None:
        self.client.pause(True)

    def resume(self) -> None:
        self.client.pause(False)

    def stop(self) -> None:
        self.client.stop_reading()

    def done(self, fields: Mapping[str, object]) -> None:
        """Write the result of an entry and ack it; an aborted one (42) is given back."""
        entry = fields.get("entry")
        if not isinstance(entry, str):
            return
        if fields.get("result") == ABORTED:
            self.client.release([entry])  # not fetched: another consumer takes it at once
            return
        written: dict[str, str | int | float] = {}
        for name in RESULT_FIELDS:
            value = fields.get(name)
            written[name] = value if isinstance(value, _FIELD_TYPES) else ""
        written["url"] = redact(str(written["url"]))
        written["status"] = written["status"] or 0
        written["consumer"] = self.consumer
        written["entry"] = entry
        self.client.submit(Result(entry, written))

    def close(self) -> None:
        """After the loop: write the last results and give back what was not fetched."""
        client = self.client
        client.close(self._close_timeout)
        counts = client.counts
        fields = {
            "consumer": self.consumer,
            "read": counts.read,
            "claimed": counts.claimed,
            "acked": counts.acked,
            "released": counts.released,
            "round_trips": counts.round_trips,
        }
        if client.unwritten:
            self._log.warning(
                "redis.stopped",
                **fields,
                unwritten=client.unwritten,
                reason="Redis unavailable: those entries stay pending; another consumer "
                "takes them after --redis-claim-idle, or this one on its next start",
            )
        else:
            self._log.info("redis.stopped", **fields)

    # -- what the threads posted (on the loop) --

    def _drain(self) -> None:
        client = self.client
        items: list[Item] = []
        claimed = 0
        while client.outbox:
            event = client.outbox.popleft()
            if isinstance(event, Entry):
                items.append(check(event.id, event.url, self._max_url_length))
                claimed += event.claimed
            elif isinstance(event, Unavailable):
                self._log.warning(
                    "redis.unavailable",
                    error=event.error,
                    unwritten=client.unwritten,
                    held=len(client.ledger.held),
                    action="retrying, at most 5 s apart; transfers go on",
                )
            elif isinstance(event, Available):
                self._log.info("redis.available", after=event.seconds, unwritten=client.unwritten)
            elif isinstance(event, ReaderStopped):
                self.reading = False
            elif isinstance(event, WriterDone):
                pass
        if claimed:
            self._log.info(
                "redis.claimed",
                count=claimed,
                reason=f"pending on another consumer for over {self.settings.claim_idle:g} s",
            )
        if items and self._inbox is not None:
            self._inbox.take(self, items)

    def status(self) -> str:
        """For systemd's STATUS=: what this consumer took and answered."""
        counts = self.client.counts
        state = "" if self.client.available else ", Redis unavailable"
        return (
            f"stream {counts.read} read, {counts.claimed} claimed, {counts.acked} acked, "
            f"{len(self.client.ledger.held)} held{state}"
        )
