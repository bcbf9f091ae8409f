"""One HTTP/1.1 connection's protocol state: bytes in, events out.

The only module that imports h11. A response head is collected here until
its blank line, bounded on the way by libcurl's limits, then parsed: an
ordinary head (HTTP/1.1, status 200-599, every line in h11's own grammar,
RFC 9112 via h11._abnf) by one regular expression of ours, anything else by
h11, which stays the parser of record for what it accepts and decides its
errors. Before h11 sees an odd head, libcurl's verdicts that h11's grammar
cannot give are applied to it (_normalise): the HTTP version, a folded
first header line, Content-Length lists, repeats and overflow, and the
Transfer-Encoding list. h11 costs ~50 µs per cycle, more than everything
else a small request needs (bench/README.md), which is why ordinary
exchanges never build an h11 connection: the request is written from its
parts after the same checks h11 makes, the head parsed by the fast path.

Bodies are framed here for both paths, as h11 frames them (HEAD, 1xx, 204,
304 and a 2xx to CONNECT have none; chunked beats Content-Length; else read
until close): a Content-Length is counted down, a chunked body is decoded by
libcurl's state machine (bare LF line ends accepted, trailers checked), so
that a server libcurl copes with never leaves a transfer waiting. Property
tests hold both paths to h11's answers where h11 accepts the bytes, and to
each other everywhere. Every failure is mapped to libcurl's code at this one
boundary. It does no I/O and keeps no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

import h11
from h11 import _abnf

from hiperfifo.engine.codes import Code, TransferError, caused

# libcurl's limits on response heads (lib/http.h, lib/headers.h, lib/http_chunks.h)
MAX_HEADER_BYTES = 300 * 1024  # MAX_HTTP_RESP_HEADER_SIZE: every head of a response -> 56
MAX_HEADER_LINE = 100 * 1024  # CURL_MAX_HTTP_HEADER: one head line -> TOO_LARGE (100)
MAX_HEADER_LINES = 5000  # MAX_HTTP_RESP_HEADER_COUNT: header lines of a response -> 100
MAX_TRAILER_LINE = 4093  # DYN_H1_TRAILER (4096) less CRLF and NUL: one trailer line -> 100
MAX_CHUNK_DIGITS = 16  # CHUNK_MAXNUM_LEN: hex digits of a chunk size
MAX_OFF_T = 2**63 - 1  # curl_off_t: larger sizes and lengths overflow

_STATUS_LINE = re.compile(rb"HTTP/\d\.\d \d{3}(?: |\r?$)")
_VERSION = re.compile(rb"HTTP/(\d\.\d) ")
_HTTP_PREFIX = b"HTTP/"
_BLANK_LINE = re.compile(rb"\n\r?\n")  # the end of a head, as h11 finds it
_LONG_LINE = re.compile(rb"[^\n]{%d}" % MAX_HEADER_LINE)
_FAST_LENGTH_DIGITS = 18  # below 2**63 whatever the digits; longer lengths go to _normalise

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

# Body framing: a length >= 0, or one of these.
CHUNKED = -1
UNTIL_CLOSE = -2


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


class Head(NamedTuple):
    """Event: the final response head."""

    head: ResponseHead


class Info(NamedTuple):
    """Event: an informational (1xx) response head; the final one is still to come."""

    head: ResponseHead


class Data(NamedTuple):
    """Event: body bytes, as they came (still encoded)."""

    data: bytes


class Trailers(NamedTuple):
    """Event: the trailer lines of a chunked body, each with its CRLF, just before End."""

    lines: list[bytes]


class End(NamedTuple):
    """Event: the response ended; the connection may carry the next request if reusable()."""


END = End()  # the only End there is: no allocation per response
Event = Head | Info | Data | Trailers | End  # what Http1.receive() returns, in order
# A parsed head: its kind ("head" or "info"), the head, its body framing, whether it closes.
_Parsed = tuple[str, ResponseHead, int, bool]


class Http1:
    """The client side of one HTTP/1.1 connection, one request/response cycle at a time."""

    __slots__ = (
        "_body_left",
        "_chunks",
        "_closing",
        "_conn",
        "_done",
        "_end",
        "_fast_path",
        "_head",
        "_in_head",
        "_line_start",
        "_lines",
        "_method",
        "_prior_bytes",
        "_prior_lines",
        "_reusable",
        "_scanned",
        "_until_close",
        "cycles",
        "received",
        "will_close",
    )

    def __init__(self, *, fast_path: bool = True) -> None:
        self._fast_path = fast_path  # False: every head goes to h11 (the tests compare both)
        # h11 for this cycle, or None while no head needed it (made when first needed).
        self._conn: h11.Connection | None = None
        self._head = bytearray()  # bytes of the response head being collected
        # Where the head ends (after its blank line), -1 until seen, and how far _head was
        # searched: each byte is searched once, however slowly it trickles.
        self._end = -1
        self._scanned = 0
        # Earlier heads of this response (1xx) count towards libcurl's limits.
        self._prior_bytes = 0
        self._prior_lines = 0
        self._line_start = 0  # first byte of the first line not yet counted (large heads)
        self._lines = 0  # complete lines of this head counted so far (large heads)
        self._in_head = True
        self._method = b""
        self._closing = False  # we asked for Connection: close
        # The body's framing once the final head is out: bytes still due (Content-Length),
        # a chunk decoder, or read until close.
        self._body_left: int | None = None
        self._chunks: _Chunks | None = None
        self._until_close = False
        self._done = False  # the response ended
        self._reusable = False  # ... and the connection may carry another request
        self.cycles = 0  # completed request/response cycles before this one
        self.received = 0  # bytes received in the current cycle
        self.will_close = False  # the final head says the connection ends with this response

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
        try:
            data = None
            if self._method != b"CONNECT":  # h11 knows what a 2xx to CONNECT means
                data = _fast_request(method, target, headers, body)
            if data is None:  # anything unusual: h11 writes it (and refuses what it must)
                data = self._h11_request(method, target, headers, body)
        except (h11.LocalProtocolError, UnicodeError) as exc:
            raise caused(TransferError(Code.BAD_FUNCTION_ARGUMENT, f"Invalid request: {exc}"), exc)
        return data

    def _h11_request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> bytes:
        # h11 refuses several Host headers; libcurl sends them all: h11 writes the first,
        # the others follow it (each line judged as h11 would judge it).
        hosts = [i for i, (name, _value) in enumerate(headers) if name.lower() == "host"][1:]
        extra = b""
        for i in hosts:
            line = _header_line_bytes(*headers[i])
            if line is None:
                raise h11.LocalProtocolError(f"Illegal header: {headers[i]!r}")
            extra += line
        headers = [header for i, header in enumerate(headers) if i not in hosts]
        conn = self._conn = self._new_h11()
        data = conn.send(h11.Request(method=method, target=target, headers=headers)) or b""
        if extra:
            request_line, _, rest = data.partition(b"\r\n")
            host_line, _, rest = rest.partition(b"\r\n")
            data = b"\r\n".join([request_line, host_line, extra + rest])
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        return data + (conn.send(h11.EndOfMessage()) or b"")

    def _new_h11(self) -> h11.Connection:
        return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES + 4)

    def _h11_for_heads(self) -> h11.Connection:
        """An h11 connection waiting for a response: the one that wrote the request, or one
        that was told a request with our method (all h11 needs to judge a head by)."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._new_h11()
            method = self._method.decode("ascii")
            target = "example.com:80" if method == "CONNECT" else "/"
            conn.send(h11.Request(method=method, target=target, headers=[("Host", "x")]))
            conn.send(h11.EndOfMessage())
        return conn

    # --- the response --------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes (b"" at end of stream) and return the events they complete."""
        self.received += len(data)
        if self._body_left is not None:
            return self._receive_body(data)
        if self._chunks is not None:
            return self._receive_chunked(data)
        if self._until_close:
            return self._receive_until_close(data)
        return self._receive_head(data)

    def abandon(self) -> None:
        """The request was cut short (a refused upload): the connection ends with this cycle."""
        self._closing = True
        self._reusable = False
        self.will_close = True

    def reusable(self) -> bool:
        """True when the cycle ended cleanly and nothing unexpected was left behind."""
        return self._done and self._reusable

    def next_cycle(self) -> None:
        """Make the connection ready for the next request (only when reusable())."""
        self._conn = None
        self._reset_head()
        self._prior_bytes = self._prior_lines = 0
        self._in_head = True
        self._done = False
        self._reusable = False
        self._body_left = None
        self._chunks = None
        self._until_close = False
        self.cycles += 1
        self.received = 0
        self.will_close = False

    def _receive_head(self, data: bytes) -> list[Event]:
        """Collect a head to its blank line, parse it, and start its body."""
        if self._done:  # bytes after the end: never parse them as the next response
            self._reusable = False
            return []
        head = self._head
        head += data
        self._scan_head(eof=not data)
        end = self._end
        if end < 0:
            return []
        parsed = _parse_head(head, end, self._method) if self._fast_path else None
        if parsed is None or parsed[2] < 0:
            return self._receive_heads(parsed)
        # An ordinary head and a Content-Length (or no) body: inline, it is most of them.
        response, length = parsed[1], parsed[2]
        keep_alive = not parsed[3] and not self._closing
        self.will_close = not keep_alive
        self._in_head = False
        events: list[Event] = [Head(response)]
        if length == 0:
            self._finish(keep_alive and len(head) == end, events)
            self._reset_head()
            return events
        body = bytes(head[end : end + length])
        if body:
            events.append(Data(body))
        if len(body) == length:
            self._finish(keep_alive and len(head) == end + length, events)
        else:
            self._body_left = length - len(body)
            self._reusable = keep_alive
        self._reset_head()
        return events

    def _receive_heads(self, parsed: _Parsed | None) -> list[Event]:
        """Every other case: 1xx heads, h11's heads, chunked and until-close bodies."""
        events: list[Event] = []
        while True:
            end = self._end
            if parsed is None:
                # The first blank line may come before the CRLF CRLF _scan_head found.
                found = _BLANK_LINE.search(self._head, 0, end)
                assert found is not None
                end = self._end = found.end()
                parsed = self._parse_h11(bytes(self._head[:end]))
            kind, response, length, closes = parsed
            if len(response.headers) + self._prior_lines > MAX_HEADER_LINES:
                raise TransferError(
                    Code.TOO_LARGE, f"Too many response headers, {MAX_HEADER_LINES} is max"
                )
            events.append(Head(response) if kind == "head" else Info(response))
            if kind == "head":
                self._start_body(length, closes, events)
                return events
            # A 1xx: the next head starts with what followed it, judged at once.
            self._prior_bytes += end
            self._prior_lines += len(response.headers)
            self._reset_head(bytes(self._head[end:]))
            self._scan_head(eof=False)
            if self._end < 0:
                return events
            parsed = _parse_head(self._head, self._end, self._method) if self._fast_path else None

    def _start_body(self, length: int, closes: bool, events: list[Event]) -> None:
        head = self._head
        start = self._end
        keep_alive = not closes and not self._closing
        self.will_close = not keep_alive
        self._in_head = False
        if length == 0:
            self._finish(keep_alive and len(head) == start, events)
        elif length > 0:
            body = bytes(head[start : start + length])
            if body:
                events.append(Data(body))
            if len(body) == length:
                self._finish(keep_alive and len(head) == start + length, events)
            else:
                self._body_left = length - len(body)
                self._reusable = keep_alive
        else:
            rest = bytes(head[start:])
            if length == CHUNKED:
                self._chunks = _Chunks()
                self._reusable = keep_alive
                if rest:
                    events.extend(self._receive_chunked(rest))
            else:
                self._until_close = True
                if rest:
                    events.append(Data(rest))
        self._reset_head()

    def _finish(self, reusable: bool, events: list[Event]) -> None:
        self._done = True
        self._reusable = reusable
        events.append(END)

    def _receive_body(self, data: bytes) -> list[Event]:
        left = self._body_left
        assert left is not None
        if not data:
            raise TransferError(Code.PARTIAL_FILE, f"end of response with {left} bytes missing")
        if len(data) < left:
            self._body_left = left - len(data)
            return [Data(data)]
        self._body_left = None
        self._done = True
        if len(data) > left:  # bytes beyond the body: never parse them as the next response
            self._reusable = False
            data = data[:left]
        return [Data(data), END]

    def _receive_chunked(self, data: bytes) -> list[Event]:
        chunks = self._chunks
        assert chunks is not None
        if not data:
            raise TransferError(
                Code.PARTIAL_FILE, "transfer closed with outstanding read data remaining"
            )
        pieces, left = chunks.feed(data)
        events: list[Event] = [Data(piece) for piece in pieces]
        if left is not None:  # the last chunk and its trailers are in
            self._chunks = None
            if chunks.trailers:
                events.append(Trailers(chunks.trailers))
            self._finish(self._reusable and not left, events)
        return events

    def _receive_until_close(self, data: bytes) -> list[Event]:
        if data:
            return [Data(data)]
        self._until_close = False
        events: list[Event] = []
        self._finish(False, events)
        return events

    # --- the head: limits, then the fast path or h11 ---------------------------------

    def _scan_head(self, eof: bool) -> None:
        """Refuse what is not HTTP/1.x at all, find the head's end, hold libcurl's limits."""
        head = self._head
        size = len(head)
        if not size:
            if eof:
                if self._prior_bytes:  # a 1xx came, then the close
                    raise TransferError(
                        Code.PARTIAL_FILE, "Connection closed in the response headers"
                    )
                raise TransferError(Code.GOT_NOTHING, "Empty reply from server")
            return
        prefix = bytes(head[: len(_HTTP_PREFIX)])
        if not _HTTP_PREFIX.startswith(prefix) or (eof and len(prefix) < len(_HTTP_PREFIX)):
            raise self._bad_status_line("Received HTTP/0.9 when not allowed")
        if self._end < 0:
            # CRLF CRLF ends every ordinary head (one find). Only without it is the head
            # searched for the blank line as h11 finds it (\n\r?\n); one that comes before a
            # CRLF CRLF in the same read is found by the fallback (_receive_heads).
            crlf = head.find(b"\r\n\r\n", max(self._scanned - 3, 0))
            if crlf >= 0:
                self._end = crlf + 4
            else:
                found = _BLANK_LINE.search(head, max(self._scanned - 2, 0))
                if found is not None:
                    self._end = found.end()
            self._scanned = size
        upto = self._end if self._end >= 0 else size
        total = self._prior_bytes + upto
        if total > MAX_HEADER_BYTES:
            raise TransferError(
                Code.RECV_ERROR, f"Too large response headers: {total} > {MAX_HEADER_BYTES}"
            )
        if upto >= MAX_HEADER_LINE or self._prior_lines + upto // 2 > MAX_HEADER_LINES:
            self._count_lines(upto)  # only a large head can break these two limits
        if eof and self._end < 0:
            raise TransferError(Code.PARTIAL_FILE, "Connection closed in the response headers")

    def _count_lines(self, upto: int) -> None:
        """libcurl's bounds on one line and on the number of header lines, judged as the
        bytes come (each byte is looked at once): both are TOO_LARGE (100)."""
        head = self._head
        start = self._line_start
        last = head.rfind(b"\n", start, upto)
        if last >= 0:
            if _LONG_LINE.search(head, start, last + 1):
                raise _too_large_line()
            self._lines += head.count(b"\n", start, last + 1)
            self._line_start = start = last + 1
        if upto - start >= MAX_HEADER_LINE:
            raise _too_large_line()
        # Complete lines less the status line, and less the blank line once it is in.
        header_lines = self._lines - 1 - (self._end >= 0)
        if self._prior_lines + header_lines > MAX_HEADER_LINES:
            raise TransferError(
                Code.TOO_LARGE, f"Too many response headers, {MAX_HEADER_LINES} is max"
            )

    def _reset_head(self, data: bytes = b"") -> None:
        self._head[:] = data
        self._end = -1
        self._scanned = 0
        self._line_start = 0
        self._lines = 0

    def _parse_h11(self, raw: bytes) -> _Parsed:
        """A head the fast path declined: libcurl's verdicts first, then h11's."""
        version = _VERSION.match(raw)
        if version is not None and version[1] not in (b"1.0", b"1.1"):
            raise self._bad_status_line(
                f"Unsupported HTTP version ({version[1].decode()}) in response"
            )
        status = version is not None and raw[9:12].isdigit() and int(raw[9:12])
        if status is not False and status < 100:  # h11: a weird header; libcurl: not HTTP
            raise self._bad_status_line("Unsupported response code in HTTP response")
        data, overflow = _normalise(raw, self._method, status or 0)
        conn = self._h11_for_heads()
        conn.receive_data(data)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise caused(self._classify(exc, raw), exc)
        if isinstance(event, h11.InformationalResponse):
            return "info", _head_of(event), 0, False
        assert isinstance(event, h11.Response), event  # a whole head was given
        connection = [
            token.strip() for value in _values(event.headers, b"connection") for token in value
        ]
        closes = b"close" in connection or event.http_version < b"1.1" or overflow
        te = _values(event.headers, b"transfer-encoding")
        length = _values(event.headers, b"content-length")
        framing = _framing(
            self._method,
            event.status_code,
            bool(te),
            int(length[0][0]) if length else None,
        )
        return "head", _head_of(event), framing, closes or framing == UNTIL_CLOSE

    # --- libcurl's codes ---------------------------------------------------------------

    def _bad_status_line(self, text: str) -> TransferError:
        # libcurl: an odd first line on a reused connection, or after a 1xx, is "weird"
        if self.cycles or self._prior_bytes:
            return TransferError(Code.WEIRD_SERVER_REPLY, text)
        return TransferError(Code.UNSUPPORTED_PROTOCOL, text)

    def _classify(self, exc: h11.RemoteProtocolError, raw: bytes) -> TransferError:
        first_line = raw.partition(b"\n")[0]
        if not _STATUS_LINE.match(first_line):
            shown = first_line.rstrip(b"\r")[:80].decode("ascii", "backslashreplace")
            return self._bad_status_line(f"Unsupported HTTP/1 subversion in response: {shown}")
        return TransferError(Code.WEIRD_SERVER_REPLY, f"Invalid response header: {exc}")


