"""The fd table and the socket callback as a diff (curl's multi_ev.c).

For each announced fd: its owner (a transfer, or the resolver), the easy
reported with it, what the application was last told, and its `assign()`ed
pointer. Owners say what they want; only differences reach the socket
callback. `forget()` must run before the fd is closed: the OS reuses fd
numbers at once, and a late event for the old socket must not reach a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from hiperfifo.engine.codes import POLL_REMOVE

# (easy, fd, what, socketp) -> True when the application took the announcement
Announce = Callable[[Any, int, int, Any], bool]


class _Entry:
    __slots__ = ("easy", "owner", "socketp", "what")

    def __init__(self, owner: Hashable, easy: Any, what: int) -> None:
        self.owner = owner
        self.easy = easy
        self.what = what
        self.socketp: Any = None


class PollSet:
    """What the application watches, and who owns each fd."""

    def __init__(self, announce: Announce) -> None:
        self._announce = announce
        self._entries: dict[int, _Entry] = {}
        self._by_owner: dict[Hashable, set[int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def owner_of(self, fd: int) -> Hashable | None:
        entry = self._entries.get(fd)
        return entry.owner if entry is not None else None

    def fds(self) -> list[int]:
        return list(self._entries)

    def assign(self, fd: int, socketp: Any) -> bool:
        """Attach the application's pointer to an announced fd; False if unknown."""
        entry = self._entries.get(fd)
        if entry is None:
            return False
        entry.socketp = socketp
        return True

    def sync(self, owner: Hashable, easy: Any, wanted: Mapping[int, int]) -> None:
        """Make the application watch exactly `wanted` (fd -> POLL_*) for `owner`."""
        mine = self._by_owner.get(owner)
        if mine:
            for fd in [fd for fd in mine if fd not in wanted]:
                self.forget(fd)
        for fd, what in wanted.items():
            entry = self._entries.get(fd)
            if (
                entry is None
                or entry.owner is not owner
                or entry.what != what
                or entry.easy is not easy
            ):
                self._want(owner, easy, fd, what)  # else the common case: nothing changed

    def adopt(self, fd: int, owner: Hashable) -> None:
        """Hand an announced fd to a new owner without telling the application (a
        connection that a transfer opened and that now carries several, HTTP/2)."""
        entry = self._entries.get(fd)
        if entry is None or entry.owner is owner:
            return
        self._disown(entry.owner, fd)
        entry.owner = owner
        self._by_owner.setdefault(owner, set()).add(fd)

    def _disown(self, owner: Hashable, fd: int) -> None:
        """`fd` no longer belongs to `owner` (an owner without fds is dropped)."""
        mine = self._by_owner.get(owner)
        if mine is not None:
            mine.discard(fd)
            if not mine:
                del self._by_owner[owner]

    def drop_owner(self, owner: Hashable) -> None:
        """REMOVE every fd of `owner` (a transfer that finished or was removed)."""
        mine = self._by_owner.get(owner)
        if mine:
            for fd in list(mine):
                self.forget(fd)

    def forget(self, fd: int) -> None:
        """Announce POLL_REMOVE for `fd` if it was announced; call before closing it."""
        entry = self._entries.pop(fd, None)
        if entry is None:
            return
        self._disown(entry.owner, fd)
        self._announce(entry.easy, fd, POLL_REMOVE, entry.socketp)

    def _want(self, owner: Hashable, easy: Any, fd: int, what: int) -> None:
        entry = self._entries.get(fd)
        if entry is not None and entry.owner is not owner:
            self.forget(fd)  # a stale owner: the fd number came back
            entry = None
        if entry is None:
            # Recorded before the call, so the callback may assign() to it (libcurl allows
            # that); a failed announcement is not recorded and so gets no REMOVE later.
            entry = self._entries[fd] = _Entry(owner, easy, what)
            if self._announce(easy, fd, what, None):
                mine = self._by_owner.get(owner)
                if mine is None:  # (not setdefault: no set made per call)
                    self._by_owner[owner] = {fd}
                else:
                    mine.add(fd)
            else:
                del self._entries[fd]
            return
        if entry.what == what and entry.easy is easy:
            return
        if self._announce(easy, fd, what, entry.socketp):
            entry.what = what
            entry.easy = easy
