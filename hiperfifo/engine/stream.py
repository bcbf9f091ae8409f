"""One request as a stream on a shared HTTP/2 connection (exchange.py's sibling).

Opens the stream (the request's HEADERS and body), fills the getinfo fields
a request fills, hands what the connection received for the stream to the
Response, and hands the window back as the body is taken. A stream that
ends without its response raises what libcurl would retry: Retry for a
stream the server never processed (REFUSED_STREAM, above a GOAWAY's
last_stream_id; up to 5 times, then RECV_ERROR 56), Stale for a reused
connection that died before any byte of the response (once, as on
HTTP/1.1); else a TransferError with the stream's code (92; 16 for a
connection error; a lost connection 18 once body bytes came, else 16).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from hiperfifo.engine.codes import Code, TransferError
from hiperfifo.engine.easy import InfoType
from hiperfifo.engine.exchange import Stale
from hiperfifo.engine.handle import Handle
from hiperfifo.engine.http2_events import (
    Event,
    StreamData,
    StreamEnd,
    StreamHead,
    StreamReset,
    StreamTrailers,
)
from hiperfifo.engine.response import Response
from hiperfifo.engine.shared import Shared, StreamUser

MAX_RETRIES = 5  # streams refused or above a GOAWAY's last id: libcurl's CONN_MAX_RETRIES


class Retry(TransferError):
    """The server never processed the request: it may go again, on any connection."""


class Stream:
    """Our stream on `shared`, and the response it carries."""

    __slots__ = ("_easy", "_retries", "_reused", "response", "shared", "stream_id")

    def __init__(
        self,
        shared: Shared,
        user: StreamUser,
        response: Response,
        request: tuple[str, str, str, list[tuple[str, str]], bytes | None],
        trace: Callable[[InfoType, str], None] | None = None,
        retries: int = 0,
    ) -> None:
        """Open the stream: `request` is (method, scheme, path, headers, body); `retries`:
        how often the transfer went again already because a server did not process it."""
        easy: Handle = user.handle
        method, scheme, path, headers, body = request
        self.shared = shared
        self._easy = easy
        self.response = response
        self._retries = retries
        self._reused = shared.h2.completed > 0  # others finished on it before us
        conn = shared.conn
        easy.primary_ip, easy.primary_port = conn.peer()
        easy.local_port = conn.local_port()
        easy.http_version_used = "2"
        self.stream_id = shared.open(user, method, scheme, path, headers, body)
        if trace is not None:  # shown as curl -v shows an HTTP/2 request
            lines = [f"{method} {path} HTTP/2", *(f"{k}: {v}" for k, v in headers), "", ""]
            trace(InfoType.HEADER_OUT, "\r\n".join(lines))

    def deliver(self, event: Event) -> bool:
        """Hand one event to the response; True when it ended. Raises Retry, Stale (the
        reused connection died before any byte of our response) or TransferError."""
        kind = type(event)
        response = self.response
        if kind is StreamData:
            assert isinstance(event, StreamData)
            response.on_body(event.data)
            self.shared.consumed(event.stream_id, event.flow)
            if event.end:
                response.on_end()
                return True
            return False
        if kind is StreamHead:
            assert isinstance(event, StreamHead)
            response.on_head(event.head, event.final)
            return False
        if kind is StreamEnd:
            response.on_end()
            return True
        if kind is StreamTrailers:
            assert isinstance(event, StreamTrailers)
            response.on_trailers(event.lines, traced=True)
            return False
        assert isinstance(event, StreamReset)
        if event.retry:  # never processed by the server: libcurl goes again, 5 times at most
            if self._retries < MAX_RETRIES:
                raise Retry(event.code, event.text)
            raise TransferError(
                Code.RECV_ERROR, f"Connection died, tried {MAX_RETRIES} times before giving up"
            )
        if event.lost:  # libcurl: 18 once body bytes came, else 16; a reused one goes again
            if self._reused and response.head is None:
                raise Stale(event.code, event.text)
            if self._easy.size_download:
                raise TransferError(Code.PARTIAL_FILE, event.text)
        if event.code is Code.OK:  # RST_STREAM(NO_ERROR): libcurl reads it as the end
            _check_clean_end(self._easy, response, event.stream_id)
            response.on_end()
            return True
        raise TransferError(event.code, event.text)

    def cancel(self) -> None:
        """The transfer stops early: reset this stream alone (a no-op once it ended)."""
        self.shared.cancel(self.stream_id)


def _check_clean_end(easy: Handle, response: Response, stream_id: int) -> None:
    """A stream the server closed with RST_STREAM(NO_ERROR) ends its response, as libcurl
    8.23 reads it: before the final head that is 92, short of the content-length 18."""
    head = response.head
    if head is None:
        raise TransferError(
            Code.HTTP2_STREAM,
            f"HTTP/2 stream {stream_id} was closed cleanly, but before getting all response "
            "header fields, treated as error",
        )
    missing = easy.content_length - easy.size_download
    bodiless = response.skip_body or easy.method == "HEAD" or head.status in (204, 304)
    if missing > 0 and not bodiless:
        raise TransferError(Code.PARTIAL_FILE, f"end of response with {missing} bytes missing")


class Outcome(enum.Enum):
    """What the end of a stream means for its transfer."""

    ENDED = enum.auto()  # the response is complete
    AGAIN = enum.auto()  # never processed by the server: send it again, anywhere
    AGAIN_FRESH = enum.auto()  # the reused connection died first: again, on a new one


class StreamSide:
    """A transfer's HTTP/2 side: its stream while one runs, and how often it went again."""

    __slots__ = ("retries", "stream")

    def __init__(self) -> None:
        self.stream: Stream | None = None
        self.retries = 0

    def start(
        self,
        shared: Shared,
        user: StreamUser,
        response: Response,
        request: tuple[str, str, str, list[tuple[str, str]], bytes | None],
        trace: Callable[[InfoType, str], None] | None,
    ) -> None:
        self.stream = Stream(shared, user, response, request, trace, self.retries)

    def settle(self, event: Event) -> Outcome | None:
        """Hand one event to the stream: None while it runs, else what its end means.
        Raises TransferError when the transfer fails with it."""
        stream = self.stream
        if stream is None:
            return None
        try:
            if not stream.deliver(event):
                return None
            outcome = Outcome.ENDED
        except Stale:
            outcome = Outcome.AGAIN_FRESH
        except Retry:
            self.retries += 1
            outcome = Outcome.AGAIN
        except TransferError:
            self.stream = None
            raise
        self.stream = None
        return outcome

    def cancel(self) -> Shared | None:
        """The transfer stops early: reset the stream alone; its connection, to settle."""
        stream, self.stream = self.stream, None
        if stream is None:
            return None
        stream.cancel()
        return stream.shared
