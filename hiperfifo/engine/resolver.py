"""Name resolution that never blocks the caller (libcurl's threaded resolver).

`getaddrinfo` runs on a few worker threads; each completion writes one byte
to a socketpair whose read end the multi announces through the socket
callback (owner: the resolver, easy: None), so the application's loop wakes
and calls `socket_action` on it. Numeric addresses and `localhost` never
reach a thread. Nothing here touches transfers: results go back by token.
The lookup function is injectable (`Multi(getaddrinfo=...)`, as `clock=`), so
tests and applications decide what a name resolves to without patching
`socket`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import queue
import socket
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any, NamedTuple

Address = tuple[int, tuple[object, ...]]  # (family, sockaddr)
# socket.getaddrinfo's shape: called as getaddrinfo(host, port, type=socket.SOCK_STREAM) on a
# resolver thread, returns (family, type, proto, canonname, sockaddr) tuples or raises OSError.
GetAddrInfo = Callable[..., Iterable[tuple[Any, Any, Any, Any, tuple[Any, ...]]]]


class Resolved(NamedTuple):
    """A finished lookup: addresses, or the reason there are none."""

    token: Hashable
    addresses: list[Address]
    error: str


def numeric_addresses(host: str, port: int) -> list[Address] | None:
    """Addresses for an IP literal or localhost without any lookup; None if a lookup is needed."""
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return [(socket.AF_INET6, ("::1", port, 0, 0)), (socket.AF_INET, ("127.0.0.1", port))]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return [(socket.AF_INET6, (str(ip), port, 0, 0))]
    return [(socket.AF_INET, (str(ip), port))]


def interleave_families(addresses: list[Address]) -> list[Address]:
    """Alternate families, starting with the first one the system prefers (happy eyeballs)."""
    if not addresses:
        return []
    first = addresses[0][0]
    same = [a for a in addresses if a[0] == first]
    other = [a for a in addresses if a[0] != first]
    ordered: list[Address] = []
    for i in range(max(len(same), len(other))):
        ordered.extend(group[i] for group in (same, other) if i < len(group))
    return ordered


def _system_getaddrinfo(*args: Any, **kwargs: Any) -> Any:
    return socket.getaddrinfo(*args, **kwargs)


def _lookup(getaddrinfo: GetAddrInfo, host: str, port: int) -> tuple[list[Address], str]:
    try:
        infos = list(getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError) as exc:
        return [], f"Could not resolve host: {host} ({exc})"
    seen: set[tuple[int, tuple[object, ...]]] = set()
    addresses: list[Address] = []
    for family, _type, _proto, _name, sockaddr in infos:
        key = (int(family), tuple(sockaddr))
        if key not in seen:
            seen.add(key)
            addresses.append(key)
    return interleave_families(addresses), ""


class Resolver:
    """A small pool of lookup threads that wake the loop through a socketpair."""

    def __init__(self, max_threads: int = 4, getaddrinfo: GetAddrInfo | None = None) -> None:
        self._max_threads = max_threads
        # looked up at call time when not given, so the process's socket.getaddrinfo is used
        self._getaddrinfo: GetAddrInfo = getaddrinfo or _system_getaddrinfo
        self._threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue[tuple[Hashable, str, int] | None] = queue.SimpleQueue()
        self._done: deque[Resolved] = deque()
        self._in_flight = 0
        self._rsock: socket.socket | None = None
        self._wsock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<Resolver threads={len(self._threads)} in_flight={self._in_flight}>"

    @property
    def in_flight(self) -> int:
        """Lookups submitted and not yet collected by `collect()`."""
        return self._in_flight

    @property
    def wake_fd(self) -> int:
        """The fd to watch for IN while lookups are in flight."""
        self._ensure_socketpair()
        assert self._rsock is not None
        return self._rsock.fileno()

    def submit(self, token: Hashable, host: str, port: int) -> None:
        """Start looking `host` up; the result comes back from `collect()` under `token`."""
        self._ensure_socketpair()
        self._in_flight += 1
        self._jobs.put((token, host, port))
        if len(self._threads) < min(self._max_threads, self._in_flight):
            thread = threading.Thread(target=self._work, name="hiperfifo-resolver", daemon=True)
            self._threads.append(thread)
            thread.start()

    def collect(self) -> list[Resolved]:
        """Drain the wake-up socket and return every finished lookup."""
        if self._rsock is not None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while self._rsock.recv(4096):
                    pass
        finished: list[Resolved] = []
        while self._done:
            finished.append(self._done.popleft())
        self._in_flight -= len(finished)
        return finished

    def close(self) -> None:
        """Stop the threads (they finish their current lookup) and close the socketpair."""
        for _ in self._threads:
            self._jobs.put(None)
        self._threads.clear()
        for sock in (self._rsock, self._wsock):
            if sock is not None:
                sock.close()
        self._rsock = self._wsock = None
        self._in_flight = 0
        self._done.clear()

    def _ensure_socketpair(self) -> None:
        if self._rsock is None:
            self._rsock, self._wsock = socket.socketpair()
            self._rsock.setblocking(False)
            self._wsock.setblocking(False)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            token, host, port = job
            addresses, error = _lookup(self._getaddrinfo, host, port)
            self._done.append(Resolved(token, addresses, error))
            wsock = self._wsock
            if wsock is not None:
                with contextlib.suppress(OSError):
                    wsock.send(b"\0")
