"""Multi: libcurl's multi-socket API (curl_multi_socket_action) in Python shapes.

The public class, interpreted on purpose: applications subclass it, patch its
methods, and a bad option is our MultiError/TypeError (options.py checks each
on assignment). Each public method is one frame that calls one method of its
MultiCore (multi_core.py, compiled with mypyc like the rest of the machinery),
which does the call: refuses re-entry from callbacks and a closed or dead
multi, does the work, announces socket and timer changes, and raises
MultiError for misuse. Running and settling transfers, the pending queue and
the finished messages live in runner.py; the timer callback's rules in
timer.py; socket bookkeeping in pollset.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from hiperfifo.engine.easy import Easy
from hiperfifo.engine.multi_core import Message, MultiCore, SocketFunction
from hiperfifo.engine.options import check_multi
from hiperfifo.engine.resolver import GetAddrInfo
from hiperfifo.engine.timer import TimerFunction

__all__ = ["Message", "Multi", "SocketFunction"]


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
        socket_function = check_multi("socket_function", socket_function)
        max_connects = check_multi("max_connects", max_connects)
        timer_function = check_multi("timer_function", timer_function)
        self._core = core = MultiCore(
            self,
            max_total_connections,
            max_host_connections,
            max_idle_age,
            clock,
            resolver_threads,
            getaddrinfo,
            multiplex,
            max_concurrent_streams,
        )
        core.socket_function = socket_function
        core.idle_limit.max_connects = max_connects
        core.timer.function = timer_function

    def __repr__(self) -> str:
        core = self._core
        state = "dead" if core.dead else "closed" if core.closed else "ok"
        return (
            f"<Multi {state} running={core.runner.alive} sockets={len(core.pollset)} "
            f"pending={len(core.runner.pending)} {core.pool!r}>"
        )

    def __enter__(self) -> Multi:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._core.closed:
            self.close()

    # --- options changeable at any time, checked on assignment (options.py) ----------------

    @property
    def socket_function(self) -> SocketFunction | None:
        return self._core.socket_function

    @socket_function.setter
    def socket_function(self, value: SocketFunction | None) -> None:
        self._core.socket_function = check_multi("socket_function", value)

    @property
    def timer_function(self) -> TimerFunction | None:
        return self._core.timer.function

    @timer_function.setter
    def timer_function(self, value: TimerFunction | None) -> None:
        self._core.timer.function = check_multi("timer_function", value)

    @property
    def max_connects(self) -> int | None:
        return self._core.idle_limit.max_connects

    @max_connects.setter
    def max_connects(self, value: int | None) -> None:
        self._core.idle_limit.max_connects = check_multi("max_connects", value)

    # --- limits (changeable at run time; L5) -------------------------------------------

    @property
    def max_total_connections(self) -> int:
        return self._core.pool.max_total

    @max_total_connections.setter
    def max_total_connections(self, value: int) -> None:
        self._core.pool.max_total = check_multi("max_total_connections", value)

    @property
    def max_host_connections(self) -> int:
        return self._core.pool.max_host

    @max_host_connections.setter
    def max_host_connections(self, value: int) -> None:
        self._core.pool.max_host = check_multi("max_host_connections", value)

    # --- the API: one frame each, the call itself compiled (multi_core.py) ----------------

    def add_handle(self, easy: Easy) -> None:
        """Queue `easy` to start on the next socket_action(SOCKET_TIMEOUT); does no I/O."""
        self._core.add_handle(easy)

    def remove_handle(self, easy: Easy) -> None:
        """Take `easy` out, at any time; a running transfer stops and gets no message."""
        self._core.remove_handle(easy)

    def socket_action(self, sockfd: int, ev_bitmask: int = 0) -> int:
        """Act on `sockfd` (or SOCKET_TIMEOUT) and on expired deadlines; returns running."""
        return self._core.socket_action(sockfd, ev_bitmask)

    def socket_all(self) -> int:
        """Deprecated curl_multi_socket_all: act on every transfer and deadline."""
        return self._core.socket_all()

    def assign(self, fd: int, socketp: Any) -> None:
        """Attach `socketp` to an announced fd; it comes back in the socket callback."""
        self._core.assign(fd, socketp)

    def info_read(self) -> Message | None:
        """The oldest unread finished transfer, or None."""
        return self._core.info_read()

    def timeout(self) -> int:
        """Milliseconds until socket_action(SOCKET_TIMEOUT) is due; -1 if nothing is."""
        return self._core.timeout()

    def close(self) -> None:
        """Stop every transfer and close every connection; the multi is unusable after."""
        core = self._core
        core.enter()
        for easy in core.easies():
            self.remove_handle(easy)
        core.close()
