"""One HTTP/1.1 connection's protocol state, on h11: bytes in, events out.

The only module that imports h11. It maps every h11 failure to libcurl's
code at this one boundary, and closes h11's gaps as a client
(notes/reliability.md 2.2): a header block that arrives in one read is
still bounded, bytes beyond the body make the connection unusable, and an
absurd chunk size is refused. It does no I/O and keeps no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

import h11

from hiperfifo.engine.codes import Code, TransferError

MAX_HEADER_BYTES = 100 * 1024  # libcurl's CURL_MAX_HTTP_HEADER
MAX_CHUNK_SIZE = 2**63 - 1  # libcurl refuses chunk sizes beyond curl_off_t
_STATUS_LINE = re.compile(rb"HTTP/\d\.\d \d{3}(?: |\r?$)")
_HTTP_PREFIX = b"HTTP/"


class ResponseHead(NamedTuple):
    """A response's status line and headers as they came, names in their own case."""

    status: int
    http_version: str
    reason: str
    headers: list[tuple[bytes, bytes]]

    def lines(self) -> list[bytes]:
        """The header block as CURLOPT_HEADERFUNCTION sees it, one line each, CRLF included."""
        out = [
            b"HTTP/%s %d %s\r\n" % (self.http_version.encode(), self.status, self.reason.encode())
        ]
        out.extend(name + b": " + value + b"\r\n" for name, value in self.headers)
        out.append(b"\r\n")
        return out

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


# Event kinds returned by Http1.receive(): ("head", ResponseHead), ("info", ResponseHead),
# ("data", bytes), ("end", None)
Event = tuple[str, object]


