"""One HTTP/1.1 connection's protocol state: bytes in, events out.

The only module that imports h11. A response head is collected until its
blank line, bounded on the way by libcurl's limits (http1_head.HeadBuffer),
then parsed here: an ordinary head (HTTP/1.1, status 200-599, every line in
h11's own grammar, RFC 9112 via h11._abnf) by a fast path of ours (each
distinct line checked once), anything else by h11, which stays the parser
of record for what it accepts and decides its errors. Before h11 sees an odd
head, libcurl's verdicts that h11's grammar cannot give are applied to it
(_normalise): the HTTP version, a folded first header line, Content-Length
lists, repeats and overflow, and the Transfer-Encoding list. h11 costs ~50 µs per cycle, more
than everything else a small request needs (bench/README.md), which is why
ordinary exchanges never build an h11 connection: the request is written
from its parts after the same checks h11 makes, the head parsed by the fast
path.

Bodies are framed here (Body) for both paths, as h11 frames them (HEAD, 1xx,
204, 304 and a 2xx to CONNECT have none; chunked beats Content-Length; else
read until close): a Content-Length is counted down, a chunked body is
decoded by libcurl's state machine (chunked.ChunkDecoder: bare LF line ends
accepted, trailers checked), so that a server libcurl copes with never
leaves a transfer waiting. Property tests hold both paths to h11's answers
where h11 accepts the bytes, and to each other everywhere. Every failure is
mapped to libcurl's code at this one boundary. It does no I/O and keeps no
clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, NamedTuple

import h11
from h11 import _abnf

from hiperfifo.engine.chunked import MAX_OFF_T, ChunkDecoder
from hiperfifo.engine.codes import Code, TransferError, caused
from hiperfifo.engine.http1_head import (
    BLANK_LINE,
    MAX_HEADER_BYTES,
    MAX_HEADER_LINES,
    HeadBuffer,
    too_many_headers,
)

_STATUS_LINE = re.compile(rb"HTTP/\d\.\d \d{3}(?: |\r?$)")
_VERSION = re.compile(rb"HTTP/(\d\.\d) ")
_FAST_LENGTH_DIGITS: Final = 18  # below 2**63 whatever the digits; longer lengths go to _normalise

# h11's grammar, compiled once for the fast path (the same patterns h11 uses).
_TOKEN: Final = re.compile(_abnf.token.encode("ascii"))
_TCHARS: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_FIELD_VALUE: Final = re.compile(_abnf.field_value.encode("ascii"))


# One header line of h11's grammar (no CRLF), capturing the name and the value without
# the whitespace around it, as h11 keeps it.
_FIELD_LINE: Final = re.compile(
    f"({_abnf.field_name}):{_abnf.OWS}((?:{_abnf.field_content})?){_abnf.OWS}".encode("ascii")
)
_FIELDS: Final[dict[bytes, tuple[tuple[bytes, bytes], bytes]]] = {}  # lines checked, see _fields
_FIELDS_KEPT: Final = 1024
_STATUS_LINES: Final[dict[bytes, tuple[int, str]]] = {}  # (status, reason) of status lines seen
_FIELD_KEPT_LENGTH: Final = 256  # longer lines (cookies, long URLs) are checked, not remembered
_FAST_STATUS_LINE: Final = re.compile(rb"HTTP/1\.1 ([2-5][0-9]{2})(?: ((?:[ \t]|[^\x00\s])*))?")
_NO_BODY_STATUS: Final = (204, 304)
_LINES: Final[dict[tuple[str, str], bytes]] = {}  # checked request header lines, by (name, value)
_LINES_KEPT: Final = 1024
_PRIVATE_HEADERS: Final = frozenset(("authorization", "proxy-authorization", "cookie"))

# Body framing: a length >= 0, or one of these.
CHUNKED: Final = -1
UNTIL_CLOSE: Final = -2


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
        return header_value(self, name.lower())


def header_value(head: ResponseHead, lname: bytes) -> bytes | None:
    """head.header(lname) of a lower-case name; compiled, a native call (a NamedTuple's
    method is not)."""
    lookup = head.lookup
    if lookup is not None:
        return lookup.get(lname)
    for key, value in head.headers:
        if key.lower() == lname:
            return value
    return None


def _new_head(
    fields: tuple[int, str, str, list[tuple[bytes, bytes]], dict[bytes, bytes]],
) -> ResponseHead:
    """ResponseHead(*fields) made by tuple's own __new__ (C), not the NamedTuple's (Python)."""
    return tuple.__new__(ResponseHead, fields)


# The events are plain classes, not NamedTuples: compiled with mypyc they are native
# (made without a Python-level __new__), one or two per response.


class Head:
    """Event: the final response head."""

    __slots__ = ("head",)

    def __init__(self, head: ResponseHead) -> None:
        self.head = head


class Info:
    """Event: an informational (1xx) response head; the final one is still to come."""

    __slots__ = ("head",)

    def __init__(self, head: ResponseHead) -> None:
        self.head = head


class Data:
    """Event: body bytes, as they came (still encoded)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Trailers:
    """Event: the trailer lines of a chunked body, each with its CRLF, just before End."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines


class End(NamedTuple):
    """Event: the response ended; the connection may carry the next request if reusable()."""


END: Final = End()  # the only End there is: no allocation per response
Event = Head | Info | Data | Trailers | End  # what Http1.receive() returns, in order
# A parsed head: its kind ("head" or "info"), the head, its body framing, whether it closes.
_Parsed = tuple[str, ResponseHead, int, bool]
# Whole heads the fast path parsed, by their bytes (see _parse_head); only a head that fits
# _HEAD_KEPT_LENGTH is remembered, and only for a method with ordinary framing.
_HEADS: Final[dict[bytes, _Parsed]] = {}
_HEADS_KEPT: Final = 256
_HEAD_KEPT_LENGTH: Final = 2048
# Bodiless requests' header blocks by (method, header lines) (see Http1.request): the method
# as given and in upper case, the header lines and their blank line, and whether they ask
# for Connection: close. Never a block with credentials.
_REQUEST_HEADS: Final[
    dict[tuple[str, tuple[tuple[str, str], ...]], tuple[bytes, bytes, bytes, bool]]
] = {}
_REQUEST_HEADS_KEPT: Final = 256


class Http1:
    """The client side of one HTTP/1.1 connection, one request/response cycle at a time."""

    __slots__ = (
        "_body",
        "_closing",
        "_conn",
        "_fast_path",
        "_heads",
        "_method",
        "cycles",
        "received",
        "will_close",
    )

    def __init__(self, *, fast_path: bool = True) -> None:
        self._fast_path = fast_path  # False: every head goes to h11 (the tests compare both)
        # h11 for this cycle, or None while no head needed it (made when first needed).
        self._conn: h11.Connection | None = None
        self._heads = HeadBuffer()  # the response head being collected, libcurl's limits
        self._method = b""
        self._closing = False  # we asked for Connection: close
        self._body = Body()  # the body's framing once the final head is out, and its end
        self.cycles = 0  # completed request/response cycles before this one
        self.received = 0  # bytes received in the current cycle
        self.will_close = False  # the final head says the connection ends with this response

    # --- the request ---------------------------------------------------------------

    def request(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> bytes:
        """The bytes of one request; raises TransferError for a request h11 refuses to write.

        A bodiless request whose method and header lines were written before reuses their
        bytes (_REQUEST_HEADS): only its target is checked and written."""
        try:
            if not body:
                lines = tuple(headers)
                known = _REQUEST_HEADS.get((method, lines))
                if known is not None:
                    method_b, self._method, fields, self._closing = known
                    target_b = _checked_target(target)
                    if target_b is not None:
                        return b"%s %s HTTP/1.1\r\n%s" % (method_b, target_b, fields)
                return self._request(method, target, list(lines), body)
            return self._request(method, target, list(headers), body)
        except (h11.LocalProtocolError, UnicodeError) as exc:
            raise caused(TransferError(Code.BAD_FUNCTION_ARGUMENT, f"Invalid request: {exc}"), exc)

    def _request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> bytes:
        """request() for one not remembered: raises what h11 raises."""
        self._method = method.upper().encode()
        self._closing = False
        for name, value in headers:
            if name.lower() == "connection" and "close" in value.lower():
                self._closing = True
        data = None
        if self._method != b"CONNECT":  # h11 knows what a 2xx to CONNECT means
            data = _fast_request(method, target, headers, body)
            if data is not None and not body:
                self._remember(method, headers, data)
        if data is None:  # anything unusual: h11 writes it (and refuses what it must)
            conn = self._conn = _new_h11()
            data = _h11_request(conn, method, target, headers, body)
        return data

    def _remember(self, method: str, headers: list[tuple[str, str]], data: bytes) -> None:
        """Keep the header block of a bodiless request _fast_request wrote (no credentials)."""
        for name, _value in headers:
            if name.lower() in _PRIVATE_HEADERS:
                return
        if len(_REQUEST_HEADS) >= _REQUEST_HEADS_KEPT:
            _REQUEST_HEADS.clear()
        fields = data[data.index(b"\r\n") + 2 :]
        value = (method.encode("ascii"), self._method, fields, self._closing)
        _REQUEST_HEADS[(method, tuple(headers))] = value

    def _h11_for_heads(self) -> h11.Connection:
        """An h11 connection waiting for a response: the one that wrote the request, or one
        that was told a request with our method (all h11 needs to judge a head by)."""
        conn = self._conn
        if conn is None:
            conn = self._conn = _new_h11()
            method = self._method.decode("ascii")
            target = "example.com:80" if method == "CONNECT" else "/"
            conn.send(h11.Request(method=method, target=target, headers=[("Host", "x")]))
            conn.send(h11.EndOfMessage())
        return conn

    # --- the response --------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes (b"" at end of stream) and return the events they complete."""
        self.received += len(data)
        body = self._body
        if body.left is not None:
            return body.receive_length(data)
        if body.chunks is not None:
            return body.receive_chunked(data)
        if body.until_close:
            return body.receive_until_close(data)
        return self._receive_head(data)

    def abandon(self) -> None:
        """The request was cut short (a refused upload): the connection ends with this cycle."""
        self._closing = True
        self._body.reusable = False
        self.will_close = True

    def reusable(self) -> bool:
        """True when the cycle ended cleanly and nothing unexpected was left behind."""
        body = self._body
        return body.done and body.reusable

    def next_cycle(self) -> None:
        """Make the connection ready for the next request (only when reusable())."""
        self._conn = None
        self._heads.next_cycle()
        body = self._body
        body.done = body.reusable = body.until_close = False
        body.left = None
        body.chunks = None
        self.cycles += 1
        self.received = 0
        self.will_close = False

    def _receive_head(self, data: bytes) -> list[Event]:
        """Collect a head to its blank line, parse it, and start its body."""
        body = self._body
        if body.done:  # bytes after the end: never parse them as the next response
            body.reusable = False
            return []
        heads = self._heads
        head = heads.buffer
        if not head and not heads.prior_bytes and self._fast_path and data.startswith(b"HTTP/"):
            # A whole small head in one read (most are): parsed where it lies, never copied
            # into the buffer. HeadBuffer.scan would find the same end, and none of libcurl's
            # limits can bite a first head this short.
            end = data.find(b"\r\n\r\n", 0, _HEAD_KEPT_LENGTH) + 4
            if end > 4:
                parsed = _parse_head(data, end, self._method, data[:end])
                if parsed is not None and parsed[2] >= 0:
                    return self._ordinary(data[end:], parsed)
        head += data
        heads.scan(not data)
        end = heads.end
        if end < 0:
            return []
        parsed = _parse_head(head, end, self._method) if self._fast_path else None
        if parsed is None or parsed[2] < 0:
            return self._receive_heads(parsed)
        events = self._ordinary(bytes(head[end:]), parsed)
        heads.reset()
        return events

    def _ordinary(self, rest: bytes, parsed: _Parsed) -> list[Event]:
        """An ordinary head and a Content-Length (or no) body, `rest` what came after the
        head: its events, the body's start. Inline, most responses are."""
        body = self._body
        response, length = parsed[1], parsed[2]
        keep_alive = not parsed[3] and not self._closing
        self.will_close = not keep_alive
        events: list[Event] = [Head(response)]
        if length == 0:
            body.finish(keep_alive and not rest, events)
            return events
        got = rest if len(rest) <= length else rest[:length]  # the body bytes that came
        if got:
            events.append(Data(got))
        if len(got) == length:
            body.finish(keep_alive and len(rest) == length, events)
        else:
            body.left = length - len(got)
            body.reusable = keep_alive
        return events

    def _receive_heads(self, parsed: _Parsed | None) -> list[Event]:
        """Every other case: 1xx heads, h11's heads, chunked and until-close bodies."""
        heads = self._heads
        events: list[Event] = []
        while True:
            if parsed is None:
                # The first blank line may come before the CRLF CRLF HeadBuffer.scan found.
                found = BLANK_LINE.search(heads.buffer, 0, heads.end)
                assert found is not None
                end = heads.end = found.end()
                parsed = self._parse_h11(bytes(heads.buffer[:end]))
            kind, response, length, closes = parsed
            if len(response.headers) + heads.prior_lines > MAX_HEADER_LINES:
                raise too_many_headers()
            events.append(Head(response) if kind == "head" else Info(response))
            if kind == "head":
                self._start_body(length, closes, events)
                return events
            heads.after_info(len(response.headers))  # the next head is judged at once
            end = heads.end
            if end < 0:
                return events
            parsed = _parse_head(heads.buffer, end, self._method) if self._fast_path else None

    def _start_body(self, length: int, closes: bool, events: list[Event]) -> None:
        heads = self._heads
        head = heads.buffer
        start = heads.end
        keep_alive = not closes and not self._closing
        self.will_close = not keep_alive
        body = self._body
        if length == 0:
            body.finish(keep_alive and len(head) == start, events)
        elif length > 0:
            got = bytes(head[start : start + length])
            if got:
                events.append(Data(got))
            if len(got) == length:
                body.finish(keep_alive and len(head) == start + length, events)
            else:
                body.left = length - len(got)
                body.reusable = keep_alive
        else:
            rest = bytes(head[start:])
            if length == CHUNKED:
                body.chunks = ChunkDecoder()
                body.reusable = keep_alive
                if rest:
                    events.extend(body.receive_chunked(rest))
            else:
                body.until_close = True
                if rest:
                    events.append(Data(rest))
        heads.reset()

    # --- a head the fast path declined: libcurl's verdicts, then h11 -----------------

    def _parse_h11(self, raw: bytes) -> _Parsed:
        """A head the fast path declined: libcurl's verdicts first, then h11's."""
        version = _VERSION.match(raw)
        if version is not None and version[1] not in (b"1.0", b"1.1"):
            raise self._heads.bad_status_line(
                f"Unsupported HTTP version ({version[1].decode()}) in response"
            )
        status = version is not None and raw[9:12].isdigit() and int(raw[9:12])
        if status is not False and status < 100:  # h11: a weird header; libcurl: not HTTP
            raise self._heads.bad_status_line("Unsupported response code in HTTP response")
        data, overflow = _normalise(raw, self._method, status or 0)
        conn = self._h11_for_heads()
        conn.receive_data(data)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise caused(_classify(exc, raw, self._heads), exc)
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


