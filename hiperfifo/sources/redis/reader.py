"""The reader thread: this consumer's reads, on a connection of its own.

On every (re)connect it makes sure of the group (XGROUP CREATE ... 0
MKSTREAM) and reads its own pending entries again from id 0 (a reply lost in
an outage may have given it some), then new ones (XREADGROUP ... BLOCK, COUNT
= the ledger's credit), and every --redis-claim-idle/2 s it claims entries
others left idle that long (XAUTOCLAIM). What it takes goes to the loop's
outbox; an entry it holds already is not handed in twice.
"""

from __future__ import annotations

import random
from typing import Any

import redis

from hiperfifo.sources.redis.ledger import Backoff, ClaimScan
from hiperfifo.sources.redis.shared import (
    BLOCK_MS,
    REDIS_ERRORS,
    URL_FIELD,
    Entry,
    ReaderStopped,
    Shared,
    drop,
    entries_of,
    text,
)


class Reader:
    """The body of the reader thread (run())."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._claims = ClaimScan(every=max(shared.settings.claim_idle / 2, 0.05))

    def run(self) -> None:
        backoff = Backoff()
        client: redis.Redis | None = None
        cursor: str | None = "0"  # re-reading our own pending entries from here; None: done
        while not self.shared.stop_reads.is_set():
            try:
                if client is None:
                    client = self.shared.connect("reader")
                    self.shared.reader_id = int(client.client_id())
                    self.shared.counts.reader_trips += 1
                    self.shared.ensure_group(client)
                    cursor = "0"  # after every (re)connect: a reply lost may have given us some
                credit = self._wait_for_credit()
                if credit:
                    cursor = self._read_once(client, credit, cursor)
                self.shared.link.answered()
                backoff.reset()
            except REDIS_ERRORS as exc:
                drop(client)  # NOGROUP (the stream was deleted): made again on reconnect
                client = None
                self.shared.link.failed(exc)
                self.shared.stop_reads.wait(backoff.next(random.random()))
        drop(client)
        self.shared.post(ReaderStopped())

    def _wait_for_credit(self) -> int:
        with self.shared.ledger.lock:
            while (
                self.shared.paused or not self.shared.ledger.credit()
            ) and not self.shared.stop_reads.is_set():
                self.shared.ledger.lock.wait(BLOCK_MS / 1000)
            return 0 if self.shared.stop_reads.is_set() else self.shared.ledger.credit()

    def _read_once(self, client: redis.Redis, credit: int, cursor: str | None) -> str | None:
        """One read: own pending (cursor), abandoned entries (claims due) or new ones."""
        settings = self.shared.settings
        if cursor is not None:
            reply = client.xreadgroup(
                settings.group, self.shared.consumer, {settings.stream: cursor}, count=credit
            )
            self.shared.counts.reader_trips += 1
            entries = entries_of(reply)
            self._take(entries, claimed=False)
            return entries[-1][0].decode() if entries else None
        now = self.shared.clock()
        if self._claims.is_due(now):
            self._claim(client, credit, now)
            return None
        block = max(1, min(BLOCK_MS, int((self._claims.due - now) * 1000)))
        reply = client.xreadgroup(
            settings.group, self.shared.consumer, {settings.stream: ">"}, count=credit, block=block
        )
        self.shared.counts.reader_trips += 1
        self._take(entries_of(reply), claimed=False)
        return None

    def _claim(self, client: redis.Redis, credit: int, now: float) -> None:
        settings = self.shared.settings
        reply: Any = client.xautoclaim(
            settings.stream,
            settings.group,
            self.shared.consumer,
            min_idle_time=int(settings.claim_idle * 1000),
            start_id=self._claims.cursor,
            count=credit,
        )
        self.shared.counts.reader_trips += 1
        self._claims.advance(text(reply[0]), now)
        # Redis 6.2 answers nil for an entry deleted from the stream: nothing to fetch
        self._take([(eid, fields) for eid, fields in reply[1] if eid is not None], claimed=True)

    def _take(self, entries: list[tuple[bytes, dict[bytes, bytes]]], claimed: bool) -> None:
        if not entries:
            return
        ids = [text(eid) for eid, _ in entries]
        with self.shared.ledger.lock:
            new = set(self.shared.ledger.take(ids, self.shared.clock()))
        taken = [
            Entry(eid, fields.get(URL_FIELD), claimed)
            for eid, (_, fields) in zip(ids, entries, strict=True)
            if eid in new
        ]
        if claimed:
            self.shared.counts.claimed += len(taken)
        else:
            self.shared.counts.read += len(taken)
        if taken:
            self.shared.outbox.extend(taken)
            self.shared.call_wake()
