"""The Redis side of the stream source, as the loop sees it: redis-py on two threads.

Owns the two threads (reader.py: XREADGROUP, XAUTOCLAIM; writer.py: results
and acks in MULTI/EXEC, XCLAIM refreshes and releases) and what the loop may
ask of them: submit a result, give entries back, pause, stop reading, finish
and close. None of it blocks on Redis. Everything for the loop goes into
`outbox`, followed by a call of `wake` (thread-safe: a pyuv.Async send); the
threads never log and never touch the loop's objects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hiperfifo.sources.redis.reader import Reader
from hiperfifo.sources.redis.shared import (
    Available,
    Counts,
    Entry,
    Event,
    ReaderStopped,
    Result,
    Shared,
    StreamSettings,
    Unavailable,
    WriterDone,
    nothing,
)
from hiperfifo.sources.redis.writer import Writer

__all__ = [
    "Available",
    "Entry",
    "Event",
    "ReaderStopped",
    "Result",
    "StreamClient",
    "StreamSettings",
    "Unavailable",
    "WriterDone",
]


class StreamClient:
    """The reader and writer threads of one consumer, and what the loop may ask of them.

    The loop calls submit(), release(), pause(), stop_reading(), finish() and
    close(), and drains `outbox` when woken.
    """

    def __init__(
        self,
        settings: StreamSettings,
        wake: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shared = shared = Shared(settings, wake, clock)
        self.settings = settings
        self.consumer = shared.consumer
        self.outbox = shared.outbox
        self.ledger = shared.ledger
        self._threads = [
            threading.Thread(target=Reader(shared).run, name="redis-reader", daemon=True),
            threading.Thread(target=Writer(shared).run, name="redis-writer", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def counts(self) -> Counts:
        return self._shared.counts

    @property
    def available(self) -> bool:
        return self._shared.link.up

    @property
    def unwritten(self) -> int:
        """Results handed over and not yet written."""
        return len(self._shared.results)

    @property
    def paused(self) -> bool:
        return self._shared.paused

    def submit(self, result: Result) -> None:
        """Write `result` and ack its entry (soon, in a batch; after an outage, later)."""
        shared = self._shared
        shared.results.append(result)
        if shared.writer_idle:  # the first result since the writer began to wait wakes it
            with shared.ledger.lock:
                shared.writer_idle = False
                shared.ledger.lock.notify_all()

    def release(self, ids: list[str]) -> None:
        """Give held entries back unanswered: pending as idle long enough to be claimed.

        XCLAIM ... IDLE 2*S JUSTID keeps them in our pending list (our next start
        reads them again) but lets any consumer's next XAUTOCLAIM pass take them.
        """
        with self.ledger.lock:
            self._shared.releases.extend(ids)
            self.ledger.lock.notify_all()

    def pause(self, paused: bool) -> None:
        """Back-pressure from the loop: no reads while paused (cheap when nothing changes)."""
        if paused == self._shared.paused:
            return
        with self.ledger.lock:
            self._shared.paused = paused
            self.ledger.lock.notify_all()

    def stop_reading(self) -> None:
        """No new reads: a blocked XREADGROUP is cut short; ReaderStopped follows."""
        self._shared.stop_reads.set()
        with self.ledger.lock:
            self._shared.unblock_wanted = True
            self.ledger.lock.notify_all()

    def finish(self) -> None:
        """No more results will come: write what is left, then WriterDone."""
        with self.ledger.lock:
            self._shared.finishing = True
            self.ledger.lock.notify_all()

    def close(self, timeout: float) -> None:
        """After the loop: stop reading, write what is left, give back what was never
        answered (release), and stop both threads, waiting at most `timeout` s.

        The loop is gone: nothing is posted any more. What cannot be written in
        time (Redis unavailable) stays pending in Redis, not acked: another
        consumer takes it after --redis-claim-idle, or this one on its next start.
        """
        shared = self._shared
        with shared.wake_lock:
            shared.wake = nothing
        self.stop_reading()
        deadline = time.monotonic() + timeout
        reader, writer = self._threads
        if reader.is_alive():
            reader.join(max(0.0, deadline - time.monotonic()))
        with self.ledger.lock:
            answered = {result.entry for result in shared.results}
            answered.update(shared.releases)
            shared.releases += [entry for entry in self.ledger.held if entry not in answered]
            shared.finishing = True
            self.ledger.lock.notify_all()
        if writer.is_alive():
            writer.join(max(0.0, deadline - time.monotonic()))
        shared.abandon.set()
        with self.ledger.lock:
            self.ledger.lock.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(1.0)