class Body:
    """A response's body once its final head is out, framed as h11 frames it: the bytes
    still due of a Content-Length, a chunked body's decoder, or read until close; and
    whether the response ended, leaving the connection fit for the next request.
    Http1 starts it (the fast path inline) and resets it for each cycle."""

    __slots__ = ("chunks", "done", "left", "reusable", "until_close")

    def __init__(self) -> None:
        self.left: int | None = None  # Content-Length bytes still due
        self.chunks: ChunkDecoder | None = None  # a chunked body being decoded
        self.until_close = False  # no length: the body ends with the connection
        self.done = False  # the response ended
        self.reusable = False  # ... and the connection may carry another request

    def finish(self, reusable: bool, events: list[Event]) -> None:
        self.done = True
        self.reusable = reusable
        events.append(END)

    def receive_length(self, data: bytes) -> list[Event]:
        left = self.left
        assert left is not None
        if not data:
            raise TransferError(Code.PARTIAL_FILE, f"end of response with {left} bytes missing")
        if len(data) < left:
            self.left = left - len(data)
            return [Data(data)]
        self.left = None
        self.done = True
        if len(data) > left:  # bytes beyond the body: never parse them as the next response
            self.reusable = False
            data = data[:left]
        return [Data(data), END]

    def receive_chunked(self, data: bytes) -> list[Event]:
        chunks = self.chunks
        assert chunks is not None
        if not data:
            raise TransferError(
                Code.PARTIAL_FILE, "transfer closed with outstanding read data remaining"
            )
        pieces, left = chunks.feed(data)
        events: list[Event] = [Data(piece) for piece in pieces]
        if left is not None:  # the last chunk and its trailers are in
            self.chunks = None
            if chunks.trailers:
                events.append(Trailers(chunks.trailers))
            self.finish(self.reusable and not left, events)
        return events

    def receive_until_close(self, data: bytes) -> list[Event]:
        if data:
            return [Data(data)]
        self.until_close = False
        events: list[Event] = []
        self.finish(False, events)
        return events


