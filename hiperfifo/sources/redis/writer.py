"""The writer thread: results, acks, refreshes and releases, on a connection of its own.

Results go out in batches, each XADD to the results stream and one XACK of
their entries in a single MULTI/EXEC; held entries are claimed back to this
consumer (XCLAIM ... JUSTID) before anyone could take them; entries given back
get an idle time that lets any consumer claim them at once; and on stop it
cuts the reader's blocked read short (CLIENT UNBLOCK).
"""

from __future__ import annotations

import random
from itertools import chain
from typing import Any

import redis

from hiperfifo.sources.redis.ledger import Backoff
from hiperfifo.sources.redis.shared import (
    REDIS_ERRORS,
    REFRESH_BATCH,
    WRITE_BATCH,
    WRITE_DELAY,
    WRITE_SOON,
    Result,
    Shared,
    WriterDone,
    drop,
)


class Writer:
    """The body of the writer thread (run())."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def run(self) -> None:
        backoff = Backoff()
        client: redis.Redis | None = None
        while not self.shared.abandon.is_set():
            work = self._next_work()
            if work is None:
                break
            batch, refresh, releases, unblock = work
            try:
                if client is None:
                    client = self.shared.connect("writer")
                if unblock:
                    self._unblock_reader(client)
                if refresh:
                    self._refresh(client, refresh)
                if batch:
                    self._write(client, batch)
                if releases:
                    self._release(client, releases)
                self.shared.link.answered()
                backoff.reset()
            except REDIS_ERRORS as exc:
                drop(client)
                client = None
                self.shared.link.failed(exc)
                self.shared.abandon.wait(backoff.next(random.random()))
        drop(client)
        self.shared.post(WriterDone(len(self.shared.results)))

    def _next_work(self) -> tuple[list[Result], list[str], list[str], bool] | None:
        """Wait for results, releases, a refresh that is due or an unblock; None: done."""
        with self.shared.ledger.lock:
            while not self.shared.abandon.is_set():
                self.shared.writer_idle = True  # before looking: a result added after is notified
                now = self.shared.clock()
                refresh = self.shared.ledger.refresh_due(now)
                unblock, self.shared.unblock_wanted = self.shared.unblock_wanted, False
                if self.shared.results and not (refresh or unblock or self.shared.releases):
                    self._gather(now)
                if self.shared.results or self.shared.releases or refresh or unblock:
                    self.shared.writer_idle = False
                    batch = self.shared.results[:WRITE_BATCH]
                    return batch, refresh, self.shared.releases[:REFRESH_BATCH], unblock
                if self.shared.finishing:
                    self.shared.writer_idle = False
                    return None
                due = self.shared.ledger.next_refresh()
                self.shared.ledger.lock.wait(None if due is None else max(0.001, due - now))
            return None

    def _gather(self, now: float) -> None:
        """Let a few results gather for one MULTI/EXEC: WRITE_SOON of them, or WRITE_DELAY s
        (under the lock; the loop does not wake us for each one)."""
        until = now + WRITE_DELAY
        self.shared.writer_idle = False
        while len(self.shared.results) < WRITE_SOON and not self.shared.finishing:
            left = until - self.shared.clock()
            if left <= 0:
                return
            self.shared.ledger.lock.wait(left)

    def _write(self, client: redis.Redis, batch: list[Result]) -> None:
        """XADD each result and XACK their entries in one MULTI/EXEC."""
        settings = self.shared.settings
        pipe = client.pipeline(transaction=True)
        # XADD key MAXLEN ~ N * field value...: as redis-py's xadd() sends it, without the
        # checks it makes of its keyword arguments for every result
        xadd = ("XADD", settings.results, "MAXLEN", "~", settings.results_maxlen, "*")
        for result in batch:
            pipe.execute_command(*xadd, *chain.from_iterable(result.fields.items()))  # type: ignore[no-untyped-call]
        ids = [result.entry for result in batch]
        pipe.xack(settings.stream, settings.group, *ids)
        try:
            pipe.execute()
        finally:
            self.shared.counts.writer_trips += 1
        with self.shared.ledger.lock:
            del self.shared.results[: len(batch)]
            self.shared.ledger.release(ids)
        self.shared.counts.acked += len(batch)

    def _refresh(self, client: redis.Redis, ids: list[str]) -> None:
        """XCLAIM ... 0 ids JUSTID: held entries stay ours (their idle time starts again)."""
        settings = self.shared.settings
        for start in range(0, len(ids), REFRESH_BATCH):
            chunk = ids[start : start + REFRESH_BATCH]
            client.xclaim(
                settings.stream,
                settings.group,
                self.shared.consumer,
                0,
                list[Any](chunk),
                justid=True,
            )
            self.shared.counts.writer_trips += 1
            self.shared.counts.refreshed += len(chunk)
            with self.shared.ledger.lock:
                self.shared.ledger.refreshed(chunk, self.shared.clock())

    def _release(self, client: redis.Redis, ids: list[str]) -> None:
        """XCLAIM ... 0 ids IDLE 2*S JUSTID: still ours, but claimable by anyone at once."""
        settings = self.shared.settings
        idle_ms = int(settings.claim_idle * 2000)
        client.xclaim(
            settings.stream,
            settings.group,
            self.shared.consumer,
            0,
            list[Any](ids),
            idle=idle_ms,
            justid=True,
        )
        self.shared.counts.writer_trips += 1
        self.shared.counts.released += len(ids)
        with self.shared.ledger.lock:
            del self.shared.releases[: len(ids)]
            self.shared.ledger.release(ids)

    def _unblock_reader(self, client: redis.Redis) -> None:
        if self.shared.reader_id is not None:
            client.client_unblock(self.shared.reader_id)
            self.shared.counts.writer_trips += 1
