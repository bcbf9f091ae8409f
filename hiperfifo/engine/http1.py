"""One HTTP/1.1 connection's protocol state: bytes in, events out.

The only module that imports h11. Ordinary exchanges take a fast path of
our own: a request written from its parts after the same checks h11 makes,
and a response head found by its blank line, parsed with h11's own grammar
(RFC 9112 via h11._abnf) and framed by Content-Length. h11 costs ~50 µs per
cycle, more than everything else a small request needs (bench/README.md),
so it does the rest: whatever the fast path does not recognise line for
line (1xx, HTTP/1.0, chunked, read-until-close, bare LF, anything odd) is
replayed into a fresh h11 connection from its first byte, and h11's answer
is the answer, errors included. The fast path accepts only what h11 accepts
and produces the same events.

Every failure is mapped to libcurl's code at this one boundary, and h11's
gaps as a client are closed (docs/engine.md, where we differ from libcurl): a header block that
arrives in one read is still bounded, bytes beyond the body make the
connection unusable, and an absurd chunk size is refused. It does no I/O
and keeps no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

import h11
from h11 import _abnf

from hiperfifo.engine.codes import Code, TransferError

MAX_HEADER_BYTES = 100 * 1024  # libcurl's CURL_MAX_HTTP_HEADER
MAX_CHUNK_SIZE = 2**63 - 1  # libcurl refuses chunk sizes beyond curl_off_t
_STATUS_LINE = re.compile(rb"HTTP/\d\.\d \d{3}(?: |\r?$)")
_HTTP_PREFIX = b"HTTP/"
_CONTENT_LENGTH_MAX_DIGITS = 20  # h11's bound

# h11's grammar, compiled once for the fast path (the same patterns h11 uses).
_TOKEN = re.compile(_abnf.token.encode("ascii"))
_TARGET = re.compile(_abnf.request_target.encode("ascii"))
_FIELD_VALUE = re.compile(_abnf.field_value.encode("ascii"))


def _header_line() -> bytes:
    """One header line of h11's grammar with its CRLF, capturing name and value."""
    name, ows, content = _abnf.field_name, _abnf.OWS, _abnf.field_content
    return f"({name}):{ows}((?:{content})?){ows}\r\n".encode("ascii")


# (name, value) of each line, the value without the whitespace around it, as h11 keeps it.
_HEADER_LINE = re.compile(_header_line())
_FAST_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5][0-9]{2})(?: ((?:[ \t]|[^\x00\s])*))?")
_NO_BODY_STATUS = (204, 304)
_LINES: dict[tuple[str, str], bytes] = {}  # checked request header lines, by (name, value)
_LINES_KEPT = 1024
_PRIVATE_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie"))


class ResponseHead(NamedTuple):
    """A response's status line and headers as they came, names in their own case."""

    status: int
    http_version: str
    reason: str
    headers: list[tuple[bytes, bytes]]
    # lower-case name -> first value, when the parser built it (not part of the head's value)
    lookup: dict[bytes, bytes] | None = None

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
        if self.lookup is not None:
            return self.lookup.get(lname)
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


# Event kinds returned by Http1.receive(): ("head", ResponseHead), ("info", ResponseHead),
# ("data", bytes), ("end", None)
Event = tuple[str, object]
_Request = tuple[str, str, list[tuple[str, str]], "bytes | None"]


