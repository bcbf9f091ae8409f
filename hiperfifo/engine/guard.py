"""The re-entrancy guard: are we inside an application callback right now?

libcurl 8.22+ keeps a call stack per multi and refuses non-recursive API
calls while anything is on it (CURLM_RECURSIVE_API_CALL). Every callback the
engine makes (socket, timer, write, header, progress) runs inside
`with guard.calling():`. A plain context manager, not a generator one: it is
entered several times per transfer.
"""

from __future__ import annotations

from types import TracebackType


class CallbackGuard:
    """Counts nested application callbacks of one multi."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0

    @property
    def active(self) -> bool:
        return self.depth > 0

    def calling(self) -> CallbackGuard:
        """`with guard.calling():` around every call into the application."""
        return self

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.depth -= 1
