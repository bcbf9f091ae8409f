"""The queue of transfers waiting for a connection slot (connection limits reached).

When a connection frees up, one queued transfer leaves the queue: the oldest
one for the origin of the freed connection, so that the connection is
reused instead of evicted to open one for another origin ("reuse before
churn"); otherwise the oldest transfer that could proceed now (first come,
first served), looking at most PENDING_SCAN entries past a blocked head (its
host at max_host_connections). Within one origin the order never changes.

Fairness bound: a queued transfer whose origin has no connection open (none
that will free up for it) is passed by at most FAIRNESS transfers queued
after it; then the oldest queued transfer goes first, even if an idle
connection of another origin must be evicted for it. A transfer whose
origin has connections open is served by the next of them that frees up,
after the earlier transfers of its origin only. Only the oldest transfers
can have been passed most: whoever passes one passes every transfer queued
before it. With arrivals numbered 0, 1, 2, ... every number below the
oldest queued one has left the queue, so the oldest was passed by
(left so far) - (its number): the count checked against the bound.
Pure bookkeeping: the runner decides when to ask, the transfer says
whether it could proceed, `has_live` whether an origin has connections.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

from hiperfifo.engine.connection import Origin
from hiperfifo.engine.transfer import Transfer

PENDING_SCAN = 64  # how far past a blocked head of the queue a release may look
FAIRNESS = 32  # passes by later arrivals before the oldest goes first (see above)


class PendingQueue:
    """Transfers in PENDING, oldest first, also by origin; removal is lazy."""

    __slots__ = ("_busy", "_by_origin", "_counts", "_left", "_next", "_order", "_queued")

    def __init__(self, busy: Callable[[Origin], int]) -> None:
        self._busy = busy  # an origin's connections that will free up (connecting or busy)
        self._counts: dict[Origin, int] = {}  # queued transfers per origin
        self._order: deque[Transfer] = deque()  # arrival order; entries that left are skipped
        self._by_origin: dict[Origin, deque[Transfer]] = {}  # the same, per origin
        self._queued: dict[Transfer, int] = {}  # queued -> its arrival number
        self._next = 0  # the next arrival number
        self._left = 0  # how many arrivals have left (resumed or removed)

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, transfer: Transfer) -> bool:
        return transfer in self._queued

    def add(self, transfer: Transfer) -> None:
        if transfer in self._queued:
            return
        self._queued[transfer] = self._next
        self._next += 1
        self._order.append(transfer)
        mine = self._by_origin.get(transfer.origin)
        if mine is None:
            mine = self._by_origin[transfer.origin] = deque()
        mine.append(transfer)
        self._counts[transfer.origin] = self._counts.get(transfer.origin, 0) + 1

    def discard(self, transfer: Transfer) -> None:
        if self._queued.pop(transfer, None) is not None:
            self._gone(transfer)

    def take_ready(self, freed: Origin | None = None) -> Transfer | None:
        """The transfer to resume now, out of the queue: the oldest for `freed` (the origin
        of a connection just given back) unless the fairness bound says the oldest of all
        goes first; else the oldest that could get a connection now; None when none can."""
        order = self._order
        queued = self._queued
        while order and order[0] not in queued:
            order.popleft()
        if not order:
            return None
        if freed is not None and freed != order[0].origin and not self._owed(order[0]):
            mine = self._oldest_for(freed)
            if mine is not None and mine.can_leave_pending():
                return self._take(mine)
        for transfer in itertools.islice(order, PENDING_SCAN):
            if transfer in queued and transfer.can_leave_pending():
                if (
                    freed is not None
                    and freed != transfer.origin
                    and self._served_anyway(transfer)
                ):
                    continue
                return self._take(transfer)
        return None

    def _served_anyway(self, transfer: Transfer) -> bool:
        """Will its origin's busy connections serve `transfer` as soon (each taking one of
        the origin's queued transfers as it frees up), so that evicting another origin's
        idle connection for it would only add a connection?"""
        origin = transfer.origin
        return self._counts.get(origin, 0) <= self._busy(origin)

    def _owed(self, oldest: Transfer) -> bool:
        """Has the oldest queued transfer been passed FAIRNESS times with no connection of
        its own origin to wait for?"""
        passed = self._left - self._queued[oldest]
        return passed >= FAIRNESS and not self._busy(oldest.origin)

    def _oldest_for(self, origin: Origin) -> Transfer | None:
        mine = self._by_origin.get(origin)
        while mine and mine[0] not in self._queued:
            mine.popleft()
        if not mine:
            self._by_origin.pop(origin, None)
            return None
        return mine[0]

    def _take(self, transfer: Transfer) -> Transfer:
        del self._queued[transfer]
        self._gone(transfer)
        return transfer

    def _gone(self, transfer: Transfer) -> None:
        self._left += 1
        left = self._counts[transfer.origin] - 1
        if left:
            self._counts[transfer.origin] = left
        else:
            del self._counts[transfer.origin]
