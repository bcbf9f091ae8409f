"""Named deadlines in one heap (curl's Curl_expire, trio's Deadlines).

Each owner (a transfer) has named deadlines: "run", "connect", "total",
"speed", "eyeballs", ... Setting a name replaces its earlier instant; the
heap keeps stale entries and skips them lazily, and is compacted when stale
entries outnumber live ones (as asyncio does with cancelled timers), so a
cleared 300 s deadline does not keep a finished transfer alive for 300 s.
Nothing here reads a clock: callers pass `now`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable


class Deadlines:
    """One heap of (instant, seq, owner, name) with lazy deletion."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable, str]] = []
        self._live: dict[tuple[Hashable, str], int] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def set(self, owner: Hashable, name: str, when: float) -> None:
        """Arm (or re-arm) `owner`'s deadline `name` at the absolute instant `when`."""
        seq = next(self._seq)
        self._live[(owner, name)] = seq
        heapq.heappush(self._heap, (when, seq, owner, name))
        self._compact_if_stale()

    def clear(self, owner: Hashable, name: str) -> None:
        """Disarm one deadline; its heap entry is dropped when it surfaces or at compaction."""
        if self._live.pop((owner, name), None) is not None:
            self._compact_if_stale()

    def clear_owner(self, owner: Hashable, names: tuple[str, ...]) -> None:
        """Disarm every listed deadline of `owner`."""
        for name in names:
            self._live.pop((owner, name), None)
        self._compact_if_stale()

    def is_set(self, owner: Hashable, name: str) -> bool:
        return (owner, name) in self._live

    def _compact_if_stale(self) -> None:
        """Drop stale entries once they outnumber live ones: amortised O(1) per change."""
        heap = self._heap
        if len(heap) <= 2 * len(self._live) + 64:
            return
        live = self._live
        heap[:] = [entry for entry in heap if live.get((entry[2], entry[3])) == entry[1]]
        heapq.heapify(heap)

    def earliest(self) -> float | None:
        """The earliest live instant, or None when nothing is due."""
        heap = self._heap
        while heap:
            when, seq, owner, name = heap[0]
            if self._live.get((owner, name)) == seq:
                return when
            heapq.heappop(heap)
        return None

    def pop_expired(self, now: float) -> list[tuple[Hashable, str]]:
        """Remove and return every live deadline at or before `now`, earliest first."""
        heap = self._heap
        expired: list[tuple[Hashable, str]] = []
        while heap and heap[0][0] <= now:
            _when, seq, owner, name = heapq.heappop(heap)
            key = (owner, name)
            if self._live.get(key) == seq:
                del self._live[key]
                expired.append(key)
        return expired
