"""Run a Multi without pyuv: a stdlib `selectors` driver and a fake clock.

For the engine's tests and for library users who want the engine on a plain
loop. The driver does what an application must: registers announced sockets,
keeps one timer, calls socket_action and drains info_read. With `record=True`
it keeps every callback in `calls` so tests can assert the exact sequence (off
by default: the list would hold every Easy ever run).
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable
from typing import Any

from hiperfifo.engine.codes import (
    CSELECT_IN,
    CSELECT_OUT,
    POLL_IN,
    POLL_INOUT,
    POLL_OUT,
    POLL_REMOVE,
    SOCKET_TIMEOUT,
)
from hiperfifo.engine.easy import Easy
from hiperfifo.engine.multi import Message, Multi

SELECTOR_EVENTS = {  # what a socket callback asks for, as selectors events
    POLL_IN: selectors.EVENT_READ,
    POLL_OUT: selectors.EVENT_WRITE,
    POLL_INOUT: selectors.EVENT_READ | selectors.EVENT_WRITE,
}


class FakeClock:
    """A clock that moves only when told: timer tests run instantly."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SelectorDriver:
    """Drives a Multi on `selectors`: one registration per announced fd, one timer."""

    def __init__(
        self, multi: Multi | None = None, *, record: bool = False, **multi_kwargs: Any
    ) -> None:
        self.multi = multi if multi is not None else Multi(**multi_kwargs)
        self.multi.socket_function = self._on_socket
        self.multi.timer_function = self._on_timer
        self.calls: list[tuple[Any, ...]] = []  # every callback, when recording
        self._record = record
        self.messages: list[Message] = []
        self._selector = selectors.DefaultSelector()
        # REMOVEd fds still registered, by the inode of the socket they were: a keep-alive
        # connection taken by the next transfer is REMOVEd and announced again inside one
        # socket_action; its registration is kept instead of torn down and rebuilt.
        self._removed: dict[int, int] = {}
        self._inodes: dict[int, int] = {}
        self._timer_at: float | None = None
        self._monotonic: Callable[[], float] = time.monotonic

    def __repr__(self) -> str:
        return f"<SelectorDriver fds={len(self._selector.get_map())} timer={self._timer_at}>"

    @property
    def watched(self) -> dict[int, int]:
        """fd -> selectors events currently registered (what the app watches)."""
        self._unregister_removed()
        return {key.fd: key.events for key in self._selector.get_map().values()}

    def step(self, max_wait: float = 1.0) -> int:
        """Wait for one round of readiness (or the timer) and dispatch it; returns running."""
        wait = max_wait
        if self._timer_at is not None:
            wait = max(0.0, min(wait, self._timer_at - self._monotonic()))
        ready = self._selector.select(wait) if self._selector.get_map() else _sleep(wait)
        running = None
        for key, events in ready:
            if key.fd not in self._inodes:
                continue  # unregistered by an earlier socket_action of this round
            bits = (CSELECT_IN if events & selectors.EVENT_READ else 0) | (
                CSELECT_OUT if events & selectors.EVENT_WRITE else 0
            )
            running = self.multi.socket_action(key.fd, bits)
            self._drain()
        if self._timer_at is not None and self._monotonic() >= self._timer_at:
            self._timer_at = None
            running = self.multi.socket_action(SOCKET_TIMEOUT, 0)
            self._drain()
        if running is None:
            running = self.multi.socket_action(SOCKET_TIMEOUT, 0) if not ready else 0
            self._drain()
        return running

    def run(self, timeout: float = 30.0) -> list[Message]:
        """Drive until no transfer runs; returns the messages read (handles stay added)."""
        deadline = self._monotonic() + timeout
        start = len(self.messages)
        running = self._kick()
        while running:
            if self._monotonic() > deadline:
                raise TimeoutError(f"transfers still running after {timeout} s: {self.multi!r}")
            running = self.step(min(1.0, max(0.0, deadline - self._monotonic())))
        self._drain()
        return self.messages[start:]

    def perform(self, *easies: Easy, timeout: float = 30.0) -> list[Easy]:
        """Add each easy, run them all to completion, remove them; returns the easies."""
        for easy in easies:
            self.multi.add_handle(easy)
        try:
            self.run(timeout)
        finally:
            for easy in easies:
                self.multi.remove_handle(easy)
        return list(easies)

    def close(self) -> None:
        self.multi.close()
        self._unregister_removed()
        self._selector.close()

    def _kick(self) -> int:
        running = self.multi.socket_action(SOCKET_TIMEOUT, 0)
        self._timer_at = None if self._timer_at is None else self._timer_at
        self._drain()
        return running

    def _drain(self) -> None:
        """After every socket_action: read the messages, drop what stayed REMOVEd."""
        self._unregister_removed()
        while (message := self.multi.info_read()) is not None:
            self.messages.append(message)

    def _on_socket(self, easy: Easy | None, fd: int, what: int, socketp: Any) -> None:
        if self._record:
            self.calls.append(("socket", easy, fd, what))
        if what == POLL_REMOVE:
            if socketp is not None:
                self._removed[fd] = self._inodes[fd]
            return
        events = SELECTOR_EVENTS[what]
        if socketp is None:
            self._register(fd, events)
            self.multi.assign(fd, fd)
        else:
            self._selector.modify(fd, events)

    def _register(self, fd: int, events: int) -> None:
        inode = os.fstat(fd).st_ino
        if self._removed.pop(fd, None) == inode:  # the same socket, back within one call
            self._selector.modify(fd, events)
            return
        if fd in self._inodes:  # the number was closed and reused meanwhile
            self._forget(fd)
        self._selector.register(fd, events)
        self._inodes[fd] = inode

    def _unregister_removed(self) -> None:
        removed, self._removed = self._removed, {}
        for fd in removed:
            self._forget(fd)

    def _forget(self, fd: int) -> None:
        # The socket may be closed already: epoll then dropped it itself, and selectors
        # ignores the error of unregistering it.
        self._selector.unregister(fd)
        del self._inodes[fd]

    def _on_timer(self, timeout_ms: int) -> None:
        if self._record:
            self.calls.append(("timer", timeout_ms))
        self._timer_at = None if timeout_ms < 0 else self._monotonic() + timeout_ms / 1000


def _sleep(seconds: float) -> list[tuple[selectors.SelectorKey, int]]:
    time.sleep(seconds)
    return []
