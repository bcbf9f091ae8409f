"""The transfers of one multi in motion: run what an event concerns, then settle it.

A ready fd runs its owner, a finished lookup its transfer, an expired
deadline its handler; transfers added since the last call start (in the
order added; one deadline at now wakes the application for all of them);
a transfer that left the pending queue during an API call runs before the
call returns, unless it took over the connection of one that left it in
the same call (then at the next: no chain of one connection's transfers
through a single call). After a transfer ran it is settled: queued if it
waits for a slot, its sockets synced (the PollSet's diff), collected if it
finished (a message, and a slot for the next pending one: the connection it
gave back handed straight to its origin's oldest queued transfer).
The multi keeps the API, the guard and the callbacks; this room keeps the
transfers, the running count and the finished-message queue.

HTTP/2: a connection carrying several transfers (shared.py) owns its fd in
the PollSet; `act_on_fd` lets it read, runs each transfer it handed events
to, settles them, then settles the connection itself: its fd announced once
for all its streams, REMOVEd when it goes idle or closes (when it is
finished, the lease closes it). A transfer that left CONNECT with room to
spare (a stream attached, a connection opened) lets the next queued one try.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from hiperfifo.engine.codes import Code
from hiperfifo.engine.connection import Origin
from hiperfifo.engine.deadlines import Deadlines, Due
from hiperfifo.engine.easy import Easy
from hiperfifo.engine.lease import Lease
from hiperfifo.engine.pending import PendingQueue
from hiperfifo.engine.pollset import PollSet
from hiperfifo.engine.resolver import Resolver
from hiperfifo.engine.shared import Shared
from hiperfifo.engine.transfer import Transfer, TransferState, resume_on

# Final: compiled, a C static each (a plain module name is a dict lookup per use)
_DONE: Final = TransferState.DONE
_INIT: Final = TransferState.INIT
_PENDING: Final = TransferState.PENDING


class Runner:
    """Transfers by Easy, the pending queue, and what finished but was not read yet."""

    __slots__ = (
        "_chained",
        "_clock",
        "_deadlines",
        "_later",
        "_lease",
        "_new",
        "_pollset",
        "_resolver",
        "_resumed",
        "_unsent",
        "_view",
        "alive",
        "in_action",
        "messages",
        "pending",
        "transfers",
    )

    def __init__(
        self,
        pollset: PollSet,
        deadlines: Deadlines[Due],
        resolver: Resolver,
        clock: Callable[[], float],
        lease: Lease,
        view: memoryview,
    ) -> None:
        self._lease = lease
        self._view = view
        self._pollset = pollset
        self._deadlines = deadlines
        self._resolver = resolver
        self._clock = clock
        self.transfers: dict[Easy, Transfer] = {}  # added and not removed, finished included
        self.alive = 0  # transfers not finished
        self.messages: dict[Easy, Code] = {}  # finished, unread, oldest first: result
        self.pending = PendingQueue(lease.busy_to, lease.serves_directly, lease.connections)
        lease.may_evict = self.pending.pays
        lease.queued = self.pending.has_queued
        self._resumed: deque[Transfer] = deque()  # left the queue in this call: run in it
        self._chained = False  # running one of those: the next handed over waits a call
        self._later: list[Transfer] = []  # left the queue in this call, run in the next
        self._new: list[Transfer] = []  # added, to start at the next run of expired deadlines
        self._unsent: dict[Shared, None] = {}  # shared connections with bytes queued
        self.in_action = False  # inside socket_action: what is released runs before it returns

    def add(self, transfer: Transfer) -> None:
        """Take `transfer` in; it starts at the next run of expired deadlines (in the order
        added; one deadline at now for all of them, so that the timer says 0 ms)."""
        self.transfers[transfer.easy] = transfer
        self.alive += 1
        self._new.append(transfer)
        self._wake()

    def _wake(self) -> None:
        """A deadline at now that runs nothing: the application calls again at once."""
        deadlines = self._deadlines
        if not deadlines.woken():
            deadlines.wake(self._clock())

    def remove(self, easy: Easy) -> None:
        """Take `easy`'s transfer out; a running one stops and leaves no message."""
        transfer = self.transfers.pop(easy)
        if transfer.state is _DONE:  # (a finished one is out of the queue: _settle)
            self.messages.pop(easy, None)
            return
        self.pending.discard(transfer)
        self.alive -= 1
        transfer.abort()
        self._pollset.drop_owner(transfer)
        link, transfer.link = transfer.link, None
        if link is not None:
            self.settle_shared(link)
        self._release_pending(in_action=False)

    def act_on_fd(self, fd: int) -> None:
        owner = self._pollset.owner_of(fd)
        if owner is self._resolver:
            self.collect_lookups()
        elif isinstance(owner, Transfer):
            owner.run()
            self._settle(owner)
        elif isinstance(owner, Shared):
            for transfer in owner.on_ready(self._view, self._clock()):
                if isinstance(transfer, Transfer) and self._is_mine(transfer):
                    transfer.run()
                    self._settle(transfer)
            self.settle_shared(owner)
        # anything else: a late event for a socket already removed; ignore (rule 4)

    def collect_lookups(self) -> None:
        for resolved in self._resolver.collect():
            transfer = resolved.token
            if isinstance(transfer, Transfer) and self._is_mine(transfer):
                transfer.on_resolved(resolved)
                self._settle(transfer)

    def run_all(self) -> None:
        """Run every transfer that is neither finished nor queued (curl_multi_socket_all)."""
        for transfer in list(self.transfers.values()):
            if not transfer.done and transfer.state is not TransferState.PENDING:
                transfer.run()
                self._settle(transfer)

    def run_expired(self) -> None:
        if self._resumed:
            self._run_resumed()
        if self._new:
            self._run_new()
        transfers = self.transfers
        for owner, due in self._deadlines.pop_expired(self._clock()):
            if (
                isinstance(owner, Transfer)
                and owner.state is not _DONE
                and transfers.get(owner.easy) is owner  # (_is_mine, inlined)
            ):
                owner.on_deadline(due)
                self._settle(owner)
        if self._resumed:
            self._run_resumed()

    def _run_new(self) -> None:
        """Start the transfers added since the last run, oldest first."""
        new, self._new = self._new, []
        transfers = self.transfers
        for transfer in new:
            if transfer.state is _INIT and transfers.get(transfer.easy) is transfer:
                transfer.run()
                self._settle(transfer)

    def _is_mine(self, transfer: Transfer) -> bool:
        return self.transfers.get(transfer.easy) is transfer

    def _run_resumed(self) -> None:
        """Run the transfers that left the queue during this call, before it returns."""
        resumed = self._resumed
        while resumed:
            transfer = resumed.popleft()
            if transfer.state is not _DONE and self._is_mine(transfer):
                self._chained = True
                try:
                    transfer.run()
                    self._settle(transfer)
                finally:
                    self._chained = False

    def _settle(self, transfer: Transfer) -> None:
        """After a transfer acted: queue it if it waits for a slot, sync its fds, collect it."""
        if transfer.state is _PENDING:
            self.pending.add(transfer)
            lease = self._lease
            if lease.owed_release:  # it went behind its origin's queue: the oldest goes on
                lease.owed_release = False
                self._release_pending(in_action=True, freed=transfer.origin)
        link = transfer.link
        if link is not None:  # first, so that a socket it opened changes hands quietly
            transfer.link = None
            self.settle_shared(link)
        if transfer.state is _DONE:
            if transfer in self.pending:  # ended while queued (its total timeout)
                self.pending.discard(transfer)
            self._pollset.drop_owner(transfer)  # (it wants nothing any more)
            transfer.progressed = False
            self.alive -= 1
            self.messages[transfer.easy] = transfer.handle.result  # (read natively here)
            self._release_pending(in_action=True, freed=transfer.origin, finished=True)
            return
        self._pollset.sync(transfer, transfer.easy, transfer.wanted())
        if transfer.progressed:
            transfer.progressed = False
            if not self._resumed:  # (those already let go come first)
                self._release_pending(in_action=True)

    def settle_shared(self, shared: Shared) -> None:
        """A shared connection acted: its fd changes hands now if a transfer opened it; what
        its streams queued goes out at the end of the API call (flush_unsent: one send for
        all the streams opened meanwhile, not one each), the rest is settled then too."""
        pollset = self._pollset
        fd = shared.fd
        owner = pollset.owner_of(fd)
        if owner is not None and owner is not shared:
            pollset.adopt(fd, shared)
        if shared.unsent and not shared.finished:
            self._unsent[shared] = None
            return
        self._settled(shared)

    def end_call(self) -> None:
        """The end of an API call: what the shared connections queued goes out; the
        transfers held for the next call (see _release_pending) are due then, the timer
        set at once so that the next call comes."""
        if self._unsent:
            self.flush_unsent()
        later = self._later
        if later:
            self._resumed.extend(later)
            later.clear()
            self._wake()

    def flush_unsent(self) -> None:
        """Send what the shared connections queued during this API call, then settle them."""
        unsent = self._unsent
        while unsent:
            shared = next(iter(unsent))
            del unsent[shared]
            for transfer in shared.flush():  # the socket failed: its streams ended
                if isinstance(transfer, Transfer) and self._is_mine(transfer):
                    transfer.run()  # one to retry elsewhere goes on at once
                    self._settle(transfer)
            self._settled(shared)
            self._run_resumed()  # (may queue more: the loop sends them too)

    def _settled(self, shared: Shared) -> None:
        """Close a finished shared connection, else announce its one fd as it needs; either
        way a slot it gave up goes to a queued transfer."""
        if shared.finished:
            self._lease.drop_shared(shared)  # POLL_REMOVE, then close
            # Its slot is free only now: the transfer whose stream ended last was settled
            # while the connection still counted (and those a GOAWAY refused queued then).
            self._release_pending(self.in_action, freed=shared.origin)
            return
        self._pollset.sync(shared, shared.easy(), shared.wanted())
        if shared.h2.raised:  # SETTINGS raised the stream limit: a queued transfer may go
            shared.h2.raised = False  # (and the next, as it starts: _settle)
            self._release_pending(self.in_action, freed=shared.origin)
        if not shared.streams:
            self._lease.shared_idle(shared)
            self._release_pending(self.in_action)  # its slot may serve another host now

    def _release_pending(
        self, in_action: bool, freed: Origin | None = None, finished: bool = False
    ) -> None:
        """Let one queued transfer that can get a connection now proceed: one for the
        origin of the connection just given back first (pending.py says when not), handed
        that connection straight away.

        Inside socket_action it runs before the call returns (a plain queue), unless it
        takes over the connection of one that left the queue in this call too: then it is
        held for the next call (and so is every one after it in this call: they run in
        the order they left), so that a server answering at once cannot chain one
        origin's transfers on one connection through a single call while other sockets
        wait. From remove_handle, at the next socket_action, through a RUN deadline at now.
        `finished`: a transfer finished (it pays towards the pending queue's move budget).
        """
        pending = self.pending
        if not pending:
            return
        lease = self._lease
        handed = freed is not None and pending.has_queued(freed) and lease.released(freed)
        transfer = pending.take_ready(freed, handed, finished)
        if transfer is None:
            return
        conn = (
            lease.pool.take_idle(transfer.origin) if handed and freed == transfer.origin else None
        )
        if conn is not None:
            resume_on(transfer, conn)
        else:
            transfer.left_queue = True  # not behind its own origin's queue again
            transfer.resume()
        if not in_action:
            self._deadlines.set(transfer, Due.RUN, self._clock())
        elif (self._chained and conn is not None) or self._later:
            self._later.append(transfer)  # (after one held: the order they left in)
        else:
            self._resumed.append(transfer)