class Http1:
    """The client side of one HTTP/1.1 connection, one request/response cycle at a time."""

    __slots__ = (
        "_body_left",
        "_closing",
        "_conn",
        "_crlf_end",
        "_done",
        "_head",
        "_in_head",
        "_lf_end",
        "_max_header_bytes",
        "_method",
        "_request",
        "_reusable",
        "_scanned",
        "cycles",
        "received",
    )

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self._max_header_bytes = max_header_bytes
        # h11 for this cycle, or None while the fast path has it (made when first needed).
        self._conn: h11.Connection | None = None
        self._request: _Request | None = None  # what was sent, to replay into h11
        self._head = bytearray()  # bytes of the response head(s) seen so far
        # Where the head's blank line starts (CRLF CRLF, or a bare LF LF), -1 until seen, and
        # how far _head was searched: each byte is searched once, however slowly it trickles.
        self._crlf_end = -1
        self._lf_end = -1
        self._scanned = 0
        self._in_head = True
        self._method = b""
        self._closing = False  # we asked for Connection: close
        # Body bytes framed by us (a Content-Length body): how many are still due, else None.
        self._body_left: int | None = None
        self._done = False  # the fast path saw the end of the response
        self._reusable = False  # ... and the connection may carry another request
        self.cycles = 0  # completed request/response cycles before this one
        self.received = 0  # bytes received in the current cycle

    # --- the request ---------------------------------------------------------------

    def request(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> bytes:
        """The bytes of one request; raises TransferError for a request h11 refuses to write."""
        headers = list(headers)
        self._method = method.upper().encode()
        self._closing = any(
            name.lower() == "connection" and "close" in value.lower() for name, value in headers
        )
        self._request = (method, target, headers, body)
        try:
            data = None
            if self._method != b"CONNECT":  # h11 knows what a 2xx to CONNECT means
                data = _fast_request(method, target, headers, body)
            if data is None:  # anything unusual: h11 writes it (and refuses what it must)
                self._conn = self._new_h11()
                data = self._send_h11(self._conn)
        except (h11.LocalProtocolError, UnicodeError) as exc:
            raise TransferError(Code.BAD_FUNCTION_ARGUMENT, f"Invalid request: {exc}") from exc
        return data

    def _send_h11(self, conn: h11.Connection) -> bytes:
        assert self._request is not None
        method, target, headers, body = self._request
        data = conn.send(h11.Request(method=method, target=target, headers=headers)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        return data

    def _new_h11(self) -> h11.Connection:
        return h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_header_bytes)

    # --- the response --------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes (b"" at end of stream) and return the events they complete."""
        self.received += len(data)
        if self._body_left is not None:
            return self._receive_body(data)
        if self._conn is None:
            return self._receive_fast(data)
        return self._receive_h11(data)

    def reusable(self) -> bool:
        """True when the cycle ended cleanly and nothing unexpected was left behind."""
        conn = self._conn
        if conn is None:
            return self._done and self._reusable
        return (
            conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not conn.trailing_data[0]
        )

    def next_cycle(self) -> None:
        """Make the connection ready for the next request (only when reusable())."""
        self._conn = None
        self._request = None
        self._reset_head()
        self._in_head = True
        self._done = False
        self._reusable = False
        self._body_left = None
        self.cycles += 1
        self.received = 0

    def _receive_fast(self, data: bytes) -> list[Event]:
        """Wait for the whole head; parse it ourselves if it is ordinary, else hand to h11."""
        if self._done:  # bytes after the end: h11 would keep them as trailing data
            self._reusable = False
            return []
        self._check_head(data)
        head = self._head
        end = self._crlf_end
        if end < 0:
            if data and self._lf_end < 0:
                return []  # need more
            return self._to_h11(eof=not data)  # the stream ended, or a bare-LF head
        parsed = _parse_head(head, end, self._method)
        if parsed is None:
            return self._to_h11(eof=False)
        response, length, closes = parsed
        self._in_head = False
        keep_alive = not closes and not self._closing
        events: list[Event] = [("head", response)]
        body_start = end + 4
        if length == 0:
            self._finish(keep_alive and len(head) == body_start, events)
            return events
        body = bytes(head[body_start : body_start + length])
        if body:
            events.append(("data", body))
        if len(body) == length:
            self._finish(keep_alive and len(head) == body_start + length, events)
        else:
            self._body_left = length - len(body)
            self._reusable = keep_alive
        self._reset_head()
        return events

    def _finish(self, reusable: bool, events: list[Event]) -> None:
        self._done = True
        self._reusable = reusable
        events.append(("end", None))

    def _to_h11(self, eof: bool) -> list[Event]:
        """Replay this cycle into a fresh h11 connection: the request, then every byte so far."""
        conn = self._conn = self._new_h11()
        self._send_h11(conn)
        conn.receive_data(bytes(self._head))
        if eof:
            conn.receive_data(b"")
        return self._h11_events(conn, eof)

    def _receive_body(self, data: bytes) -> list[Event]:
        left = self._body_left
        assert left is not None
        if not data:
            raise TransferError(Code.PARTIAL_FILE, f"end of response with {left} bytes missing")
        if len(data) < left:
            self._body_left = left - len(data)
            return [("data", data)]
        self._body_left = None
        self._done = True
        if len(data) > left:  # bytes beyond the body: never parse them as the next response
            self._reusable = False
            data = data[:left]
        return [("data", data), ("end", None)]

    def _receive_h11(self, data: bytes) -> list[Event]:
        conn = self._conn
        assert conn is not None
        if self._in_head:
            self._check_head(data)
        conn.receive_data(data)
        return self._h11_events(conn, eof=not data)

    def _h11_events(self, conn: h11.Connection, eof: bool) -> list[Event]:
        events: list[Event] = []
        try:
            self._next_events(conn, events)
        except h11.RemoteProtocolError as exc:
            raise self._classify(exc, eof) from exc
        if not self._in_head:
            self._check_chunk_size(conn)
        return events

    def _next_events(self, conn: h11.Connection, events: list[Event]) -> None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Data):
                events.append(("data", bytes(event.data)))
            elif isinstance(event, h11.Response):
                self._in_head = False
                events.append(("head", _head_of(event)))
            elif isinstance(event, h11.InformationalResponse):
                # The next head starts with what h11 holds unparsed, not with the next read.
                self._reset_head(conn.trailing_data[0])
                events.append(("info", _head_of(event)))
            elif isinstance(event, h11.EndOfMessage):
                events.append(("end", None))
                return
            elif isinstance(event, h11.ConnectionClosed):
                return

    # --- h11's gaps and libcurl's codes ---------------------------------------------------

    def _check_head(self, data: bytes) -> None:
        """Refuse what is not HTTP/1.x at all, and bound the header block ourselves."""
        head = self._head
        room = self._max_header_bytes + 4 - len(head)
        # The fast path keeps every byte (h11 may need them replayed); h11 keeps its own.
        head += data if self._conn is None else data[: max(room, 0)]
        if not data and not head:
            raise TransferError(Code.GOT_NOTHING, "Empty reply from server")
        prefix = bytes(head[: len(_HTTP_PREFIX)])
        if not _HTTP_PREFIX.startswith(prefix) or (not data and len(prefix) < len(_HTTP_PREFIX)):
            raise self._bad_status_line("Received HTTP/0.9 when not allowed")
        self._find_end()
        end = self._crlf_end if self._crlf_end >= 0 else self._lf_end
        if (end < 0 and len(head) > self._max_header_bytes) or end > self._max_header_bytes:
            raise TransferError(
                Code.RECV_ERROR, f"Too large response headers: more than {self._max_header_bytes}"
            )

    def _find_end(self) -> None:
        """Search only what arrived since the last search (and the 3 bytes before it)."""
        head = self._head
        start = self._scanned
        if self._crlf_end < 0:
            self._crlf_end = head.find(b"\r\n\r\n", max(start - 3, 0))
            if self._crlf_end < 0 and self._lf_end < 0:
                self._lf_end = head.find(b"\n\n", max(start - 1, 0))
        self._scanned = len(head)

    def _reset_head(self, data: bytes = b"") -> None:
        self._head[:] = data
        self._crlf_end = self._lf_end = -1
        self._scanned = 0

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

    def _check_chunk_size(self, conn: h11.Connection) -> None:
        # h11 accepts any chunk size (2**80 included) and keeps reading; libcurl refuses
        # sizes beyond curl_off_t. h11 keeps the announced size on its private reader.
        pending = getattr(getattr(conn, "_reader", None), "_bytes_in_chunk", 0)
        if isinstance(pending, int) and pending > MAX_CHUNK_SIZE:
            raise TransferError(
                Code.RECV_ERROR, "Illegal or too large chunk size in chunked-encoding"
            )