def _classify(exc: h11.RemoteProtocolError, raw: bytes, heads: HeadBuffer) -> TransferError:
    """libcurl's code for a head h11 refused."""
    first_line = raw.partition(b"\n")[0]
    if not _STATUS_LINE.match(first_line):
        shown = first_line.rstrip(b"\r")[:80].decode("ascii", "backslashreplace")
        return heads.bad_status_line(f"Unsupported HTTP/1 subversion in response: {shown}")
    return TransferError(Code.WEIRD_SERVER_REPLY, f"Invalid response header: {exc}")


def _new_h11() -> h11.Connection:
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES + 4)


def _h11_request(
    conn: h11.Connection,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
) -> bytes:
    """The request as h11 writes it on `conn` (raising what h11 refuses). h11 refuses
    several Host headers; libcurl sends them all: h11 writes the first, the others
    follow it (each line judged as h11 would judge it)."""
    hosts = [i for i, (name, _value) in enumerate(headers) if name.lower() == "host"][1:]
    extra = b""
    for i in hosts:
        line = _header_line_bytes(*headers[i])
        if line is None:
            raise h11.LocalProtocolError(f"Illegal header: {headers[i]!r}")
        extra += line
    headers = [header for i, header in enumerate(headers) if i not in hosts]
    data = conn.send(h11.Request(method=method, target=target, headers=headers)) or b""
    if extra:
        request_line, _, rest = data.partition(b"\r\n")
        host_line, _, rest = rest.partition(b"\r\n")
        data = b"\r\n".join([request_line, host_line, extra + rest])
    if body:
        data += conn.send(h11.Data(data=body)) or b""
    return data + (conn.send(h11.EndOfMessage()) or b"")


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
    # h11's token and request-target ([\x21-\x7e]+): what is left once their bytes are
    # deleted must be nothing (a C loop per byte, cheaper than a regex over each target)
    if not method_b or method_b.translate(None, _TCHARS):
        return None
    target_b = _checked_target(target)
    if target_b is None:
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


