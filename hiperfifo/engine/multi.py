"""Multi: libcurl's multi-socket API (curl_multi_socket_action) in Python shapes.

Owns the transfers, the message queue, the pending queue, the re-entrancy
guard, the dead flag and the timer bookkeeping; lends the pool, deadlines
and resolver to its transfers. Every public method is one API call: it
refuses re-entry from callbacks, does its work, announces socket and timer
changes, and raises MultiError for misuse or a dead multi.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, NamedTuple

from hiperfifo.engine.codes import POLL_IN, SOCKET_TIMEOUT, Code, MCode, MultiError
from hiperfifo.engine.deadlines import Deadlines
from hiperfifo.engine.easy import Easy
from hiperfifo.engine.guard import CallbackGuard
from hiperfifo.engine.options import check_multi
from hiperfifo.engine.pollset import PollSet
from hiperfifo.engine.pool import Pool
from hiperfifo.engine.resolver import GetAddrInfo, Resolver
from hiperfifo.engine.transfer import Services, Transfer, TransferState

SocketFunction = Callable[[Easy | None, int, int, Any], Any]
TimerFunction = Callable[[int], Any]
PENDING_SCAN = 64  # how far past a blocked head of the queue a release may look
_MAX_TIMEOUT_MS = 2**31 - 1


class Message(NamedTuple):
    """One finished transfer, as curl_multi_info_read reports it."""

    easy: Easy
    result: Code
    msgs_in_queue: int


class Multi:
    """Many transfers, one application-owned loop: sockets and deadlines are announced."""

    def __init__(
        self,
        socket_function: SocketFunction | None = None,
        timer_function: TimerFunction | None = None,
        max_total_connections: int = 0,
        max_host_connections: int = 0,
        max_connects: int | None = None,
        *,
        max_idle_age: float = 118.0,
        clock: Callable[[], float] = time.monotonic,
        resolver_threads: int = 4,
        getaddrinfo: GetAddrInfo | None = None,
    ) -> None:
        max_total_connections = check_multi("max_total_connections", max_total_connections)
        max_host_connections = check_multi("max_host_connections", max_host_connections)
        max_idle_age = check_multi("max_idle_age", max_idle_age)
        clock = check_multi("clock", clock)
        resolver_threads = check_multi("resolver_threads", resolver_threads)
        getaddrinfo = check_multi("getaddrinfo", getaddrinfo)
        self.socket_function = socket_function
        self.timer_function = timer_function
        self.max_connects = max_connects
        self._clock = clock
        self._guard = CallbackGuard()
        self._deadlines = Deadlines()
        self._pool = Pool(max_total_connections, max_host_connections, max_idle_age)
        self._resolver = Resolver(resolver_threads, getaddrinfo)
        self._pollset = PollSet(self._announce)
        self._svc = Services(
            clock, self._deadlines, self._pool, self._resolver, self._guard,
            self._pollset.forget, self._max_idle,
        )  # fmt: skip
        self._transfers: dict[Easy, Transfer] = {}
        self._alive = 0
        self._messages: dict[Easy, None] = {}  # finished, unread, oldest first
        self._pending: deque[Transfer] = deque()
        self._resumed: deque[Transfer] = deque()  # left the queue in this call: run in it
        self._queued: set[Transfer] = set()
        self._timer_last: float | None = None  # the instant last announced; None: -1
        self._force_timer = False
        self._dead: BaseException | None = None
        self._died_now: BaseException | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "dead" if self._dead else "closed" if self._closed else "ok"
        return (
            f"<Multi {state} running={self._alive} sockets={len(self._pollset)} "
            f"pending={len(self._queued)} {self._pool!r}>"
        )

    def __enter__(self) -> Multi:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._closed:
            self.close()

    # --- options changeable at any time, checked on assignment (options.py) ----------------

    @property
    def socket_function(self) -> SocketFunction | None:
        return self._socket_function

    @socket_function.setter
    def socket_function(self, value: SocketFunction | None) -> None:
        self._socket_function: SocketFunction | None = check_multi("socket_function", value)

    @property
    def timer_function(self) -> TimerFunction | None:
        return self._timer_function

    @timer_function.setter
    def timer_function(self, value: TimerFunction | None) -> None:
        self._timer_function: TimerFunction | None = check_multi("timer_function", value)

    @property
    def max_connects(self) -> int | None:
        return self._max_connects

    @max_connects.setter
    def max_connects(self, value: int | None) -> None:
        self._max_connects: int | None = check_multi("max_connects", value)

    # --- limits (changeable at run time; L5) -------------------------------------------

    @property
    def max_total_connections(self) -> int:
        return self._pool.max_total

    @max_total_connections.setter
    def max_total_connections(self, value: int) -> None:
        self._pool.max_total = check_multi("max_total_connections", value)

    @property
    def max_host_connections(self) -> int:
        return self._pool.max_host

    @max_host_connections.setter
    def max_host_connections(self, value: int) -> None:
        self._pool.max_host = check_multi("max_host_connections", value)

    # --- the API -------------------------------------------------------------------

    def add_handle(self, easy: Easy) -> None:
        """Queue `easy` to start on the next socket_action(SOCKET_TIMEOUT); does no I/O."""
        self._enter()
        if not isinstance(easy, Easy):
            raise MultiError(MCode.BAD_EASY_HANDLE, "not an Easy")
        if easy.multi is not None:
            raise MultiError(MCode.ADDED_ALREADY)
        if self._dead is not None:
            if self._transfers:
                raise MultiError(MCode.ABORTED_BY_CALLBACK, "the multi is dead") from self._dead
            self._dead = None
            self._timer_last = None
        easy.reset_info()
        easy.multi = self
        transfer = Transfer(easy, self._svc)
        self._transfers[easy] = transfer
        self._alive += 1
        self._deadlines.set(transfer, "run", self._clock())
        self._finish_call()

    def remove_handle(self, easy: Easy) -> None:
        """Take `easy` out, at any time; a running transfer stops and gets no message."""
        self._enter()
        if easy.multi is None:
            return
        if easy.multi is not self:
            raise MultiError(MCode.BAD_EASY_HANDLE, "the easy handle is in another multi")
        transfer = self._transfers.pop(easy)
        easy.multi = None
        self._messages.pop(easy, None)
        self._queued.discard(transfer)
        if not transfer.done:
            self._alive -= 1
            transfer.abort()
            self._pollset.drop_owner(transfer)
            self._release_pending()
        self._finish_call()

    def socket_action(self, sockfd: int, ev_bitmask: int = 0) -> int:
        """Act on `sockfd` (or SOCKET_TIMEOUT) and on expired deadlines; returns running."""
        self._enter()
        self._check_dead()
        if sockfd == SOCKET_TIMEOUT:
            self._force_timer = True
        else:
            self._act_on_fd(sockfd)
        self._run_expired()
        self._run_expired()  # one extra pass, as libcurl does, for what expired meanwhile
        self._finish_call()
        return self._alive

    def socket_all(self) -> int:
        """Deprecated curl_multi_socket_all: act on every transfer and deadline."""
        self._enter()
        self._check_dead()
        self._collect_lookups()
        for transfer in list(self._transfers.values()):
            if not transfer.done and transfer.state is not TransferState.PENDING:
                transfer.run()
                self._settle(transfer)
        self._run_expired()
        self._finish_call()
        return self._alive

    def assign(self, fd: int, socketp: Any) -> None:
        """Attach `socketp` to an announced fd; it comes back in the socket callback."""
        if not self._pollset.assign(fd, socketp):
            raise MultiError(MCode.BAD_SOCKET, f"fd {fd} is not announced")

    def info_read(self) -> Message | None:
        """The oldest unread finished transfer, or None."""
        if not self._messages:
            return None
        easy = next(iter(self._messages))
        del self._messages[easy]
        return Message(easy, easy.result, len(self._messages))

    def timeout(self) -> int:
        """Milliseconds until socket_action(SOCKET_TIMEOUT) is due; -1 if nothing is."""
        self._enter()
        if self._dead is not None:
            return 0
        return self._ms_until(self._deadlines.earliest())

    def close(self) -> None:
        """Stop every transfer and close every connection; the multi is unusable after."""
        self._enter()
        for easy in list(self._transfers):
            self.remove_handle(easy)
        for conn in self._pool.drain_idle():
            conn.sock.close()  # idle connections are not announced
        self._pollset.drop_owner(self._resolver)
        self._resolver.close()
        self._closed = True

    # --- internals -----------------------------------------------------------------

    def _enter(self) -> None:
        if self._closed:
            raise MultiError(MCode.BAD_HANDLE, "the multi is closed")
        if self._guard.active:
            raise MultiError(MCode.RECURSIVE_API_CALL)
        self._svc.call += 1

    def _check_dead(self) -> None:
        if self._dead is not None:
            raise MultiError(MCode.ABORTED_BY_CALLBACK, "the multi is dead") from self._dead

    def _finish_call(self) -> None:
        """End of every API call: resolver socket, timer, and a callback that raised."""
        resolver = self._resolver
        if resolver.in_flight:
            self._pollset.sync(resolver, None, {resolver.wake_fd: POLL_IN})
        else:
            self._pollset.drop_owner(resolver)
        self._update_timer()
        died, self._died_now = self._died_now, None
        if died is not None:
            raise MultiError(MCode.ABORTED_BY_CALLBACK, "a callback raised") from died

    def _act_on_fd(self, fd: int) -> None:
        owner = self._pollset.owner_of(fd)
        if owner is self._resolver:
            self._collect_lookups()
        elif isinstance(owner, Transfer):
            owner.run()
            self._settle(owner)
        # anything else: a late event for a socket already removed; ignore (rule 4)

    def _collect_lookups(self) -> None:
        for resolved in self._resolver.collect():
            transfer = resolved.token
            if isinstance(transfer, Transfer) and transfer.easy.multi is self:
                transfer.on_resolved(resolved)
                self._settle(transfer)

    def _run_expired(self) -> None:
        self._run_resumed()
        for owner, name in self._deadlines.pop_expired(self._clock()):
            if isinstance(owner, Transfer) and not owner.done and owner.easy.multi is self:
                owner.on_deadline(name)
                self._settle(owner)
        self._run_resumed()

    def _run_resumed(self) -> None:
        """Run the transfers that left the queue during this call, before it returns."""
        resumed = self._resumed
        while resumed:
            transfer = resumed.popleft()
            if not transfer.done and transfer.easy.multi is self:
                transfer.run()
                self._settle(transfer)

    def _settle(self, transfer: Transfer) -> None:
        """After a transfer acted: queue it if it waits for a slot, sync its fds, collect it."""
        if transfer.state is TransferState.PENDING and transfer not in self._queued:
            self._queued.add(transfer)
            self._pending.append(transfer)
        self._pollset.sync(transfer, transfer.easy, transfer.wanted())
        if transfer.done:
            self._alive -= 1
            self._messages[transfer.easy] = None
            self._release_pending(in_action=True)

    def _release_pending(self, in_action: bool = False) -> None:
        """Let one queued transfer that can get a connection now proceed (FCFS).

        Inside socket_action it runs before the call returns (a plain queue); from
        remove_handle, at the next socket_action, through a "run" deadline at now.
        """
        pending = self._pending
        while pending and pending[0] not in self._queued:
            pending.popleft()
        for transfer in itertools.islice(pending, PENDING_SCAN):
            if transfer in self._queued and transfer.can_leave_pending():
                self._queued.discard(transfer)
                transfer.resume()
                if in_action:
                    self._resumed.append(transfer)
                else:
                    self._deadlines.set(transfer, "run", self._clock())
                return

    def _max_idle(self) -> int:
        max_connects = self._max_connects
        if max_connects is not None:
            return max_connects
        return 4 * max(self._alive, 1)

    def _announce(self, easy: Easy | None, fd: int, what: int, socketp: Any) -> bool:
        function = self._socket_function
        if function is None:
            return True
        guard = self._guard
        guard.depth += 1  # guard.calling(), inlined: twice per reused connection
        try:
            function(easy, fd, what, socketp)
        except Exception as exc:
            self._die(exc)
            return False
        finally:
            guard.depth -= 1
        return True

    def _update_timer(self) -> None:
        if self._dead is not None:
            return
        earliest = self._deadlines.earliest()
        if earliest == self._timer_last and not self._force_timer:
            return
        self._force_timer = False
        if earliest is None and self._timer_last is None:
            return  # -1 never twice in a row, never first
        self._timer_last = earliest
        function = self._timer_function
        if function is None:
            return
        try:
            with self._guard.calling():
                function(self._ms_until(earliest))
        except Exception as exc:
            self._die(exc)

    def _ms_until(self, instant: float | None) -> int:
        if instant is None:
            return -1
        ms = math.ceil((instant - self._clock()) * 1000)
        return min(max(ms, 0), _MAX_TIMEOUT_MS)

    def _die(self, exc: BaseException) -> None:
        if self._dead is None:
            self._dead = exc
        if self._died_now is None:
            self._died_now = exc
