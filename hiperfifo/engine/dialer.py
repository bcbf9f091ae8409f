"""Happy eyeballs: connect attempts to a host's addresses, the first to connect wins.

An address the network policy refuses is skipped before any socket exists.

Attempts alternate families in the order the resolver gave; a new one starts
when the previous has neither connected nor failed within EYEBALLS_DELAY, or
at once when one fails; at most MAX_ATTEMPTS run together (libcurl's
cf-ip-happy.c). The dialer opens and checks sockets; it never waits, and it
closes losers only through `close_socket`, which announces POLL_REMOVE first.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from collections.abc import Callable

from hiperfifo.engine.resolver import Address

EYEBALLS_DELAY = 0.2  # libcurl's CURL_HET_DEFAULT
MAX_ATTEMPTS = 6  # libcurl's IP_HE_MAX_CONCURRENT_ATTEMPTS


class Dialer:
    """The connect attempts of one transfer to one host."""

    def __init__(
        self,
        addresses: list[Address],
        close_socket: Callable[[socket.socket], None],
        clock: Callable[[], float],
        refusal: Callable[[str], str] | None = None,
    ) -> None:
        self._addresses = deque(addresses)
        self._refusal = refusal
        self._attempts: list[tuple[socket.socket, Address]] = []
        self._close_socket = close_socket
        self._clock = clock
        self.last_start = 0.0
        self.error = ""

    def __repr__(self) -> str:
        return f"<Dialer attempts={len(self._attempts)} waiting={len(self._addresses)}>"

    @property
    def exhausted(self) -> bool:
        return not self._attempts and not self._addresses

    @property
    def more_waiting(self) -> bool:
        return bool(self._addresses)

    def fds(self) -> list[int]:
        return [sock.fileno() for sock, _address in self._attempts]

    def start_next(self) -> None:
        """Start the next address's attempt (skipping addresses that fail at once)."""
        while self._addresses and len(self._attempts) < MAX_ATTEMPTS:
            address = self._addresses.popleft()
            denied = self._refusal(str(address[1][0])) if self._refusal is not None else ""
            if denied:
                self.error = f"denied by network policy: {denied}"
                continue
            sock, error = _open_attempt(address)
            if sock is not None:
                self._attempts.append((sock, address))
                self.last_start = self._clock()
                return
            self.error = f"{_show(address)}: {error}"

    def check(self) -> socket.socket | None:
        """The winning socket, if one connected; failed attempts are closed and replaced."""
        if not self._attempts:
            self.start_next()
        for sock, address in list(self._attempts):
            connected, error = _attempt_status(sock)
            if connected:
                self._attempts.remove((sock, address))
                self.close()
                return sock
            if error:
                self._attempts.remove((sock, address))
                self.error = f"{_show(address)}: {error}"
                self._close_socket(sock)
                self.start_next()
        return None

    def close(self) -> None:
        """Close every attempt still running and forget the addresses left."""
        for sock, _address in self._attempts:
            self._close_socket(sock)
        self._attempts.clear()
        self._addresses.clear()


def _open_attempt(address: Address) -> tuple[socket.socket | None, str]:
    family, sockaddr = address
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return None, f"socket(): {exc.strerror or exc}"
    try:
        sock.setblocking(False)
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(sockaddr)
    except OSError as exc:
        sock.close()
        return None, exc.strerror or str(exc)
    if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EINTR):
        sock.close()
        return None, os.strerror(err)
    return sock, ""


def _attempt_status(sock: socket.socket) -> tuple[bool, str]:
    """(connected, error): (True, "") done, (False, "") still going, (False, reason) failed."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        return False, os.strerror(err)
    try:
        sock.getpeername()
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return False, ""
        return False, exc.strerror or str(exc)
    return True, ""


def _show(address: Address) -> str:
    sockaddr = address[1]
    return f"{sockaddr[0]}:{sockaddr[1]}"