def _too_large_line() -> TransferError:
    return TransferError(
        Code.TOO_LARGE, f"A response header line is longer than {MAX_HEADER_LINE} bytes"
    )


def _values(headers: h11._headers.Headers, name: bytes) -> list[list[bytes]]:
    """The comma-separated items of every `name` header (h11 lower-cases names)."""
    return [value.lower().split(b",") for key, value in headers if key == name]


def _framing(method: bytes, status: int, chunked: bool, length: int | None) -> int:
    """h11's body framing (RFC 9112 6.3): a length, CHUNKED or UNTIL_CLOSE."""
    if method == b"HEAD" or status in _NO_BODY_STATUS or (method == b"CONNECT" and status < 300):
        return 0
    if chunked:
        return CHUNKED
    if length is None:
        return UNTIL_CLOSE
    return length


def _fast_request(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
) -> bytes | None:
    """The request h11 would write (Host first), or None when h11 must judge it.

    None for anything h11 would refuse or frame itself: a bad token or value, no
    Host, Transfer-Encoding, or a Content-Length other than the body's. Several
    Host headers (h11 refuses them) are all written, first and in the order given:
    libcurl sends what the user gave.
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
    if not host or lengths > 1 or (body and not lengths):
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


def _parse_head(head: bytearray, end: int, method: bytes) -> _Parsed | None:
    """An ordinary final response head, else None (h11 decides).

    Ordinary: HTTP/1.1, status 200-599, CRLF line ends, every line in h11's
    grammar, at most one Connection, Content-Length and Transfer-Encoding
    header, a length of plain digits (short enough not to overflow), a
    Transfer-Encoding of exactly `chunked`. "Closes" is h11's rule: a "close"
    token in the Connection header. The header block is checked and split by
    one regular expression, not line by line in Python.
    """
    if not head.endswith(b"\r\n\r\n", 0, end):
        return None
    first_end = head.find(b"\r\n", 0, end)
    status_line = _FAST_STATUS_LINE.fullmatch(head, 0, first_end)
    if status_line is None:
        return None
    # One pass over the header lines, each with its CRLF: [gap, name, value, gap, ..., gap].
    # In h11's grammar every gap is empty (a line that is not a header leaves a gap).
    parts = _HEADER_LINE.split(head[first_end + 2 : end - 2])
    if any(parts[::3]):
        return None
    headers = list(zip(parts[1::3], parts[2::3], strict=True))
    if len(headers) > MAX_HEADER_LINES:
        return None  # too many: the fallback says so
    lookup = {name.lower(): value for name, value in reversed(headers)}  # first one wins
    if len(lookup) != len(headers):  # a name repeats: h11 judges repeated framing headers
        names = [name.lower() for name, _value in headers]
        for repeated in (b"content-length", b"connection", b"transfer-encoding"):
            if names.count(repeated) > 1:
                return None
    coding = lookup.get(b"transfer-encoding")
    length = lookup.get(b"content-length")
    if (coding is not None and coding != b"chunked") or (
        length is not None and (len(length) > _FAST_LENGTH_DIGITS or not length.isdigit())
    ):
        # a coding list, or a case h11 would change, is judged in _normalise; so is a
        # length h11 refuses, reads as a list, or one that may overflow
        return None
    connection = lookup.get(b"connection")
    closes = connection is not None and b"close" in [
        token.strip() for token in connection.lower().split(b",")
    ]
    status = int(status_line[1])
    reason = (status_line[2] or b"").decode("latin-1")
    response = ResponseHead(status, "1.1", reason, headers, lookup)
    # _framing(), inlined: this runs for every ordinary response
    if method == b"HEAD" or status in _NO_BODY_STATUS or (method == b"CONNECT" and status < 300):
        return "head", response, 0, closes
    if coding is not None:
        return "head", response, CHUNKED, closes
    if length is None:
        return "head", response, UNTIL_CLOSE, True
    return "head", response, int(length), closes


def _head_of(event: h11.Response | h11.InformationalResponse) -> ResponseHead:
    return ResponseHead(
        status=event.status_code,
        http_version=event.http_version.decode("ascii", "replace"),
        reason=event.reason.decode("latin-1"),
        headers=[(name, value) for name, value in event.headers.raw_items()],
    )


def _normalise(raw: bytes, method: bytes, status: int) -> tuple[bytes, bool]:
    """The head as h11 should see it, and whether a Content-Length overflowed.

    Applies libcurl's verdicts where h11's grammar differs, and changes nothing
    h11 accepts and reads as libcurl does: a folded first header line loses its
    leading blanks (libcurl keeps it as a header); Content-Length values that
    are equal as numbers ("5, 05", two headers) become one, values beyond
    curl_off_t are dropped (the body is read until close, as libcurl does),
    other odd values are WEIRD_SERVER_REPLY (8); the Transfer-Encoding list is
    judged as libcurl judges it (chunked may repeat, identity is ignored before
    it, anything else is BAD_CONTENT_ENCODING, 61) and becomes one `chunked`,
    or none. A response without a body (HEAD, 1xx, 204, 304, a 2xx to CONNECT)
    has its framing headers ignored, as libcurl ignores them: dropped if h11
    would refuse them.
    """
    lines = [line[:-1] if line.endswith(b"\r") else line for line in raw.split(b"\n")[:-2]]
    status_line, fields = lines[0], lines[1:]
    changed = bool(fields) and fields[0][:1] in (b" ", b"\t")
    if changed:
        fields[0] = fields[0].lstrip(b" \t")
        if not fields[0]:
            raise TransferError(Code.WEIRD_SERVER_REPLY, "Header without colon")
    logical: list[bytes] = []  # obs-fold joined as h11 joins it
    for line in fields:
        if line[:1] in (b" ", b"\t") and logical:
            logical[-1] += b" " + line.lstrip(b" \t")
        else:
            logical.append(line)
    has_body = (
        status >= 200
        and status not in _NO_BODY_STATUS
        and method != b"HEAD"
        and not (method == b"CONNECT" and status < 300)
    )
    framing = _Framing(has_body)
    for index, line in enumerate(logical):
        framing.judge(index, line)
    replace = framing.replacements(logical)
    if not replace and not changed:
        return raw, framing.overflow
    out = [status_line]
    for index, line in enumerate(logical):
        kept = replace.get(index, line)
        if kept is not None:
            out.append(kept)
    return b"\r\n".join(out) + b"\r\n\r\n", framing.overflow


class _Framing:
    """libcurl's reading of a head's Content-Length and Transfer-Encoding lines, in order."""

    def __init__(self, has_body: bool) -> None:
        self.has_body = has_body
        self.length: int | None = None
        self.length_name = b""
        self.length_texts: set[bytes] = set()
        self.length_lines: list[int] = []
        self.coding_lines: list[int] = []
        self.chunked = False

    @property
    def overflow(self) -> bool:
        return self.length is not None and self.length > MAX_OFF_T

    def judge(self, index: int, line: bytes) -> None:
        name, _colon, value = line.partition(b":")
        lname = name.lower()
        if lname == b"content-length":
            self.length_lines.append(index)
            items = [item.strip(b" \t") for item in value.split(b",")]
            self.length_texts.update(items)
            if self.has_body:
                self._length(name, items)
        elif lname == b"transfer-encoding":
            self.coding_lines.append(index)
            if self.has_body:
                self.chunked = _transfer_coding(value, self.chunked)

    def _length(self, name: bytes, items: list[bytes]) -> None:
        if not all(item.isdigit() for item in items):
            raise TransferError(Code.WEIRD_SERVER_REPLY, "Invalid Content-Length: value")
        numbers = {int(item) for item in items}
        if self.length is not None:
            numbers.add(self.length)
        if len(numbers) > 1:
            raise TransferError(Code.WEIRD_SERVER_REPLY, "Conflicting Content-Length values")
        if self.length is None:
            self.length_name = name
        self.length = numbers.pop()

    def replacements(self, logical: list[bytes]) -> dict[int, bytes | None]:
        """Line index -> its new text, or None to drop it: only where h11 would refuse the
        lines or read them otherwise than libcurl."""
        replace: dict[int, bytes | None] = {}
        texts = self.length_texts
        h11_lengths = not self.length_lines or (
            len(texts) == 1
            and next(iter(texts)).isdigit()
            and len(next(iter(texts))) <= h11._headers.CONTENT_LENGTH_MAX_DIGITS
        )
        if not h11_lengths or self.overflow:
            replace.update(dict.fromkeys(self.length_lines))
            if self.has_body and self.length is not None and not self.overflow:
                replace[self.length_lines[0]] = b"%s: %d" % (self.length_name, self.length)
        codings = self.coding_lines
        h11_codings = not codings or (
            len(codings) == 1
            and logical[codings[0]].partition(b":")[2].strip(b" \t").lower() == b"chunked"
            and (self.chunked or not self.has_body)
        )
        if not h11_codings:
            replace.update(dict.fromkeys(codings))
            if self.chunked:
                replace[codings[0]] = logical[codings[0]].partition(b":")[0] + b": chunked"
        return replace


def _transfer_coding(value: bytes, chunked: bool) -> bool:
    """One Transfer-Encoding header as libcurl reads it (content_encoding.c): whether the
    body is chunked so far. Only chunked is decoded; identity is ignored unless it comes
    after chunked in the same header; a repeated chunked ends the header's list."""
    listed = False  # chunked came earlier in this header
    for item in value.split(b","):
        name = item.strip()
        if not name:
            continue
        lname = name.lower()
        if lname == b"chunked":
            if chunked:
                return True
            chunked = listed = True
            continue
        shown = name.decode("latin-1")
        if listed:
            raise TransferError(
                Code.BAD_CONTENT_ENCODING,
                f"A Transfer-Encoding ({shown}) was listed after chunked",
            )
        if lname != b"identity":
            raise TransferError(
                Code.BAD_CONTENT_ENCODING, f"Unsolicited Transfer-Encoding ({shown}) found"
            )
    return chunked


