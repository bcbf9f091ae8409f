"""The queue of transfers waiting for a connection slot (connection limits reached).

When a connection frees up, one queued transfer leaves the queue: the oldest
one for the origin of the freed connection (the runner hands it that
connection), so that the connection is reused instead of evicted to open one
for another origin ("reuse before churn"). When that origin has nothing
queued, `_move` picks, among the oldest queued transfer of each origin in the
first PENDING_SCAN entries: the oldest that closes nothing (an idle
connection of its own, or room); else the one whose origin has the most
transfers queued per connection that will free up (the origins run dry
together, the slot moves as few times as it can), and only if one more
connection pays for its handshake (`_pays`). Within one origin the order
never changes.

The move budget: a slot moved to an origin that has a connection of its own
that will free up (`busy`) is paid for, MOVE_COST x (connections open)
transfers finished while others waited a move; the budget starts full and
saves up at most half a pool of moves (connections open // 2, at least one).
So in any stretch of time such moves <= connections // 2 + finished /
(MOVE_COST x connections), by construction (`_credit`, in finished transfers).
A move to an origin with no connection that will free up is never refused by
the budget: nothing else will serve it (libcurl evicts for it at once), and
the fairness bound below counts on it.

Fairness bound: a queued transfer whose origin has no connection open (none
that will free up for it) is passed by at most FAIRNESS transfers queued
after it; then the oldest queued transfer goes first, even if an idle
connection of another origin must be evicted for it. A transfer whose
origin has connections open is served by the next of them that frees up,
after the earlier transfers of its origin only (a hand-over, never a move:
the budget does not touch it). Only the oldest transfers
can have been passed most: whoever passes one passes every transfer queued
before it. With arrivals numbered 0, 1, 2, ... every number below the
oldest queued one has left the queue, so the oldest was passed by
(left so far) - (its number): the count checked against the bound.
Pure bookkeeping: the runner decides when to ask, the transfer says
whether it could proceed, `busy` how many connections an origin has that
will free up, `direct` whether one could go on without closing another,
`connections` how many are open (the price of a move).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

from hiperfifo.engine.connection import Origin
from hiperfifo.engine.transfer import Transfer

PENDING_SCAN = 64  # how far past a blocked head of the queue a release may look
FAIRNESS = 32  # passes by later arrivals before the oldest goes first (see above)
MOVE_COST = 8  # transfers finished per connection open, per paid slot move (see above)
_FULL = 1 << 40  # the budget at first: clamped to half a pool of moves when first asked


class PendingQueue:
    """Transfers in PENDING, oldest first (removal from that order is lazy), and by origin."""

    __slots__ = (
        "_busy",
        "_by_origin",
        "_connections",
        "_credit",
        "_direct",
        "_left",
        "_next",
        "_order",
        "_queued",
    )

    def __init__(
        self,
        busy: Callable[[Origin], int],
        direct: Callable[[Origin], bool],
        connections: Callable[[], int],
    ) -> None:
        self._busy = busy  # an origin's connections that will free up (connecting or busy)
        self._direct = direct  # could one to the origin go on now without closing another?
        self._connections = connections  # connections open (to price a paid move)
        self._credit = _FULL  # the move budget, in transfers finished (see above)
        # (arrival number, transfer) in arrival order; entries that left are skipped (one
        # queued again has a new number: its old entry is stale too)
        self._order: deque[tuple[int, Transfer]] = deque()
        self._by_origin: dict[Origin, deque[Transfer]] = {}  # queued ones, exactly, per origin
        self._queued: dict[Transfer, int] = {}  # queued -> its arrival number
        self._next = 0  # the next arrival number
        self._left = 0  # how many arrivals have left (resumed or removed)

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, transfer: Transfer) -> bool:
        return transfer in self._queued

    def add(self, transfer: Transfer) -> None:
        queued = self._queued
        if transfer in queued:
            return
        number = self._next
        queued[transfer] = number
        self._next = number + 1
        self._order.append((number, transfer))
        mine = self._by_origin.get(transfer.origin)
        if mine is None:
            self._by_origin[transfer.origin] = deque((transfer,))
        else:
            mine.append(transfer)

    def discard(self, transfer: Transfer) -> None:
        if self._queued.pop(transfer, None) is not None:
            self._left += 1
            mine = self._by_origin[transfer.origin]
            mine.remove(transfer)  # (rare: remove_handle of a queued transfer)
            if not mine:
                del self._by_origin[transfer.origin]

    def take_ready(
        self, freed: Origin | None = None, handed: bool = False, finished: bool = False
    ) -> Transfer | None:
        """The transfer to resume now, out of the queue: the oldest for `freed` (the origin
        of a connection just given back; `handed`: that connection is at hand for it, no
        need to ask) unless the fairness bound says the oldest of all goes first; else the
        one `_move` picks; None when none can go. `finished`: asked because a transfer
        finished (it pays towards the next move)."""
        if finished:
            self._credit += 1
        order = self._order
        queued = self._queued
        while order and queued.get(order[0][1]) != order[0][0]:
            order.popleft()
        if not order:
            return None
        number, oldest = order[0]
        if self._left - number >= FAIRNESS and not self._busy(oldest.origin):
            # owed: passed FAIRNESS times with no connection of its own origin to wait for
            if oldest.can_leave_pending():
                return self._take(oldest)
        elif freed is not None:
            mine = self._by_origin.get(freed)
            if mine and (
                handed
                or (
                    mine[0].can_leave_pending()
                    and (self._direct(freed) or self._paid(freed, len(mine)))
                )
            ):
                return self._take(mine[0])
        return self._move()

    def _move(self) -> Transfer | None:
        """No queued transfer of the freed connection's origin: whom the slot goes to. Among
        the oldest queued transfer of each origin (in the first PENDING_SCAN entries) that
        could proceed: the oldest one that needs to close nothing (a connection of its own
        idle, or room under the limits); else, an idle connection of another origin to be
        evicted, the one whose origin has the most transfers queued per connection that will
        free up for it (none: first), so that the origins run dry together and a slot moves
        as few times as it can; never one whose origin's busy connections serve its queue
        about as soon (_pays), nor one with busy connections while the move budget is
        spent. Ties: the oldest."""
        queued = self._queued
        by_origin = self._by_origin
        best: Transfer | None = None
        best_share = 0.0
        best_busy = 0
        price = -1  # of a paid move, once asked (0: the budget does not have it)
        seen: set[Origin] = set()
        for number, transfer in itertools.islice(self._order, PENDING_SCAN):
            origin = transfer.origin
            if queued.get(transfer) != number or origin in seen:
                continue
            seen.add(origin)  # only an origin's oldest may leave (its order never changes)
            if not transfer.can_leave_pending():
                continue
            if self._direct(origin):
                return self._take(transfer)
            waiting = len(by_origin[origin])
            busy = self._busy(origin)
            if busy:
                if price < 0:
                    price = self._price()
                if not price or not _pays(waiting, busy):
                    continue
            share = waiting / busy if busy else float("inf")
            if share > best_share:
                best, best_share, best_busy = transfer, share, busy
        if best is None:
            return None
        if best_busy:
            self._credit -= price
        return self._take(best)

    def has_queued(self, origin: Origin) -> bool:
        return origin in self._by_origin

    def pays(self, origin: Origin) -> bool:
        """Does closing an idle connection of another origin pay, to open one for a transfer
        to `origin` that is not queued (it would be the last of its origin's queue), and is
        the move budget there for it? (Asks; spends nothing: a transfer that closes for it
        is one whose origin has no busy connection, or one that leaves the queue by
        take_ready, which pays then.)"""
        busy = self._busy(origin)
        if not busy:
            return True
        return _pays(len(self._by_origin.get(origin, ())) + 1, busy) and self._price() > 0

    def _paid(self, origin: Origin, waiting: int) -> bool:
        """May the oldest of `waiting` queued transfers to `origin` close an idle connection
        of another origin for a new one? Yes when `origin` has no connection that will free
        up; else when it pays (_pays) and the budget is there, which it then spends."""
        busy = self._busy(origin)
        if not busy:
            return True
        if not _pays(waiting, busy):
            return False
        price = self._price()
        if not price:
            return False
        self._credit -= price
        return True

    def _price(self) -> int:
        """What a paid move costs now (MOVE_COST transfers finished per connection open), if
        the budget has it, else 0; the budget saved up is clamped to half a pool of moves."""
        live = max(self._connections(), 1)
        price = MOVE_COST * live
        most = max(live // 2, 1) * price
        if self._credit > most:
            self._credit = most
        return price if self._credit >= price else 0

    def _take(self, transfer: Transfer) -> Transfer:
        """`transfer` (the oldest of its origin) out of the queue."""
        del self._queued[transfer]
        self._left += 1
        origin = transfer.origin
        mine = self._by_origin[origin]
        mine.popleft()
        if not mine:
            del self._by_origin[origin]
        return transfer


def _pays(waiting: int, busy: int) -> bool:
    """Does one more connection to an origin pay for its handshake when `waiting` transfers
    are queued for it and `busy` of its connections will free up? `busy` connections drain
    the queue in waiting/busy rounds, one more in h rounds (closing the idle connection and
    the new one's handshake) plus waiting/(busy+1): it pays when
    waiting/busy - waiting/(busy+1) > h, that is waiting > h * busy * (busy + 1). h = 2
    (a handshake at least one round trip as long as a request, TLS two, plus the close):
    with h = 1, 1,000 URLs over 4 origins and a server answering at once opened up to 33
    connections at a limit of 16 (issue 15.2's bound: 32), every extra one a slot moved.
    With no connection of its own, always."""
    return waiting > 2 * busy * (busy + 1)
