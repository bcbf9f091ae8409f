"""What the multi lends its transfers: clock, deadlines, lease, resolver, guard, read buffer.

One per multi, shared by every transfer (and every connection being
opened); it holds no transfer.
"""

from __future__ import annotations

from collections.abc import Callable

from hiperfifo.engine.deadlines import Deadlines, Due
from hiperfifo.engine.guard import CallbackGuard
from hiperfifo.engine.lease import Lease
from hiperfifo.engine.resolver import Resolver


class Services:
    """The multi's shared pieces, as its transfers see them."""

    __slots__ = ("buffer", "clock", "deadlines", "guard", "lease", "resolver", "view")

    def __init__(
        self,
        clock: Callable[[], float],
        deadlines: Deadlines[Due],
        lease: Lease,
        resolver: Resolver,
        guard: CallbackGuard,
    ) -> None:
        self.clock = clock
        self.deadlines = deadlines
        self.lease = lease
        self.resolver = resolver
        self.guard = guard
        self.buffer = bytearray(256 * 1024)
        self.view = memoryview(self.buffer)