def _fast_request(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
) -> bytes | None:
    """The request h11 would write (Host first), or None when h11 must judge it.

    None for anything h11 would refuse or frame itself: a bad token or value, not
    exactly one Host, Transfer-Encoding, or a Content-Length other than the body's.
    """
    method_b = method.encode("ascii")
    target_b = target.encode("ascii")
    if not _TOKEN.fullmatch(method_b) or not _TARGET.fullmatch(target_b):
        return None
    host: list[bytes] = []
    rest: list[bytes] = []
    length = str(len(body)) if body else "0"
    lengths = 0
    for name, value in headers:
        line = _header_line_bytes(name, value)
        if line is None:
            return None
        lname = name.lower()
        if lname == "host":
            host.append(line)
            continue
        if lname == "transfer-encoding" or (lname == "content-length" and value != length):
            return None
        lengths += lname == "content-length"
        rest.append(line)
    if len(host) != 1 or lengths > 1 or (body and not lengths):
        return None
    request_line = b"%s %s HTTP/1.1\r\n" % (method_b, target_b)
    return b"".join([request_line, *host, *rest, b"\r\n", body or b""])


def _header_line_bytes(name: str, value: str) -> bytes | None:
    """`name: value` CRLF as h11 writes it, or None where h11 refuses it; UnicodeError
    for what is not ASCII. Remembered (most requests repeat Host and Accept), except
    for credentials, which stay no longer than their request."""
    key = (name, value)
    line = _LINES.get(key)
    if line is not None:
        return line
    name_b = name.encode("ascii")
    value_b = value.encode("ascii")
    if not _TOKEN.fullmatch(name_b) or not _FIELD_VALUE.fullmatch(value_b):
        return None
    line = b"%s: %s\r\n" % (name_b, value_b)
    if name.lower() not in _PRIVATE_HEADERS:
        if len(_LINES) >= _LINES_KEPT:
            _LINES.clear()
        _LINES[key] = line
    return line


