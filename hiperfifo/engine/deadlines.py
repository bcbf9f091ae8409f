"""Named deadlines in one heap (curl's Curl_expire, trio's Deadlines).

Each owner (a transfer) has named deadlines (the transfer names them with
an IntEnum, `Due`: run, connect, total, speed, eyeballs). Setting a name
replaces its earlier instant; the heap keeps stale entries and skips
them lazily, and is compacted when stale entries outnumber live ones (as
asyncio does with cancelled timers), so a cleared 300 s deadline does not
keep a finished transfer alive for 300 s.
Nothing here reads a clock: callers pass `now`.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

Name = TypeVar("Name", bound=Hashable)


class Due(enum.IntEnum):
    """A transfer's deadline names (curl's Curl_expire ids); transfer.py maps each to a handler."""

    RUN = enum.auto()  # run at once, from the timer (added, or left the pending queue)
    CONNECT = enum.auto()  # CURLOPT_CONNECTTIMEOUT
    TOTAL = enum.auto()  # CURLOPT_TIMEOUT
    SPEED = enum.auto()  # judge the low-speed period
    EYEBALLS = enum.auto()  # start the next happy-eyeballs attempt


class Deadlines(Generic[Name]):
    """One heap of (instant, seq, owner, name) with lazy deletion; live ones by owner.

    Live deadlines are kept per owner (owner -> name -> seq), so that a transfer
    with none armed (the common case: no timeouts asked for) is cleared with one
    lookup, not one per name.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable, Name]] = []
        self._live: dict[Hashable, dict[Name, int]] = {}
        self._count = 0  # live deadlines, over every owner
        self._seq = 0  # the next entry's number (ties in the heap go in the order set)
        self._wake_at: float | None = None  # see wake()

    def __len__(self) -> int:
        return self._count

    def set(self, owner: Hashable, name: Name, when: float) -> None:
        """Arm (or re-arm) `owner`'s deadline `name` at the absolute instant `when`."""
        seq = self._seq
        self._seq = seq + 1
        mine = self._live.get(owner)
        if mine is None:
            mine = self._live[owner] = {}
        if name not in mine:
            self._count += 1
        mine[name] = seq
        heapq.heappush(self._heap, (when, seq, owner, name))
        self._compact_if_stale()

    def wake(self, now: float) -> None:
        """A deadline at `now` of no owner that runs nothing: the application is to call
        again at once (the runner's, when transfers were added). Kept beside the heap, one
        at a time, the first instant kept: no heap entry nor owner's table per wake-up.
        earliest() counts it; pop_expired() drops it once due (it returns nothing for it)."""
        if self._wake_at is None:
            self._wake_at = now

    def woken(self) -> bool:
        """Is a wake() pending?"""
        return self._wake_at is not None

    def clear(self, owner: Hashable, name: Name) -> None:
        """Disarm one deadline; its heap entry is dropped when it surfaces or at compaction."""
        self._disarm(owner, (name,))

    def clear_owner(self, owner: Hashable, names: tuple[Name, ...]) -> None:
        """Disarm every listed deadline of `owner`."""
        self._disarm(owner, names)

    def is_set(self, owner: Hashable, name: Name) -> bool:
        mine = self._live.get(owner)
        return mine is not None and name in mine

    def _disarm(self, owner: Hashable, names: tuple[Name, ...]) -> None:
        mine = self._live.get(owner)
        if not mine:
            return
        for name in names:
            if mine.pop(name, None) is not None:
                self._count -= 1
        if not mine:
            del self._live[owner]
        self._compact_if_stale()

    def _is_live(self, seq: int, owner: Hashable, name: Name) -> bool:
        mine = self._live.get(owner)
        return mine is not None and mine.get(name) == seq

    def _compact_if_stale(self) -> None:
        """Drop stale entries once they outnumber live ones: amortised O(1) per change."""
        heap = self._heap
        if len(heap) <= 2 * self._count + 64:
            return
        heap[:] = [entry for entry in heap if self._is_live(entry[1], entry[2], entry[3])]
        heapq.heapify(heap)

    def earliest(self) -> float | None:
        """The earliest live instant (a pending wake() included), or None when nothing is due."""
        wake = self._wake_at
        heap = self._heap
        while heap:
            when, seq, owner, name = heap[0]
            if self._is_live(seq, owner, name):
                return wake if wake is not None and wake < when else when
            heapq.heappop(heap)
        return wake

    def pop_expired(self, now: float) -> list[tuple[Hashable, Name]]:
        """Remove and return every live deadline at or before `now`, earliest first (a
        due wake() is dropped, not returned)."""
        wake = self._wake_at
        if wake is not None and wake <= now:
            self._wake_at = None
        heap = self._heap
        expired: list[tuple[Hashable, Name]] = []
        while heap and heap[0][0] <= now:
            _when, seq, owner, name = heapq.heappop(heap)
            mine = self._live.get(owner)
            if mine is not None and mine.get(name) == seq:
                del mine[name]
                self._count -= 1
                if not mine:
                    del self._live[owner]
                expired.append((owner, name))
        return expired
