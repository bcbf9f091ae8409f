"""Multi: libcurl's multi-socket API (curl_multi_socket_action) in Python shapes.

Owns the API's rules: the re-entrancy guard, the dead flag, the socket and
timer callbacks; lends the lease of pooled connections, the deadlines and
the resolver to its transfers. Running and settling transfers, the pending
queue and the finished messages live in runner.py; the timer callback's
rules in timer.py; socket bookkeeping in pollset.py.
Every public method is one API call: it refuses re-entry from callbacks,
does its work, announces socket and timer changes, and raises MultiError
for misuse or a dead multi.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, NamedTuple

from hiperfifo.engine.codes import POLL_IN, SOCKET_TIMEOUT, Code, MCode, MultiError, caused
from hiperfifo.engine.deadlines import Deadlines, Due
from hiperfifo.engine.easy import Easy
from hiperfifo.engine.guard import CallbackGuard
from hiperfifo.engine.lease import Lease
from hiperfifo.engine.limits import IdleLimit
from hiperfifo.engine.options import check_multi
from hiperfifo.engine.pollset import PollSet
from hiperfifo.engine.pool import Pool
from hiperfifo.engine.resolver import GetAddrInfo, Resolver
from hiperfifo.engine.runner import Runner
from hiperfifo.engine.services import Services
from hiperfifo.engine.timer import Timer, TimerFunction
from hiperfifo.engine.transfer import Transfer

SocketFunction = Callable[[Easy | None, int, int, Any], Any]


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
        multiplex: bool = True,
        max_concurrent_streams: int = 100,
    ) -> None:
        max_total_connections = check_multi("max_total_connections", max_total_connections)
        max_host_connections = check_multi("max_host_connections", max_host_connections)
        max_idle_age = check_multi("max_idle_age", max_idle_age)
        clock = check_multi("clock", clock)
        resolver_threads = check_multi("resolver_threads", resolver_threads)
        getaddrinfo = check_multi("getaddrinfo", getaddrinfo)
        multiplex = check_multi("multiplex", multiplex)
        max_concurrent_streams = check_multi("max_concurrent_streams", max_concurrent_streams)
        self.socket_function = socket_function
        self._idle_limit = IdleLimit()
        self.max_connects = max_connects
        self._clock = clock
        self._guard = CallbackGuard()
        self._timer = Timer(None, clock, self._guard)
        self.timer_function = timer_function
        self._deadlines: Deadlines[Due] = Deadlines()
        self._pool = Pool(max_total_connections, max_host_connections, max_idle_age)
        self._resolver = Resolver(resolver_threads, getaddrinfo)
        self._pollset = PollSet(self._announce)
        self._lease = Lease(
            self._pool,
            clock,
            self._pollset.forget,
            self._idle_limit,
            multiplex=multiplex,
            max_streams=max_concurrent_streams,
        )
        self._svc = Services(clock, self._deadlines, self._lease, self._resolver, self._guard)
        self._runner = Runner(
            self._pollset, self._deadlines, self._resolver, clock, self._lease, self._svc.view
        )
        self._idle_limit.handles = self._runner.transfers
        self._dead: BaseException | None = None
        self._died_now: BaseException | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "dead" if self._dead else "closed" if self._closed else "ok"
        return (
            f"<Multi {state} running={self._runner.alive} sockets={len(self._pollset)} "
            f"pending={len(self._runner.pending)} {self._pool!r}>"
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
        return self._timer.function

    @timer_function.setter
    def timer_function(self, value: TimerFunction | None) -> None:
        self._timer.function = check_multi("timer_function", value)

    @property
    def max_connects(self) -> int | None:
        return self._idle_limit.max_connects

    @max_connects.setter
    def max_connects(self, value: int | None) -> None:
        self._idle_limit.max_connects = check_multi("max_connects", value)

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
            if self._runner.transfers:
                raise caused(
                    MultiError(MCode.ABORTED_BY_CALLBACK, "the multi is dead"), self._dead
                )
            self._dead = None
            self._timer.reset()
        easy.multi = self
        self._runner.add(Transfer(easy, self._svc))  # (it clears the easy's getinfo answers)
        self._finish_call()

    def remove_handle(self, easy: Easy) -> None:
        """Take `easy` out, at any time; a running transfer stops and gets no message."""
        self._enter()
        if easy.multi is None:
            return
        if easy.multi is not self:
            raise MultiError(MCode.BAD_EASY_HANDLE, "the easy handle is in another multi")
        easy.multi = None
        self._runner.remove(easy)
        self._finish_call()

    def socket_action(self, sockfd: int, ev_bitmask: int = 0) -> int:
        """Act on `sockfd` (or SOCKET_TIMEOUT) and on expired deadlines; returns running."""
        self._enter()
        self._check_dead()
        runner = self._runner
        runner.in_action = True
        try:
            if sockfd == SOCKET_TIMEOUT:
                self._timer.force = True
            else:
                runner.act_on_fd(sockfd)
            runner.run_expired()
            runner.run_expired()  # one extra pass, as libcurl does, for what expired meanwhile
            self._finish_call()
        finally:
            runner.in_action = False
        return runner.alive

    def socket_all(self) -> int:
        """Deprecated curl_multi_socket_all: act on every transfer and deadline."""
        self._enter()
        self._check_dead()
        runner = self._runner
        runner.in_action = True
        try:
            runner.collect_lookups()
            runner.run_all()
            runner.run_expired()
            self._finish_call()
        finally:
            runner.in_action = False
        return runner.alive

    def assign(self, fd: int, socketp: Any) -> None:
        """Attach `socketp` to an announced fd; it comes back in the socket callback."""
        if not self._pollset.assign(fd, socketp):
            raise MultiError(MCode.BAD_SOCKET, f"fd {fd} is not announced")

    def info_read(self) -> Message | None:
        """The oldest unread finished transfer, or None."""
        messages = self._runner.messages
        if not messages:
            return None
        easy = next(iter(messages))
        del messages[easy]
        return tuple.__new__(Message, (easy, easy.result, len(messages)))  # (C, not Python)

    def timeout(self) -> int:
        """Milliseconds until socket_action(SOCKET_TIMEOUT) is due; -1 if nothing is."""
        self._enter()
        if self._dead is not None:
            return 0
        return self._timer.ms_until(self._deadlines.earliest())

    def close(self) -> None:
        """Stop every transfer and close every connection; the multi is unusable after."""
        self._enter()
        for easy in list(self._runner.transfers):
            self.remove_handle(easy)
        for conn in self._pool.drain_idle():
            conn.sock.close()  # idle connections are not announced
        for shared in self._lease.drain_shared():  # HTTP/2 ones: idle now, so not announced
            shared.close()
            self._lease.close_socket(shared.conn.sock)
        self._pollset.drop_owner(self._resolver)
        self._resolver.close()
        self._closed = True

    # --- internals -----------------------------------------------------------------

    def _enter(self) -> None:
        if self._closed:
            raise MultiError(MCode.BAD_HANDLE, "the multi is closed")
        if self._guard.active:
            raise MultiError(MCode.RECURSIVE_API_CALL)
        self._lease.call += 1

    def _check_dead(self) -> None:
        if self._dead is not None:
            raise caused(MultiError(MCode.ABORTED_BY_CALLBACK, "the multi is dead"), self._dead)

    def _finish_call(self) -> None:
        """End of every API call: what HTTP/2 streams queued, resolver socket, timer, and a
        callback that raised."""
        self._runner.end_call()
        resolver = self._resolver
        if resolver.in_flight:
            self._pollset.sync(resolver, None, {resolver.wake_fd: POLL_IN})
        else:
            self._pollset.drop_owner(resolver)
        if self._dead is None:  # the timer callback, if the deadline moved
            try:
                self._timer.update(self._deadlines.earliest())
            except Exception as exc:
                self._die(exc)
        died, self._died_now = self._died_now, None
        if died is not None:
            raise caused(MultiError(MCode.ABORTED_BY_CALLBACK, "a callback raised"), died)

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

    def _die(self, exc: BaseException) -> None:
        if self._dead is None:
            self._dead = exc
        if self._died_now is None:
            self._died_now = exc
