"""The timer callback's rules (curl's multi timer): announce only what changed.

The application is told the time until the earliest deadline only when
that instant changes (or a SOCKET_TIMEOUT action asks again), never -1
twice in a row and never -1 first; milliseconds are rounded up and capped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hiperfifo.engine.guard import CallbackGuard

TimerFunction = Callable[[int], Any]
MAX_TIMEOUT_MS = 2**31 - 1


class Timer:
    """What the application was last told about the timer, and how to tell it again."""

    __slots__ = ("_clock", "_guard", "_last", "force", "function")

    def __init__(
        self, function: TimerFunction | None, clock: Callable[[], float], guard: CallbackGuard
    ) -> None:
        self.function = function
        self._clock = clock
        self._guard = guard
        self._last: float | None = None  # the instant last announced; None: -1
        self.force = False  # announce at the next update even if nothing changed

    def reset(self) -> None:
        """Forget what was announced (a dead multi that comes back to life)."""
        self._last = None

    def update(self, earliest: float | None) -> None:
        """Call the timer function if the earliest instant changed; raises what it raised."""
        if earliest == self._last and not self.force:
            return
        self.force = False
        if earliest is None and self._last is None:
            return  # -1 never twice in a row, never first
        self._last = earliest
        function = self.function
        if function is None:
            return
        with self._guard.calling():
            function(self.ms_until(earliest))

    def ms_until(self, instant: float | None) -> int:
        if instant is None:
            return -1
        ms = math.ceil((instant - self._clock()) * 1000)
        return min(max(ms, 0), MAX_TIMEOUT_MS)