# The states of a chunked body (lib/http_chunks.c)
_HEX, _SIZE_LINE, _DATA, _DATA_END, _TRAILER, _TRAILER_CR, _TRAILER_END, _LAST_LF, _DONE = range(9)
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_CR, _LF = 0x0D, 0x0A
_LINE_BREAK = re.compile(rb"[\r\n]")


class _Chunks:
    """A chunked body, decoded as libcurl decodes it, whatever the read sizes.

    Laxer than RFC 9112 where libcurl is: a size line ends at its LF (a bare LF,
    extensions and anything else before it are skipped), any CRs before the LF
    that ends a chunk, trailer lines ended by LF alone. Errors are libcurl's: a
    bad size or a stray byte after a chunk is RECV_ERROR (56), a trailer line
    with a NUL or without a colon WEIRD_SERVER_REPLY (8), a trailer line over
    libcurl's 4 KiB TOO_LARGE (100).
    """

    __slots__ = ("_digits", "_left", "_state", "_trailer", "trailers")

    def __init__(self) -> None:
        self._state = _HEX
        self._digits = bytearray()  # the hex digits of the size being read
        self._left = 0  # bytes of the current chunk still due
        self._trailer = bytearray()  # the trailer line being read
        self.trailers: list[bytes] = []  # the trailer lines read, each with CRLF (libcurl's)

    def feed(self, data: bytes) -> tuple[list[bytes], int | None]:
        """The data pieces in `data`, and None, or (at the end) how many bytes follow it."""
        out: list[bytes] = []
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == _DATA:
                take = min(self._left, n - i)
                out.append(data[i : i + take])
                i += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
            elif state == _DONE:
                return out, n - i
            else:
                i = _CHUNK_STEPS[state](self, data, i)
        return out, (0 if self._state == _DONE else None)

    # Each step reads from data[i] on, sets the next state, and returns where it stopped.

    def _hex(self, data: bytes, i: int) -> int:
        byte = data[i]
        if byte in _HEX_DIGITS:
            if len(self._digits) >= MAX_CHUNK_DIGITS:
                raise _bad_chunk(f"chunk hex-length longer than {MAX_CHUNK_DIGITS}")
            self._digits.append(byte)
            return i + 1
        if not self._digits:
            raise _bad_chunk(f"chunk hex-length char not a hex digit: 0x{byte:x}")
        self._left = int(self._digits, 16)
        if self._left > MAX_OFF_T:
            raise _bad_chunk(f"invalid chunk size: '{self._digits.decode()}'")
        self._digits.clear()
        self._state = _SIZE_LINE
        return i

    def _size_line(self, data: bytes, i: int) -> int:
        """Everything up to the LF is skipped: extensions, a CR, anything (libcurl)."""
        lf = data.find(b"\n", i)
        if lf < 0:
            return len(data)
        self._state = _DATA if self._left else _TRAILER
        return lf + 1

    def _data_end(self, data: bytes, i: int) -> int:
        byte = data[i]
        if byte == _LF:
            self._state = _HEX
        elif byte != _CR:
            raise _bad_chunk("Malformed encoding found in chunked-encoding")
        return i + 1

    def _trailer_line(self, data: bytes, i: int) -> int:
        byte = data[i]
        if byte not in (_CR, _LF):
            brk = _LINE_BREAK.search(data, i)
            stop = brk.start() if brk is not None else len(data)
            self._trailer += data[i:stop]
            if len(self._trailer) > MAX_TRAILER_LINE:
                raise TransferError(
                    Code.TOO_LARGE, "Out of memory in chunked-encoding (trailer too long)"
                )
            return stop
        if not self._trailer:  # no (more) trailers: this is the final line break
            self._state = _TRAILER_END
            return i
        line = bytes(self._trailer)
        _check_trailer(line)
        self.trailers.append(line + b"\r\n")
        self._trailer.clear()
        self._state = _TRAILER_CR
        return i if byte == _LF else i + 1  # already on the LF, or past the CR

    def _trailer_cr(self, data: bytes, i: int) -> int:
        if data[i] != _LF:
            raise _bad_chunk("Malformed encoding found in chunked-encoding")
        self._state = _TRAILER_END
        return i + 1

    def _trailer_end(self, data: bytes, i: int) -> int:
        byte = data[i]
        if byte not in (_CR, _LF):  # another trailer line
            self._state = _TRAILER
            return i
        self._state = _LAST_LF
        return i + 1 if byte == _CR else i

    def _last_lf(self, data: bytes, i: int) -> int:
        if data[i] != _LF:
            raise _bad_chunk("Malformed encoding found in chunked-encoding")
        self._state = _DONE
        return i + 1


_CHUNK_STEPS = (
    _Chunks._hex,
    _Chunks._size_line,
    _Chunks._hex,  # _DATA: handled inline in feed()
    _Chunks._data_end,
    _Chunks._trailer_line,
    _Chunks._trailer_cr,
    _Chunks._trailer_end,
    _Chunks._last_lf,
)


def _bad_chunk(text: str) -> TransferError:
    return TransferError(Code.RECV_ERROR, text)


def _check_trailer(line: bytes) -> None:
    """libcurl stores trailers as headers: a NUL or a missing colon is a weird reply."""
    if b"\x00" in line:
        raise TransferError(Code.WEIRD_SERVER_REPLY, "Nul byte in trailer header")
    if b":" not in line:
        raise TransferError(Code.WEIRD_SERVER_REPLY, "Trailer header without colon")
