"""The re-entrancy guard: are we inside an application callback right now?

libcurl 8.22+ keeps a call stack per multi and refuses non-recursive API
calls while anything is on it (CURLM_RECURSIVE_API_CALL). Every callback the
engine makes (socket, timer, write, header, progress) runs inside `calling()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class CallbackGuard:
    """Counts nested application callbacks of one multi."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0

    @property
    def active(self) -> bool:
        return self.depth > 0

    @contextmanager
    def calling(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
