"""What the debug callback is told (curl's CURLOPT_DEBUGFUNCTION): heads as `curl -v` shows.

A Trace calls it for one transfer, inside the callback guard; one that
raised is not called again, and the transfer ends with ABORTED_BY_CALLBACK
when it next runs (never an exception out of the API). The texts: a
request head as queued (CURLINFO_HEADER_OUT), a response head as received,
1xx and a proxy's CONNECT answer included (CURLINFO_HEADER_IN).
"""

from __future__ import annotations

from hiperfifo.engine.easy import InfoType
from hiperfifo.engine.guard import CallbackGuard
from hiperfifo.engine.handle import Handle
from hiperfifo.engine.http1 import ResponseHead


class Trace:
    """One transfer's calls of its Easy's debug_function."""

    __slots__ = ("_easy", "_guard", "error")

    def __init__(self, easy: Handle, guard: CallbackGuard) -> None:
        self._easy = easy
        self._guard = guard
        self.error = ""  # why the transfer must end: the callback raised

    def __call__(self, kind: InfoType, text: str) -> None:
        debug = self._easy.debug_function
        if debug is None or self.error:
            return
        try:
            with self._guard.calling():
                debug(kind, text)
        except Exception as exc:
            self.error = f"debug callback raised: {exc!r}"


def head_out(data: bytes) -> str:
    """The head of a request's bytes (up to its blank line)."""
    end = data.find(b"\r\n\r\n")
    return (data[: end + 4] if end >= 0 else data).decode("latin-1")


def head_in(head: ResponseHead) -> str:
    return b"".join(head.lines()).decode("latin-1")