def _checked_target(target: str) -> bytes | None:
    """`target` as h11 writes it (UnicodeError if not ASCII), or None where h11 refuses it:
    h11's request-target is [\x21-\x7e]+, ASCII's printable characters but the space."""
    if target.isascii() and (not target.isprintable() or target.find(" ") >= 0):
        return None
    target_b = target.encode("ascii")
    return target_b or None


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


def _parse_head(
    head: bytes | bytearray, end: int, method: bytes, key: bytes | None = None
) -> _Parsed | None:
    """_parse_new_head's answer for the head that ends at `end`, remembered by the head's
    bytes (_HEADS): a server repeats its heads (nginx's change with its Date line, once a
    second), so most heads cost one lookup, not a split and a lookup per line. The parts
    are shared between responses, as HTTP/2's heads are (http2._HEADS): nobody changes a
    ResponseHead. `key`: the head's bytes, if the caller has them."""
    if end > _HEAD_KEPT_LENGTH or method == b"HEAD" or method == b"CONNECT":
        return _parse_new_head(head, end, method)
    if key is None:
        key = bytes(head[:end])
    parsed = _HEADS.get(key)
    if parsed is None:
        parsed = _parse_new_head(head, end, method)
        if parsed is not None:
            if len(_HEADS) >= _HEADS_KEPT:
                _HEADS.clear()
            _HEADS[key] = parsed
    return parsed