def _parse_head(head: bytearray, end: int, method: bytes) -> tuple[ResponseHead, int, bool] | None:
    """An ordinary final response head, its body length and whether it closes, else None.

    Ordinary: HTTP/1.1, status 200-599, every line in h11's grammar, and a body
    framed by one Content-Length (or none at all, for HEAD, 204 and 304), at
    most one Connection header. None leaves the decision to h11. "Closes" is
    h11's rule: a "close" token in the Connection header. The header block is
    checked and split by one regular expression, not line by line in Python.
    """
    first_end = head.find(b"\r\n", 0, end + 2)
    status_line = _FAST_STATUS_LINE.fullmatch(head, 0, first_end)
    if status_line is None:
        return None
    # One pass over the header lines, each with its CRLF: [gap, name, value, gap, ..., gap].
    # In h11's grammar every gap is empty (a line that is not a header leaves a gap).
    parts = _HEADER_LINE.split(head[first_end + 2 : end + 2])
    if any(parts[::3]):
        return None
    headers = list(zip(parts[1::3], parts[2::3], strict=True))
    lookup = {name.lower(): value for name, value in reversed(headers)}  # first one wins
    if len(lookup) != len(headers):  # a name repeats: h11 judges repeated framing headers
        names = [name.lower() for name, _value in headers]
        if names.count(b"content-length") > 1 or names.count(b"connection") > 1:
            return None
    if b"transfer-encoding" in lookup:
        return None  # h11 frames chunked bodies
    connection = lookup.get(b"connection")
    closes = connection is not None and b"close" in [
        token.strip() for token in connection.lower().split(b",")
    ]
    status = int(status_line[1])
    reason = (status_line[2] or b"").decode("latin-1")
    response = ResponseHead(status, "1.1", reason, headers, lookup)
    length = lookup.get(b"content-length")
    if length is not None and (len(length) > _CONTENT_LENGTH_MAX_DIGITS or not length.isdigit()):
        return None  # a length h11 refuses, or reads as a list
    if method == b"HEAD" or status in _NO_BODY_STATUS:
        return response, 0, closes
    if length is None:
        return None  # read until close: h11 frames it
    return response, int(length), closes


def _head_of(event: h11.Response | h11.InformationalResponse) -> ResponseHead:
    return ResponseHead(
        status=event.status_code,
        http_version=event.http_version.decode("ascii", "replace"),
        reason=event.reason.decode("latin-1"),
        headers=[(name, value) for name, value in event.headers.raw_items()],
    )
