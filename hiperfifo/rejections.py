"""How rejected input is reported: the first few one by one, then summed once a second.

10 MB of junk is hundreds of thousands of bad tokens; one `input.rejected`
line each would flood the log (59 MB in 4 s). `RejectionReport` decides, with
the clock passed in, whether a rejection gets its own line and what the
summary line of each second holds. Pure: no clock of its own, no logging, no
loop; memory is bounded (at most MAX_REASONS distinct reasons are counted, the
rest as OTHER).
"""

from __future__ import annotations

from dataclasses import dataclass, field

BURST = 10  # rejections logged one by one per window
WINDOW = 1.0  # seconds: one summary line per window at most
MAX_REASONS = 32  # distinct reasons counted in one summary; the rest go under OTHER
OTHER = "other reasons"


@dataclass(frozen=True, slots=True)
class Summary:
    """The rejections of one window that got no line of their own."""

    count: int
    reasons: dict[str, int]  # reason -> how many


@dataclass
class RejectionReport:
    """Rejections in windows of `window` seconds: the first `burst` are shown one by one,
    the rest summed when the window ends. While a flood lasts (the last window needed a
    summary and the next rejection came within a window of it), every rejection is summed:
    one line a second. A quiet window ends the flood."""

    burst: int = BURST
    window: float = WINDOW
    _started: float | None = None  # when the current window began; None: no window open
    _shown: int = 0  # rejections shown one by one in the current window
    _flood_seen: float | None = None  # when the last summary was made, while flooding
    _held: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, now: float) -> bool:
        """Count one rejection at `now`; True when it should be logged on its own line.

        Call `due(now)` first: a window that has ended must be summed up before a new one
        begins.
        """
        if self._started is None:
            flooding = self._flood_seen is not None and now - self._flood_seen < self.window
            self._started = now
            self._shown = self.burst if flooding else 0
        if self._shown < self.burst:
            self._shown += 1
            return True
        held = self._held
        if reason not in held and len(held) >= MAX_REASONS:
            reason = OTHER
        held[reason] = held.get(reason, 0) + 1
        return False

    def due(self, now: float) -> Summary | None:
        """At or after the end of the current window: its summary (None if nothing was held),
        and the next rejection opens a new window. Before that: None."""
        if self._started is None or now - self._started < self.window:
            return None
        held, self._held = self._held, {}
        self._started = None
        if not held:
            self._flood_seen = None
            return None
        self._flood_seen = now
        return Summary(sum(held.values()), held)

    def remaining(self, now: float) -> float | None:
        """Seconds until the current window ends (0 when it has), None when none is open."""
        if self._started is None:
            return None
        return max(0.0, self._started + self.window - now)

    @property
    def window_open(self) -> bool:
        """A window is counting: call due() when it ends (a timer at most `window` away)."""
        return self._started is not None