def _parse_new_head(head: bytes | bytearray, end: int, method: bytes) -> _Parsed | None:
    """An ordinary final response head, else None (h11 decides).

    Ordinary: HTTP/1.1, status 200-599, CRLF line ends, every line in h11's
    grammar, at most one Connection, Content-Length and Transfer-Encoding
    header, a length of plain digits (short enough not to overflow), a
    Transfer-Encoding of exactly `chunked`. "Closes" is h11's rule: a "close"
    token in the Connection header. The header block is split at its CRLFs and
    each distinct line checked once (_fields): no regular expression over every
    byte of every response.
    """
    if not head.endswith(b"\r\n\r\n", 0, end):
        return None
    first_end = head.find(b"\r\n", 0, end)
    status_line = bytes(head[:first_end])
    known = _STATUS_LINES.get(status_line)
    if known is None:
        match = _FAST_STATUS_LINE.fullmatch(status_line)
        if match is None:
            return None
        known = int(match[1]), (match[2] or b"").decode("latin-1")
        if len(_STATUS_LINES) >= _FIELDS_KEPT:
            _STATUS_LINES.clear()
        _STATUS_LINES[status_line] = known
    status, reason = known
    fields = _fields(bytes(head[first_end + 2 : end - 2]))
    if fields is None:
        return None
    headers, lookup = fields
    coding = lookup.get(b"transfer-encoding")
    length = lookup.get(b"content-length")
    if (coding is not None and coding != b"chunked") or (
        length is not None and (len(length) > _FAST_LENGTH_DIGITS or not length.isdigit())
    ):
        # a coding list, or a case h11 would change, is judged in _normalise; so is a
        # length h11 refuses, reads as a list, or one that may overflow
        return None
    connection = lookup.get(b"connection")
    closes = (
        connection is not None
        and connection != b"keep-alive"
        and b"close" in [token.strip() for token in connection.lower().split(b",")]
    )
    response = _new_head((status, "1.1", reason, headers, lookup))
    # _framing(), inlined: this runs for every ordinary response
    if method == b"HEAD" or status in _NO_BODY_STATUS or (method == b"CONNECT" and status < 300):
        return "head", response, 0, closes
    if coding is not None:
        return "head", response, CHUNKED, closes
    if length is None:
        return "head", response, UNTIL_CLOSE, True
    return "head", response, int(length), closes


