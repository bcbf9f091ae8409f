"""The fast path of http1.py against h11 itself, on generated requests and responses.

Ordinary exchanges skip h11 (a request written from its parts, a response head
parsed with h11's grammar and framed by Content-Length); everything else is
replayed into h11. Whatever the bytes and however they are split into reads,
Http1 must answer what a plain h11 client answers: the same request bytes or
the same refusal, the same head, body and end, the same verdict on reuse,
and an error exactly where h11 raises one.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hiperfifo.engine.codes import TransferError
from hiperfifo.engine.http1 import Http1, ResponseHead

Outcome = tuple[object, ...]


def h11_request(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
) -> bytes | str:
    conn = h11.Connection(h11.CLIENT)
    try:
        data = conn.send(h11.Request(method=method, target=target, headers=headers)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        return data + (conn.send(h11.EndOfMessage()) or b"")
    except (h11.LocalProtocolError, UnicodeError):
        return "refused"


def ours_request(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
) -> bytes | str:
    try:
        return Http1().request(method, target, headers, body)
    except TransferError:
        return "refused"


def h11_response(method: str, chunks: list[bytes]) -> Outcome:
    """Status, version, reason, headers, body, ended, reusable, as a plain h11 client sees them."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    head: ResponseHead | None = None
    body = bytearray()
    ended = False
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if isinstance(event, h11.Response):
                    head = ResponseHead(
                        event.status_code,
                        event.http_version.decode(),
                        event.reason.decode("latin-1"),
                        list(event.headers.raw_items()),
                    )
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    ended = True
                    break
            if ended:
                break
    except h11.RemoteProtocolError:
        return ("error",)
    reusable = (
        ended
        and conn.our_state is h11.DONE
        and conn.their_state is h11.DONE
        and not conn.trailing_data[0]
    )
    return (head, bytes(body), ended, reusable)


def ours_response(method: str, chunks: list[bytes]) -> Outcome:
    http = Http1()
    http.request(method, "/", [("Host", "x")], None)
    head: object = None
    body = bytearray()
    ended = False
    try:
        for chunk in chunks:
            for kind, value in http.receive(chunk):
                if kind == "head":
                    head = value
                elif kind == "data":
                    assert isinstance(value, bytes)
                    body += value
                elif kind == "end":
                    ended = True
            if ended:
                break
    except TransferError:
        return ("error",)
    if isinstance(head, ResponseHead):
        head = head._replace(lookup=None)  # the parser's lookup table is not part of the head
    return (head, bytes(body), ended, ended and http.reusable())


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return [p for p in pieces if p]


TOKEN = st.text(alphabet="abcXYZ-_!#019", min_size=1, max_size=8)
VALUE = st.text(alphabet="ab 9\t,;=:/\x7f\xe9", max_size=10)
NAMES = st.one_of(
    TOKEN,
    st.sampled_from(
        ["Content-Length", "content-length", "Connection", "Transfer-Encoding", "Host"]
    ),
)
STATUS_LINES = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 204 No Content",
            b"HTTP/1.1 304 Not Modified",
            b"HTTP/1.1 404 ",
            b"HTTP/1.1 500",
            b"HTTP/1.0 200 OK",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/2 200 OK",
            b"HTTP/1.1 301 Moved \xe9",
        ]
    ),
    st.binary(max_size=20).map(lambda b: b"HTTP/1.1 " + b),
)
HEADER_LINES = st.lists(
    st.one_of(
        st.tuples(NAMES, VALUE).map(lambda nv: f"{nv[0]}: {nv[1]}".encode("latin-1")),
        st.sampled_from(
            [
                b"Content-Length: 5",
                b"Content-Length: 0",
                b"Content-Length: 5, 5",
                b"Content-Length: +5",
                b"Content-Length: 99999999999999999999999",
                b"Transfer-Encoding: chunked",
                b"Connection: close",
                b"Connection: keep-alive, Close",
                b"Connection: x,\tclose",
                b"Connection: closed",
                b" folded",
                b"Bad Name: x",
                b"X:y",
                b"X :y",
            ]
        ),
    ),
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    status=STATUS_LINES,
    lines=HEADER_LINES,
    newline=st.sampled_from([b"\r\n", b"\r\n", b"\n"]),
    body=st.binary(max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=4),
    eof=st.booleans(),
)
@example(
    method="GET",
    status=b"HTTP/1.1 200 OK",
    lines=[b"Content-Length: 5"],
    newline=b"\r\n",
    body=b"helloEXTRA",
    cuts=[20],
    eof=False,
)
def test_response_events_match_h11(
    method: str,
    status: bytes,
    lines: list[bytes],
    newline: bytes,
    body: bytes,
    cuts: list[int],
    eof: bool,
) -> None:
    """Same head, body, end and reuse verdict as h11, or an error exactly where h11 has one."""
    head = newline.join([status, *lines]) + newline + newline
    chunks = split(head + body, cuts) + ([b""] if eof else [])
    assert ours_response(method, chunks) == h11_response(method, chunks)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "G T", "PUT"]),
    target=st.sampled_from(["/", "/a?b=c", "/a b", "/\xe9", ""]),
    headers=st.lists(st.tuples(NAMES, VALUE), max_size=5),
    host=st.sampled_from([0, 1, 2]),
    body=st.one_of(st.none(), st.binary(max_size=8)),
    length=st.sampled_from(["right", "none", "wrong", "twice"]),
)
def test_request_bytes_match_h11(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    host: int,
    body: bytes | None,
    length: str,
) -> None:
    """The fast path writes h11's bytes (Host first), and refuses exactly what h11 refuses."""
    given_headers = list(headers) + [("Host", "example.com")] * host
    size = str(len(body or b""))
    if length == "right":
        given_headers.append(("Content-Length", size))
    elif length == "wrong":
        given_headers.append(("Content-Length", size + "1"))
    elif length == "twice":
        given_headers += [("Content-Length", size), ("content-length", size)]
    args = (method, target, given_headers, body)
    assert ours_request(*args) == h11_request(*args)


@pytest.mark.parametrize("reads", [1, 2, 7])
def test_ordinary_response_never_builds_h11(reads: int) -> None:
    """What the fast path exists for: an ordinary keep-alive response, in any number of reads."""
    response = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 3\r\n\r\nabc"
    http = Http1()
    http.request("GET", "/", [("Host", "x"), ("Accept", "*/*")], None)
    step = -(-len(response) // reads)
    events = []
    for i in range(0, len(response), step):
        events += http.receive(response[i : i + step])
    kinds = [kind for kind, _ in events]
    assert kinds == ["head", *["data"] * (len(kinds) - 2), "end"]
    assert b"".join(v for k, v in events if isinstance(v, bytes)) == b"abc"
    assert http.reusable()
    assert http._conn is None  # no h11 connection was made for it
