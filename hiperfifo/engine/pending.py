"""The queue of transfers waiting for a connection slot (connection limits reached).

First come, first served: when a connection or slot frees up, the oldest
queued transfer that could proceed now leaves the queue; a blocked head
(its host at max_host_connections) does not hold back the others, looking
at most PENDING_SCAN entries past it. Pure bookkeeping: the multi decides
when to ask, the transfer says whether it could proceed.
"""

from __future__ import annotations

import itertools
from collections import deque

from hiperfifo.engine.transfer import Transfer

PENDING_SCAN = 64  # how far past a blocked head of the queue a release may look


class PendingQueue:
    """Transfers in PENDING, oldest first; removal is lazy (a set says who is still in)."""

    __slots__ = ("_order", "_queued")

    def __init__(self) -> None:
        self._order: deque[Transfer] = deque()
        self._queued: set[Transfer] = set()

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, transfer: Transfer) -> bool:
        return transfer in self._queued

    def add(self, transfer: Transfer) -> None:
        if transfer not in self._queued:
            self._queued.add(transfer)
            self._order.append(transfer)

    def discard(self, transfer: Transfer) -> None:
        self._queued.discard(transfer)

    def take_ready(self) -> Transfer | None:
        """The oldest queued transfer that could get a connection now, out of the queue."""
        order = self._order
        queued = self._queued
        while order and order[0] not in queued:
            order.popleft()
        for transfer in itertools.islice(order, PENDING_SCAN):
            if transfer in queued and transfer.can_leave_pending():
                queued.discard(transfer)
                return transfer
        return None