def _fields(block: bytes) -> tuple[list[tuple[bytes, bytes]], dict[bytes, bytes]] | None:
    """The header lines of `block` (each with its CRLF) as (name, value) pairs and a
    lower-case name -> first value lookup, if every line is in h11's grammar and no
    framing header repeats; else None. Each distinct line is checked once, by h11's
    grammar (_FIELD_LINE), and remembered (_FIELDS): a server repeats most of its lines
    from one response to the next, and a line checked is a line known."""
    lines = block.split(b"\r\n")
    lines.pop()  # after the last CRLF: empty
    count = len(lines)
    if count > MAX_HEADER_LINES:
        return None  # too many: the fallback says so
    headers: list[tuple[bytes, bytes]] = []
    lookup: dict[bytes, bytes] = {}
    known = _FIELDS
    for line in lines:
        field = known.get(line)
        if field is None:
            field = _field(line)
            if field is None:
                return None
        pair, lname = field
        headers.append(pair)
        if lname not in lookup:  # the first one wins
            lookup[lname] = pair[1]
    if len(lookup) != count:  # a name repeats: h11 judges repeated framing headers
        names = [name.lower() for name, _value in headers]
        for repeated in (b"content-length", b"connection", b"transfer-encoding"):
            if names.count(repeated) > 1:
                return None
    return headers, lookup


def _field(line: bytes) -> tuple[tuple[bytes, bytes], bytes] | None:
    """((name, value), lower-case name) of a header line in h11's grammar (value without
    the whitespace around it, as h11 keeps it), remembered; else None."""
    match = _FIELD_LINE.fullmatch(line)
    if match is None:
        return None
    name: bytes = match[1]
    field = ((name, match[2]), name.lower())
    if len(line) <= _FIELD_KEPT_LENGTH:
        if len(_FIELDS) >= _FIELDS_KEPT:
            _FIELDS.clear()
        _FIELDS[line] = field
    return field


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