class Http1:
    """The client side of one HTTP/1.1 connection, one request/response cycle at a time."""

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self._max_header_bytes = max_header_bytes
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_header_bytes)
        self._head = bytearray()  # bytes of the response head(s) seen so far, bounded
        self._in_head = True
        self._method = b""
        self._closing = False  # we asked for Connection: close
        # Body bytes of a Content-Length response bypass h11 (one copy less, no per-read
        # bookkeeping): how many are still due, None when h11 frames the body.
        self._body_left: int | None = None
        self._fast = False  # this cycle's body went past h11: a new h11 for the next one
        self._fast_reusable = False
        self.cycles = 0  # completed request/response cycles before this one
        self.received = 0  # bytes received in the current cycle

    def request(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> bytes:
        """The bytes of one request; raises TransferError for a request h11 refuses to write."""
        headers = list(headers)
        self._method = method.upper().encode()
        self._closing = any(
            name.lower() == "connection" and "close" in value.lower() for name, value in headers
        )
        try:
            data = self._conn.send(h11.Request(method=method, target=target, headers=headers))
            if body:
                data += self._conn.send(h11.Data(data=body))
            data += self._conn.send(h11.EndOfMessage())
        except (h11.LocalProtocolError, UnicodeError) as exc:
            raise TransferError(Code.BAD_FUNCTION_ARGUMENT, f"Invalid request: {exc}") from exc
        return data or b""

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes (b"" at end of stream) and return the events they complete."""
        self.received += len(data)
        if self._body_left is not None:
            return self._receive_body(data)
        if self._in_head:
            self._check_head(data)
        self._conn.receive_data(data)
        events: list[Event] = []
        try:
            self._next_events(events)
        except h11.RemoteProtocolError as exc:
            raise self._classify(exc, eof=not data) from exc
        if not self._in_head:
            self._check_chunk_size()
        return events

    def reusable(self) -> bool:
        """True when the cycle ended cleanly and nothing unexpected was left behind."""
        if self._fast:
            return self._fast_reusable
        conn = self._conn
        return (
            conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not conn.trailing_data[0]
        )

    def next_cycle(self) -> None:
        """Make the connection ready for the next request (only when reusable())."""
        if self._fast:
            self._conn = h11.Connection(
                h11.CLIENT, max_incomplete_event_size=self._max_header_bytes
            )
            self._fast = False
        else:
            self._conn.start_next_cycle()
        self._head.clear()
        self._in_head = True
        self.cycles += 1
        self.received = 0

    def _next_events(self, events: list[Event]) -> None:
        conn = self._conn
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Data):
                events.append(("data", bytes(event.data)))
            elif isinstance(event, h11.Response):
                self._in_head = False
                head = _head_of(event)
                events.append(("head", head))
                length = self._fast_body_length(head)
                if length is not None:
                    self._take_over_body(head, length, events)
                    return
            elif isinstance(event, h11.InformationalResponse):
                self._head.clear()
                events.append(("info", _head_of(event)))
            elif isinstance(event, h11.EndOfMessage):
                events.append(("end", None))
                return
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _fast_body_length(self, head: ResponseHead) -> int | None:
        """The Content-Length of a body we can frame ourselves, else None (h11 frames it)."""
        if self._method == b"HEAD" or head.status in (204, 304):
            return None
        length = None
        for name, value in head.headers:
            lname = name.lower()
            if lname == b"transfer-encoding":
                return None
            if lname == b"content-length":
                length = int(value)  # h11 has validated it
        return length

    def _take_over_body(self, head: ResponseHead, length: int, events: list[Event]) -> None:
        """Take what h11 buffered of the body, then frame the rest in _receive_body."""
        conn = self._conn
        keep_alive = _keep_alive(head) and not self._closing
        while length > 0:
            event = conn.next_event()
            if not isinstance(event, h11.Data):
                break
            events.append(("data", bytes(event.data)))
            length -= len(event.data)
        if length == 0:  # all of it was in the buffer: let h11 finish the cycle itself
            self._next_events(events)
            return
        self._fast = True
        self._fast_reusable = keep_alive
        self._body_left = length

    def _receive_body(self, data: bytes) -> list[Event]:
        left = self._body_left
        assert left is not None
        if not data:
            raise TransferError(Code.PARTIAL_FILE, f"end of response with {left} bytes missing")
        if len(data) < left:
            self._body_left = left - len(data)
            return [("data", data)]
        self._body_left = None
        if len(data) > left:  # bytes beyond the body: never parse them as the next response
            self._fast_reusable = False
            data = data[:left]
        return [("data", data), ("end", None)]

    def _check_head(self, data: bytes) -> None:
        """Refuse what is not HTTP/1.x at all, and bound the header block ourselves."""
        head = self._head
        room = self._max_header_bytes + 4 - len(head)
        head += data[: max(room, 0)]
        if not data and not head:
            raise TransferError(Code.GOT_NOTHING, "Empty reply from server")
        prefix = bytes(head[: len(_HTTP_PREFIX)])
        if not _HTTP_PREFIX.startswith(prefix) or (not data and len(prefix) < len(_HTTP_PREFIX)):
            raise self._bad_status_line("Received HTTP/0.9 when not allowed")
        end = head.find(b"\r\n\r\n")
        end = end if end >= 0 else head.find(b"\n\n")
        if (end < 0 and len(head) > self._max_header_bytes) or end > self._max_header_bytes:
            raise TransferError(
                Code.RECV_ERROR, f"Too large response headers: more than {self._max_header_bytes}"
            )

    def _bad_status_line(self, text: str) -> TransferError:
        if self.cycles:  # libcurl: an odd first line on a reused connection is "weird"
            return TransferError(Code.WEIRD_SERVER_REPLY, text)
        return TransferError(Code.UNSUPPORTED_PROTOCOL, text)

    def _classify(self, exc: h11.RemoteProtocolError, eof: bool) -> TransferError:
        if not self._in_head:
            if eof:
                return TransferError(
                    Code.PARTIAL_FILE, f"end of response with bytes missing: {exc}"
                )
            return TransferError(Code.RECV_ERROR, f"Invalid response body: {exc}")
        first_line, newline, _rest = bytes(self._head).partition(b"\n")
        if newline and not _STATUS_LINE.match(first_line):
            shown = first_line.rstrip(b"\r")[:80].decode("ascii", "backslashreplace")
            return self._bad_status_line(f"Unsupported HTTP/1 subversion in response: {shown}")
        if eof:
            return TransferError(
                Code.RECV_ERROR, f"Connection closed in the response headers: {exc}"
            )
        return TransferError(Code.WEIRD_SERVER_REPLY, f"Invalid response header: {exc}")

    def _check_chunk_size(self) -> None:
        # h11 accepts any chunk size (2**80 included) and keeps reading; libcurl refuses
        # sizes beyond curl_off_t. h11 keeps the announced size on its private reader.
        pending = getattr(getattr(self._conn, "_reader", None), "_bytes_in_chunk", 0)
        if isinstance(pending, int) and pending > MAX_CHUNK_SIZE:
            raise TransferError(
                Code.RECV_ERROR, "Illegal or too large chunk size in chunked-encoding"
            )


def _keep_alive(head: ResponseHead) -> bool:
    """h11's rule: HTTP/1.1 and no "close" among the Connection tokens."""
    if head.http_version < "1.1":
        return False
    return not any(
        name.lower() == b"connection" and b"close" in value.lower().replace(b" ", b"").split(b",")
        for name, value in head.headers
    )


def _head_of(event: h11.Response | h11.InformationalResponse) -> ResponseHead:
    return ResponseHead(
        status=event.status_code,
        http_version=event.http_version.decode("ascii", "replace"),
        reason=event.reason.decode("latin-1"),
        headers=[(name, value) for name, value in event.headers.raw_items()],
    )
