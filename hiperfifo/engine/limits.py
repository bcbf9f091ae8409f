"""Limits, in pure code: the low-speed check, the timeout texts, the idle cache's size.

The low-speed check (CURLOPT_LOW_SPEED_LIMIT / CURLOPT_LOW_SPEED_TIME,
curl's speedcheck.c): every `period` seconds the bytes received since the
last mark are compared with `limit` bytes/s; too few fails the transfer
with OPERATION_TIMEDOUT. The transfer arms the deadlines; nothing here
reads a clock. The texts are libcurl's.
"""

from __future__ import annotations

from collections.abc import Sized

from hiperfifo.engine.codes import Code, TransferError
from hiperfifo.engine.handle import Handle


class IdleLimit:
    """How many idle connections the cache keeps, asked each time one is given back:
    max_connects (CURLMOPT_MAXCONNECTS) if set, else libcurl's 4 x the easy handles added
    and not removed (multi->num_easy * 4), finished ones included: not the running count,
    which dips as a loop handles several ready sockets before info_read. A callable object
    rather than a Multi method: compiled with mypyc, no Python frame per request."""

    __slots__ = ("handles", "max_connects")

    def __init__(self) -> None:
        self.max_connects: int | None = None
        self.handles: Sized = ()  # the multi's easy handles, given once it has them

    def __call__(self) -> int:
        if self.max_connects is not None:
            return self.max_connects
        return 4 * max(len(self.handles), 1)


class SpeedCheck:
    """Bytes received at the last mark, and when."""

    __slots__ = ("_bytes", "_since", "limit", "period")

    def __init__(self, limit: int, period: int) -> None:
        self.limit = limit  # bytes per second
        self.period = period  # seconds
        self._since = 0.0
        self._bytes = 0

    @classmethod
    def of(cls, easy: Handle, current: SpeedCheck | None) -> SpeedCheck | None:
        """The check `easy` asks for (the current one kept), or None when it asks for none."""
        if easy.low_speed_limit <= 0 or easy.low_speed_time <= 0:
            return None
        return current or cls(easy.low_speed_limit, easy.low_speed_time)

    def mark(self, now: float, received: int) -> float:
        """Start a period at `now`; returns the instant it is to be judged."""
        self._since = now
        self._bytes = received
        return now + self.period

    def check(self, now: float, received: int) -> float:
        """Judge the period ending `now` (TransferError if too slow); the next one's end."""
        if (received - self._bytes) / max(now - self._since, 1e-9) < self.limit:
            raise TransferError(
                Code.OPERATION_TIMEDOUT,
                f"Operation too slow. Less than {self.limit} bytes/sec transferred "
                f"the last {self.period} seconds",
            )
        return self.mark(now, received)


def connect_timeout_text(elapsed: float) -> str:
    return f"Connection timed out after {int(elapsed * 1000)} milliseconds"


def total_timeout_text(elapsed: float, received: int) -> str:
    return (
        f"Operation timed out after {int(elapsed * 1000)} milliseconds "
        f"with {received} bytes received"
    )
