"""systemd integration without libsystemd: sd_notify datagrams and socket activation.

Owns the NOTIFY_SOCKET protocol (READY, STATUS, STOPPING, WATCHDOG; one
datagram per message, never blocking, never raising), the `StatusReporter`
that tells systemd about a run (READY from inside the running loop, STATUS
when it changed, WATCHDOG pings, STOPPING), the watchdog interval
(WATCHDOG_USEC/WATCHDOG_PID) and the LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES
handover. Stdlib only; it reads no environment itself: cli.py passes the
mapping in (and LISTEN_* are removed from it, so children do not inherit them).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

SD_LISTEN_FDS_START = 3  # sd-daemon.h: the first passed descriptor
STATUS_EVERY = 1.0  # seconds between STATUS= updates (only when it changed)
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class Notifier:
    """Sends sd_notify messages to $NOTIFY_SOCKET; without one it does nothing.

    The socket is non-blocking: when systemd's queue is full the message is
    dropped (and `send` answers False) rather than stall the event loop.
    """

    def __init__(self, address: str | None) -> None:
        self.address = _socket_address(address)
        self.error: str | None = None  # the last failure, for one log line
        if address and self.address is None:
            self.error = f"unsupported NOTIFY_SOCKET address {address!r}"
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """A notifier for $NOTIFY_SOCKET (path or @abstract), disabled when it is unset."""
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram of KEY=VALUE lines (send(READY=1, STATUS="...")); False if not sent."""
        if self.address is None:
            return False
        payload = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload.encode("utf-8"), self.address)
        except OSError as exc:
            self.error = f"NOTIFY_SOCKET {self.address!r}: {exc.strerror or exc}"
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __repr__(self) -> str:
        return f"<Notifier {self.address!r}>"


class _Timers(Protocol):
    def call_later(self, seconds: float, callback: Callable[[], None]) -> object: ...

    def every(self, seconds: float, callback: Callable[[], None]) -> object: ...


class _Log(Protocol):
    def warning(self, event: str, **fields: Any) -> Any: ...


class StatusReporter:
    """What systemd hears about one run: READY, STATUS, WATCHDOG, STOPPING.

    Nothing at all without $NOTIFY_SOCKET. A failed send is logged once
    (daemon.notify_failed), not once a second.
    """

    def __init__(
        self, notifier: Notifier, watchdog: float | None, status: Callable[[], str], log: _Log
    ) -> None:
        self._notifier = notifier
        self._watchdog = watchdog
        self._status = status
        self._log = log
        self._last_status = ""
        self._failed = False

    def start(self, loop: _Timers) -> None:
        """READY=1 from inside the running loop; then STATUS and WATCHDOG pings."""
        if not self._notifier.enabled:
            return
        loop.call_later(0, lambda: self._notify(READY=1, STATUS=self._current()))
        loop.every(STATUS_EVERY, self._update)
        if self._watchdog is not None:
            loop.every(self._watchdog, lambda: self._notify(WATCHDOG=1))

    def stopping(self, reason: str) -> None:
        if self._notifier.enabled:
            self._notify(STOPPING=1, STATUS=f"stopping ({reason}): {self._current()}")

    def _current(self) -> str:
        self._last_status = self._status()
        return self._last_status

    def _update(self) -> None:
        previous = self._last_status
        if self._current() != previous:
            self._notify(STATUS=self._last_status)

    def _notify(self, **fields: str | int) -> None:
        if self._notifier.send(**fields) or self._failed:
            return
        self._failed = True  # one line, not one a second
        self._log.warning("daemon.notify_failed", error=self._notifier.error)


def _socket_address(text: str | None) -> str | None:
    """A path, or an abstract name (@name → \\0name); None for unset or unsupported (vsock:)."""
    if not text:
        return None
    if text.startswith("/"):
        return text
    if text.startswith("@") and len(text) > 1:
        return "\0" + text[1:]
    return None


def _one_line(value: str) -> str:
    return value.replace("\n", " ")


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when not asked.

    As sd_watchdog_enabled(3): WATCHDOG_PID, when set, must be this process.
    """
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid != str(pid):
        return None
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    return max(int(usec) / 2_000_000, 0.001)  # a libuv timer repeats in whole ms


@dataclass(frozen=True, slots=True)
class ListenFd:
    """A descriptor systemd passed (sd_listen_fds_with_names(3))."""

    fd: int
    name: str


def take_listen_fds(environ: MutableMapping[str, str], pid: int) -> list[ListenFd]:
    """The descriptors passed to this process, FD_CLOEXEC set; LISTEN_* removed from `environ`.

    Like sd_listen_fds(unset_environment=1): variables meant for another pid
    (LISTEN_PID differs) give no descriptors but are removed all the same.
    Descriptors are not checked here: the caller knows what it expects.
    """
    values = {name: environ.pop(name, None) for name in _LISTEN_VARS}
    count = values["LISTEN_FDS"] or ""
    if values["LISTEN_PID"] != str(pid) or not count.isdigit():
        return []
    names = (values["LISTEN_FDNAMES"] or "").split(":")
    passed = []
    for index in range(int(count)):
        fd = SD_LISTEN_FDS_START + index
        try:
            os.set_inheritable(fd, False)
        except OSError:
            pass  # not open: the caller's fstat says so
        name = names[index] if index < len(names) and names[index] else "unknown"
        passed.append(ListenFd(fd, name))
    return passed
