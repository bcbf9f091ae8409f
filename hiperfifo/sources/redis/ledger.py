"""What the Redis source must do next, decided in pure code with the clock passed in.

Owns the ledger of entries this consumer holds (read or claimed, not yet acked),
the credit a read may ask for, which held entries are due a refresh (XCLAIM
JUSTID) and when to look for entries others abandoned (XAUTOCLAIM), and the
reconnect backoff. No I/O, no redis import, no clock of its own: the threads in
client.py ask it, under its lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

BACKOFF_FIRST = 0.1  # seconds before the first reconnect
BACKOFF_CAP = 5.0  # never longer than this between tries (the contract: at most 5 s)


@dataclass
class Backoff:
    """Reconnect delays: 0.1 s doubling, capped at 5 s, jittered down by up to a quarter."""

    first: float = BACKOFF_FIRST
    cap: float = BACKOFF_CAP
    failures: int = 0

    def next(self, jitter: float) -> float:
        """The delay before the next try; `jitter` in [0, 1) (random.random())."""
        delay = min(self.cap, self.first * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return delay * (1 - jitter / 4)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class Ledger:
    """The entries this consumer holds, from the read that took them to the ack.

    `window` bounds them: a read asks for at most `credit()` entries, so a daemon
    holds no more work than it can start, and results waiting for Redis (acks
    not yet written) keep their entries held: past the window, no new reads.
    `refresh_every` (S/6 for --redis-claim-idle S) is how old a hold may get
    before refresh_due() names it: each held entry is claimed back to us at
    least every S/3, so nobody's XAUTOCLAIM (min idle S) takes it from us.
    """

    window: int
    refresh_every: float
    held: dict[str, float] = field(default_factory=dict)  # entry id -> last refreshed
    lock: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def credit(self) -> int:
        """How many entries a read may take now: 0 until a quarter of the window is free.

        Reading as soon as one entry is acked would mean one small read (and one
        wake-up of the loop) per small batch of acks; topping up by quarters keeps
        reads large, as the daemon feeds its engine.
        """
        free = self.window - len(self.held)
        return free if free >= max(1, self.window // 4) or not self.held else 0

    def take(self, ids: list[str], now: float) -> list[str]:
        """Hold `ids`; the ones not held already (a re-read or re-claim of ours is not new)."""
        new = [entry for entry in ids if entry not in self.held]
        for entry in ids:
            self.held[entry] = now
        self.lock.notify_all()  # the writer's next refresh may be sooner now
        return new

    def release(self, ids: list[str]) -> None:
        """Acked: no longer ours; wakes a read waiting for credit."""
        for entry in ids:
            self.held.pop(entry, None)
        self.lock.notify_all()

    def refresh_due(self, now: float) -> list[str]:
        """Held entries last refreshed refresh_every ago or more, oldest first."""
        limit = now - self.refresh_every
        return [entry for entry, last in self.held.items() if last <= limit]

    def refreshed(self, ids: list[str], now: float) -> None:
        for entry in ids:
            if entry in self.held:
                self.held[entry] = now

    def next_refresh(self) -> float | None:
        """When the oldest hold is due (monotonic), or None when nothing is held."""
        if not self.held:
            return None
        return min(self.held.values()) + self.refresh_every


@dataclass
class ClaimScan:
    """XAUTOCLAIM as a scan: a cursor through the group's pending list, a pass every `every` s.

    A pass starts at 0-0 and follows the cursor Redis returns until it comes
    back to 0-0; the next pass is due `every` seconds after the last one began.
    """

    every: float
    cursor: str = "0-0"
    due: float = 0.0  # monotonic; 0: at once
    started: float = 0.0  # when the current pass began

    def is_due(self, now: float) -> bool:
        return now >= self.due

    def advance(self, cursor: str, now: float) -> None:
        """Redis answered `cursor`: go on from there at once, or wait for the next pass."""
        if self.cursor == "0-0":
            self.started = now
        self.cursor = cursor
        self.due = now if cursor != "0-0" else self.started + self.every
