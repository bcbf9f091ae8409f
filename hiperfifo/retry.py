"""Retries, as `curl --retry` decides them: which results are transient, how long to wait.

Owns the retry policy (a frozen value validated on construction), the
backoff with jitter, Retry-After parsing, and the transfers waiting for their
next attempt (`RetryWaits`: the engine's Deadlines heap, one alarm set for the
earliest). Pure code: no clock of its own (one is passed in), no randomness
and no loop (the alarm is passed in), so every decision is tested without
waiting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, cast

from hiperfifo.engine import Code
from hiperfifo.engine.deadlines import Deadlines

# curl --retry: "a timeout, ... or an HTTP 408, 429, 500, 502, 503 or 504";
# plus the connection-level failures a flaky peer or a restarting server gives.
TRANSIENT_RESULTS = frozenset(
    {
        Code.COULDNT_CONNECT,
        Code.OPERATION_TIMEDOUT,
        Code.GOT_NOTHING,
        Code.SEND_ERROR,
        Code.RECV_ERROR,
    }
)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
FIRST_DELAY = 1.0  # curl: one second before the first retry...
MAX_DELAY = 600.0  # ...doubling up to ten minutes
JITTER = 0.25  # each backoff is stretched by up to 25 %, so retries of a burst spread out
TIMER_SLACK = 0.002  # libuv timers have ms resolution: a retry due this soon is due now
_RETRY = "retry"  # the one deadline name each waiting id has


class RetryPolicyError(ValueError):
    """A retry setting that makes no sense: which option (its Config name), and why."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"--{option.replace('_', '-')}: {problem}")
        self.option = option
        self.problem = problem


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many retries, for how long, and how far apart.

    `retries` 0 disables retrying. `max_time` > 0 bounds the whole series: no
    attempt starts later than that many seconds after the first one began.
    `delay` > 0 is a fixed wait (curl --retry-delay); 0 means exponential
    backoff: 1 s, 2 s, 4 s... capped at 10 minutes, each stretched by jitter.
    A Retry-After from the server is honoured when it asks for longer.
    """

    retries: int = 0
    max_time: float = 0.0
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise RetryPolicyError("retry", f"must be at least 0, got {self.retries}")
        for name, value in (("retry_max_time", self.max_time), ("retry_delay", self.delay)):
            if not math.isfinite(value):
                raise RetryPolicyError(name, f"must be a finite number, got {value}")
            if value < 0:
                raise RetryPolicyError(name, f"must not be negative, got {value}")

    def is_transient(self, result: Code, status: int | None) -> bool:
        """True for the results worth another attempt (HTTP status: with or without --fail)."""
        if result in TRANSIENT_RESULTS:
            return True
        return result in (Code.OK, Code.HTTP_RETURNED_ERROR) and status in TRANSIENT_STATUS

    def backoff(self, retry: int, jitter: float) -> float:
        """The wait before retry number `retry` (1, 2, ...); `jitter` in [0, 1)."""
        if self.delay > 0:
            return self.delay
        base: float = min(FIRST_DELAY * 2.0 ** min(retry - 1, 32), MAX_DELAY)
        return base * (1 + JITTER * jitter)

    def next_delay(
        self, retry: int, elapsed: float, retry_after: float | None, jitter: float
    ) -> float | None:
        """Seconds until retry number `retry`, or None when no retry is due.

        `elapsed`: seconds since the first attempt began; `retry_after`: what
        the last response asked for, if anything.
        """
        if retry > self.retries:
            return None
        delay = self.backoff(retry, jitter)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if self.max_time > 0 and elapsed + delay > self.max_time:
            return None
        return delay


def parse_retry_after(value: str, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from `now`: delta-seconds or an HTTP-date; None if unusable."""
    text = value.strip()
    if text.isdigit():
        return float(text)
    from email.utils import parsedate_to_datetime  # the email package: only for a date here

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass
class RetryAfter:
    """A header_function that remembers the last response's Retry-After (per attempt)."""

    seconds: float | None = None
    now: datetime | None = None  # a fixed "now" for tests; None: the real time

    def __call__(self, line: bytes) -> None:
        if line.startswith(b"HTTP/"):
            self.seconds = None  # a new response (after a redirect): forget the old one
            return
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"retry-after":
            self.seconds = parse_retry_after(value.decode("latin-1"), self.now)


class Alarm(Protocol):
    """A one-shot timer (driver.Alarm)."""

    def set(self, seconds: float) -> None: ...

    def cancel(self) -> None: ...


class RetryWaits:
    """Transfer ids waiting for their next attempt: one Deadlines heap, one alarm set for
    the earliest. The clock is passed in, so timing is tested without waiting."""

    def __init__(self, alarm: Alarm, clock: Callable[[], float]) -> None:
        self._alarm = alarm
        self._clock = clock
        self._heap: Deadlines[str] = Deadlines()
        self._due: dict[int, float] = {}  # id -> when: for pop_later and the count

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: int) -> bool:
        return key in self._due

    def __repr__(self) -> str:
        return f"<RetryWaits waiting={len(self._due)} next={self._heap.earliest()}>"

    def wait(self, key: int, delay: float) -> None:
        """`key`'s next attempt is due `delay` seconds from now."""
        self._due[key] = due = self._clock() + delay
        self._heap.set(key, _RETRY, due)
        self._arm()

    def pop_due(self) -> list[int]:
        """Every id due now (or within TIMER_SLACK), earliest first, no longer waiting."""
        ready = [cast(int, key) for key, _ in self._heap.pop_expired(self._clock() + TIMER_SLACK)]
        for key in ready:
            del self._due[key]
        self._arm()
        return ready

    def pop_later(self, than: float) -> list[int]:
        """Every id due after the instant `than`, no longer waiting (in no particular order)."""
        later = [key for key, due in self._due.items() if due > than]
        for key in later:
            del self._due[key]
            self._heap.clear(key, _RETRY)
        self._arm()
        return later

    def _arm(self) -> None:
        due = self._heap.earliest()
        if due is None:
            self._alarm.cancel()
        else:
            self._alarm.set(due - self._clock())
