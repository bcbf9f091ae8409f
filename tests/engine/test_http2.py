"""engine/http2.py against h2's own SERVER side, in memory: every frame parsed and asserted."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
)

from hiperfifo.engine import http2 as http2_module
from hiperfifo.engine.codes import Code, TransferError
from hiperfifo.engine.http2 import (
    CONTROL_BURST,
    MAX_HEADER_LIST,
    STREAM_WINDOW,
    Http2,
    StreamData,
    StreamEnd,
    StreamHead,
    StreamReset,
    request_block,
)

GET = [("Host", "example.org"), ("Accept", "*/*")]


def split_ends(events: list[Any]) -> list[object]:
    """Http2.receive's events with the end a last StreamData carries (end=True) as the
    StreamEnd it stands for, after it: what the assertions here compare with."""
    out: list[object] = []
    for event in events:
        if isinstance(event, StreamData) and event.end:
            out += [event._replace(end=False), StreamEnd(event.stream_id)]
        else:
            out.append(event)
    return out


class Pair:
    """Our client and h2's server, wired back to back (h11's ConnectionPair, for h2)."""

    def __init__(self, **client: int) -> None:
        self.client = Http2(**client)
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.server.initiate_connection()
        self.now = 0.0
        self.to_client()
        self.to_server()

    def to_server(self) -> list[h2.events.Event]:
        events = self.server.receive_data(self.client.data_to_send())
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self.server.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id or 0
                )
        return events

    def to_client(self, raw: bytes = b"") -> list[object]:
        return split_ends(self.client.receive(raw + self.server.data_to_send(), self.now))

    def get(self, path: str = "/", headers: list[tuple[str, str]] | None = None) -> int:
        return self.client.open_stream("GET", "https", path, headers or GET, None)

    def respond(self, stream_id: int, body: bytes = b"hello", status: int = 200) -> None:
        fields = [(":status", str(status)), ("content-length", str(len(body)))]
        self.server.send_headers(stream_id, fields, end_stream=not body)
        for start in range(0, len(body), 16384):
            piece = body[start : start + 16384]
            self.server.send_data(stream_id, piece, end_stream=start + 16384 >= len(body))


def consume_all(pair: Pair, events: list[object]) -> bytes:
    body = b""
    for event in events:
        if isinstance(event, StreamData):
            body += event.data
            pair.client.consumed(event.stream_id, event.flow)
    return body


def test_request_headers_become_pseudo_headers() -> None:
    """Host becomes :authority, names are lower-cased, hop-by-hop headers are dropped."""
    pair = Pair()
    headers = [("Host", "example.org:8443"), ("Connection", "close"), ("X-Thing", "1")]
    headers += [("TE", "trailers"), ("Keep-Alive", "5"), ("Transfer-Encoding", "chunked")]
    pair.client.open_stream("GET", "https", "/a?b=c", headers, None)
    (request, ended) = [e for e in pair.to_server() if not isinstance(e, h2.events.WindowUpdated)][
        -2:
    ]
    assert isinstance(request, h2.events.RequestReceived)
    assert isinstance(ended, h2.events.StreamEnded)
    assert request.headers == [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"example.org:8443"),
        (b":path", b"/a?b=c"),
        (b"x-thing", b"1"),
        (b"te", b"trailers"),
    ]


def test_request_blocks_index_nothing_and_credentials_are_never_indexed() -> None:
    """Our HPACK encoder tells the server its table is 0 and adds nothing to it: every
    request's block decodes alone to the same fields; Authorization and Cookie go out
    'never indexed' (RFC 7541 7.1.3), the others as plain literals or static indexes."""
    pair = Pair()
    headers = [*GET, ("Authorization", "Bearer s3cret"), ("Cookie", "a=b"), ("X-Thing", "1")]
    want = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"example.org"),
        (b":path", b"/one"),
        (b"accept", b"*/*"),
        (b"authorization", b"Bearer s3cret"),
        (b"cookie", b"a=b"),
        (b"x-thing", b"1"),
    ]
    server: list[h2.events.Event] = []
    long = "/" + "x" * 300  # a length past the 7-bit prefix
    for path in ("/one", "/two", "/one", long, "/" + "y" * 126):
        pair.client.open_stream("GET", "https", path, headers, None)
        sent = pair.client.data_to_send()
        server += pair.server.receive_data(sent)
        blocks = [f.data for f in _frames(sent) if f.type == 0x1]
        (block,) = blocks
        fresh = hpack.Decoder()  # as the server is after our first block: no table at all
        fresh.header_table.maxsize = 0  # so a block that refers to earlier ones fails
        fields = fresh.decode(block, raw=True)
        assert [tuple(f) for f in fields] == [*want[:3], (b":path", path.encode()), *want[4:]]
        private = [f[0] for f in fields if isinstance(f, hpack.NeverIndexedHeaderTuple)]
        assert private == [b"authorization", b"cookie"]
    received = [e.headers for e in server if isinstance(e, h2.events.RequestReceived)]
    paths = [b"/one", b"/two", b"/one", long.encode(), b"/" + b"y" * 126]
    assert [dict(h)[b":path"] for h in received] == paths
    assert not pair.server.decoder.header_table.dynamic_entries
    assert pair.server.decoder.header_table.maxsize == 0  # our size update arrived
    # Request heads are kept encoded (_PREPARED), never one with credentials.
    assert not [key for key in http2_module._PREPARED if "s3cret" in repr(key)]
    pair.client.open_stream("GET", "https", "/x", [*GET, ("X-Thing", "1")], None)
    assert [key for key in http2_module._PREPARED if ("X-Thing", "1") in key]


@pytest.mark.parametrize("body", [None, b"posted"])
@pytest.mark.parametrize("extra", [0, 40_000])
def test_opening_a_stream_leaves_h2_as_its_own_send_headers_would(
    body: bytes | None, extra: int
) -> None:
    """Http2 opens a stream with a lean copy of h2's send_headers (send_request): the same
    frames (HEADERS, CONTINUATION past the frame size, END_STREAM without a body) and the
    same stream and connection state as h2's own call on a twin connection."""
    headers = [*GET, ("X-Big", "b" * extra)] if extra else GET
    ours = Pair()
    sid = ours.client.open_stream("GET", "https", "/p", headers, body)
    raw = ours.client.data_to_send()
    sent = _frames(raw)
    twin = Pair()
    conn = twin.client._h2  # h2's own send_headers on it, through the same encoder
    fields = request_block("GET", "https", "/p", headers)
    h2.connection.H2Connection.send_headers(conn, sid, fields, end_stream=not body)
    if body:  # as _pump_bodies sends a body: DATA, then an empty DATA with END_STREAM
        conn.send_data(sid, body)
        conn.end_stream(sid)
    theirs = _frames(conn.data_to_send())
    assert [(f.type, f.stream_id, sorted(f.flags), bytes(f.data)) for f in sent] == [
        (f.type, f.stream_id, sorted(f.flags), bytes(f.data)) for f in theirs
    ]
    if extra:
        kinds = [f.type for f in sent if f.type != 0x0]  # DATA aside
        assert kinds == [0x1] + [0x9] * (len(kinds) - 1)
        assert len(kinds) > 1  # CONTINUATION frames
    mine, twins = ours.client._h2.streams[sid], conn.streams[sid]
    for name in ("state", "client", "headers_sent", "stream_closed_by"):
        assert getattr(mine.state_machine, name) == getattr(twins.state_machine, name)
    assert (mine._authority, mine.request_method) == (twins._authority, twins.request_method)
    assert ours.client._h2.highest_outbound_stream_id == conn.highest_outbound_stream_id
    assert ours.client._h2.state_machine.state == conn.state_machine.state
    assert http2_module._QUIET_IN is not None  # h2's table as we know it: the calls skipped
    events = ours.server.receive_data(raw)
    requests = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert [dict(e.headers)[b":path"] for e in requests] == [b"/p"]
    if extra:
        assert dict(requests[0].headers)[b"x-big"] == b"b" * extra


def _frames(data: bytes) -> list[Frame]:
    """The frames in `data` (after the client preface, when it is there)."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    if data.startswith(preface):
        data = data[len(preface) :]
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


def test_response_events_and_head() -> None:
    """A response is a head (HTTP/2 status line for the header callback), its data, its end."""
    pair = Pair()
    sid = pair.get()
    pair.to_server()
    pair.server.send_headers(sid, [(":status", "200"), ("Content-Type", "text/plain")])
    pair.server.send_data(sid, b"hello", end_stream=True)
    events = pair.to_client()
    head, data, end = events
    assert isinstance(head, StreamHead)
    assert head.final
    assert head.head.status == 200
    assert head.head.http_version == "2"
    assert head.head.header(b"Content-Type") == b"text/plain"
    assert head.head.lines() == [b"HTTP/2 200 \r\n", b"content-type: text/plain\r\n", b"\r\n"]
    assert data == StreamData(sid, b"hello", 5)
    assert end == StreamEnd(sid)
    assert pair.client.streams == 0
    assert pair.client.completed == 1


def _server_bytes(pair: Pair, sids: list[int]) -> bytes:
    """What a server sends that takes every path of Http2's receiving: plain responses,
    padded DATA, HEADERS with PRIORITY, 1xx heads, a header block in CONTINUATION frames,
    trailers, an empty DATA frame, a PING, a WINDOW_UPDATE, a reset, late frames."""
    server = pair.server
    a, b, c, d, e, f, g, h = sids
    server.send_headers(a, [(":status", "200"), ("content-length", "5")])
    server.send_data(a, b"he", pad_length=3)
    server.send_headers(b, [(":status", "103"), ("link", "</s.css>")])
    server.send_data(a, b"llo", end_stream=True)
    server.send_headers(b, [(":status", "200"), ("x-big", "q" * 40_000)])  # CONTINUATION
    server.send_data(b, b"")  # empty, not ending: a control frame
    server.ping(b"12345678")
    out = server.data_to_send()
    block = server.encoder.encode([(b":status", b"204")])  # h2 servers never send PRIORITY
    flags = ("END_HEADERS", "END_STREAM", "PRIORITY")
    out += HeadersFrame(c, block, flags=flags, stream_weight=20).serialize()
    server.send_data(b, b"x" * 16_000)
    server.increment_flow_control_window(1000)
    server.send_headers(b, [("x-trailer", "t")], end_stream=True)
    server.send_headers(d, [(":status", "200")])
    server.reset_stream(d, h2.errors.ErrorCodes.INTERNAL_ERROR)
    server.send_headers(e, [(":status", "200")])
    server.send_data(e, b"y" * 100)
    server.send_data(e, b"z" * 100, end_stream=True)
    out += server.data_to_send()
    # Malformed (stream errors, h2-odd): DATA past content-length, trailers not ending.
    server.send_headers(f, [(":status", "200"), ("content-length", "3")])
    out += server.data_to_send() + DataFrame(f, b"12345", flags=["END_STREAM"]).serialize()
    server.send_headers(g, [(":status", "200")])
    server.send_data(g, b"ok")
    out += server.data_to_send()
    trailer = server.encoder.encode([(b"x-t", b"1")])
    out += HeadersFrame(g, trailer, flags=["END_HEADERS"]).serialize()
    server.send_headers(h, [(":status", "200")])
    server.send_data(h, b"last", end_stream=True)
    return out + server.data_to_send()


def _received(chunk: int, short: bool) -> tuple[list[object], object]:
    pair = Pair()
    sids = [pair.get(f"/{i}") for i in range(8)]
    pair.to_server()
    data = _server_bytes(pair, sids)
    client = pair.client
    taken: list[int] = []
    conn = client._h2
    short_path = conn._short_path

    def spy(data: bytes, at: int, events: list[h2.events.Event]) -> int:
        taken.append(short_path(data, at, events) - at)
        return at + taken[-1]

    conn._short_path = spy  # type: ignore[method-assign]
    if not short:  # h2's own receive_data, FrameBuffer and all
        conn.receive_data = h2.connection.H2Connection.receive_data.__get__(conn)  # type: ignore[method-assign]
    events: list[object] = []
    for at in range(0, len(data), chunk):
        for event in split_ends(client.receive(data[at : at + chunk], 0.0)):
            events.append(event)
            if isinstance(event, StreamData):
                client.consumed(event.stream_id, event.flow)
    streams = {
        sid: (s.state_machine.state, s.inbound_flow_control_window)
        for sid, s in conn.streams.items()
    }
    state = (
        conn.state_machine.state,
        conn.inbound_flow_control_window,
        streams,
        conn.control,
        client.error,
        client.data_to_send(),
    )
    return events, state


def test_the_end_rides_on_the_last_data_frame_a_bodiless_response_has_its_own() -> None:
    """END_STREAM on a DATA frame: one StreamData(end=True), no StreamEnd after it (one
    event less per response); END_STREAM on the HEADERS (no body): a StreamEnd."""
    pair = Pair()
    with_body, bodiless = pair.get(), pair.get()
    pair.to_server()
    pair.server.send_headers(with_body, [(":status", "200")])
    pair.server.send_data(with_body, b"hel")
    pair.server.send_data(with_body, b"lo", end_stream=True)
    pair.server.send_headers(bodiless, [(":status", "204")], end_stream=True)
    events = pair.client.receive(pair.server.data_to_send(), 0.0)
    assert [type(e).__name__ for e in events] == [
        "StreamHead",
        "StreamData",
        "StreamData",
        "StreamHead",
        "StreamEnd",
    ]
    assert events[1] == StreamData(with_body, b"hel", 3, False)
    assert events[2] == StreamData(with_body, b"lo", 2, True)
    assert events[4] == StreamEnd(bodiless)
    assert pair.client.streams == 0
    assert pair.client.completed == 2


@pytest.mark.parametrize("chunk", [1, 9, 10, 100, 1000, 16393, 1 << 20])
def test_short_path_and_h2s_own_receive_agree(chunk: int) -> None:
    """Http2's _Connection.receive_data takes DATA and whole HEADERS frames on a short path
    beside h2's FrameBuffer: split anywhere, the same bytes give the same events, the same
    state (stream states, windows, control-frame count) and the same bytes back."""
    short = _received(chunk, short=True)
    full = _received(chunk, short=False)
    assert short == full
    kinds = [type(e).__name__ for e in short[0]]
    assert kinds.count("StreamEnd") == 5
    assert kinds.count("StreamReset") == 3


def test_short_path_malformed_response_is_its_streams_error() -> None:
    """DATA past content-length taken on the short path: that stream alone is reset (92),
    as on h2's own path (_malformed), and the stream after it in the same bytes goes on."""
    pair = Pair()
    bad, good = pair.get("/bad"), pair.get("/good")
    pair.to_server()
    pair.server.send_headers(bad, [(":status", "200"), ("content-length", "3")])
    raw = pair.server.data_to_send() + DataFrame(bad, b"12345", flags=["END_STREAM"]).serialize()
    pair.respond(good, b"fine")
    raw += pair.server.data_to_send()
    seen: list[object] = []
    malformed = pair.client._h2._malformed

    def spy(frame: object, exc: h2.exceptions.ProtocolError) -> list[h2.events.Event]:
        seen.append(frame)
        return malformed(frame, exc)

    pair.client._h2._malformed = spy  # type: ignore[method-assign]
    events = split_ends(pair.client.receive(raw, 0.0))
    assert [type(f).__name__ for f in seen] == ["_Taken"]  # the short path's
    resets = [e for e in events if isinstance(e, StreamReset)]
    assert [(e.stream_id, e.code) for e in resets] == [(bad, Code.HTTP2_STREAM)]
    assert StreamData(good, b"fine", 4) in events
    assert StreamEnd(good) in events
    assert not pair.client.error


def test_many_streams_interleave_on_one_connection() -> None:
    """Fifty streams at once, answered in reverse order, each body to its own stream."""
    pair = Pair()
    sids = [pair.get(f"/{i}") for i in range(50)]
    pair.to_server()
    for i, sid in reversed(list(enumerate(sids))):
        pair.respond(sid, f"body {i}".encode())
    events = pair.to_client()
    bodies = {e.stream_id: e.data for e in events if isinstance(e, StreamData)}
    assert bodies == {sid: f"body {i}".encode() for i, sid in enumerate(sids)}
    assert sum(isinstance(e, StreamEnd) for e in events) == 50


def test_informational_head_before_the_final_one() -> None:
    """A 103 comes as a non-final head, then the real response."""
    pair = Pair()
    sid = pair.get()
    pair.to_server()
    pair.server.send_headers(sid, [(":status", "103"), ("link", "</s.css>")])
    pair.respond(sid, b"x")
    events = pair.to_client()
    assert [(e.head.status, e.final) for e in events if isinstance(e, StreamHead)] == [
        (103, False),
        (200, True),
    ]


def test_request_body_larger_than_the_window_is_sent_as_it_opens() -> None:
    """A 200 KB body goes out in pieces as the server's WINDOW_UPDATEs come back."""
    pair = Pair()
    body = bytes(range(256)) * 800
    sid = pair.client.open_stream("POST", "https", "/up", GET, body)
    received = b""
    for _ in range(20):
        for event in pair.to_server():
            if isinstance(event, h2.events.DataReceived):
                received += event.data or b""
        pair.to_client()
        if len(received) == len(body):
            break
    assert received == body
    pair.respond(sid, b"ok")
    assert StreamEnd(sid) in pair.to_client()


def test_window_of_streams_that_ended_comes_back_to_the_connection() -> None:
    """1,100 responses of one 16 KiB frame each, END_STREAM on it: more than the 16 MiB
    connection window in all, so the window their data took must come back (once per
    batch of ended streams, before the next bytes go out) or the server stalls."""
    pair = Pair()
    body = b"w" * 16384
    done = 0
    for _ in range(11):
        sids = [pair.get(f"/{i}") for i in range(100)]
        pair.to_server()
        for sid in sids:
            assert pair.server.local_flow_control_window(sid) >= len(body)  # else it stalls
            pair.server.send_headers(sid, [(":status", "200")])
            pair.server.send_data(sid, body, end_stream=True)
        events = pair.to_client()
        assert consume_all(pair, events) == body * 100
        done += sum(isinstance(e, StreamEnd) for e in events)
    assert done == 1100
    assert not pair.client.error


def test_a_stalled_stream_holds_only_its_own_window() -> None:
    """Data not consumed stops its stream at STREAM_WINDOW; another stream still flows."""
    pair = Pair()
    slow_sid, fast_sid = pair.get("/slow"), pair.get("/fast")
    pair.to_server()
    big = b"s" * (3 * STREAM_WINDOW)
    pair.server.send_headers(slow_sid, [(":status", "200")])
    sent = 0
    while pair.server.local_flow_control_window(slow_sid) > 0:
        room = min(pair.server.local_flow_control_window(slow_sid), 16384)
        pair.server.send_data(slow_sid, big[sent : sent + room])
        sent += room
    events = pair.to_client()  # the slow stream's data is not consumed
    assert sent == STREAM_WINDOW
    assert sum(len(e.data) for e in events if isinstance(e, StreamData)) == STREAM_WINDOW
    pair.to_server()
    assert pair.server.local_flow_control_window(slow_sid) == 0  # no window handed back
    pair.respond(fast_sid, b"f" * 100_000)  # the connection window still has room
    fast = pair.to_client()
    assert consume_all(pair, fast) == b"f" * 100_000
    assert StreamEnd(fast_sid) in fast
    for event in events:  # now the application takes the slow stream's bytes
        if isinstance(event, StreamData):
            pair.client.consumed(event.stream_id, event.flow)
    pair.to_server()
    assert pair.server.local_flow_control_window(slow_sid) > 0


def test_server_reset_fails_only_that_stream() -> None:
    """RST_STREAM on one stream is HTTP2_STREAM (92) for it; the other stream completes."""
    pair = Pair()
    a, b = pair.get("/a"), pair.get("/b")
    pair.to_server()
    pair.server.reset_stream(a, h2.errors.ErrorCodes.INTERNAL_ERROR)
    pair.respond(b)
    events = pair.to_client()
    reset = events[0]
    assert isinstance(reset, StreamReset)
    assert (reset.stream_id, reset.code, reset.retry) == (a, Code.HTTP2_STREAM, False)
    assert "INTERNAL_ERROR" in reset.text
    assert StreamEnd(b) in events
    assert pair.client.accepting


def test_refused_stream_is_retried() -> None:
    """REFUSED_STREAM: the server did nothing with it, so retry=True (libcurl's refused_stream)."""
    pair = Pair()
    sid = pair.get()
    pair.to_server()
    pair.server.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
    (reset,) = pair.to_client()
    assert isinstance(reset, StreamReset)
    assert reset.retry


def test_goaway_retries_streams_above_last_id_and_lets_the_rest_finish() -> None:
    """GOAWAY(last=3): 5 and 7 come back for a retry, 1 and 3 still get their responses."""
    pair = Pair()
    sids = [pair.get(f"/{i}") for i in range(4)]
    assert sids == [1, 3, 5, 7]
    pair.to_server()
    pair.server.close_connection(last_stream_id=3)
    events = pair.to_client()
    assert [(e.stream_id, e.retry) for e in events if isinstance(e, StreamReset)] == [
        (5, True),
        (7, True),
    ]
    assert not pair.client.accepting
    assert pair.client.free_slots == 0
    assert pair.client.streams == 2
    # The server goes on answering what it accepted, as nginx does (h2's own server side
    # would refuse to, so it is told it is still open); h2 alone, as a client, would
    # refuse every frame after a GOAWAY.
    pair.server.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
    for sid in (1, 3):
        pair.respond(sid, b"ok")
    events = pair.to_client()
    assert [e for e in events if isinstance(e, StreamEnd)] == [StreamEnd(1), StreamEnd(3)]
    assert consume_all(pair, events) == b"okok"
    assert pair.client.finished


def test_cancel_resets_only_that_stream() -> None:
    """reset() sends RST_STREAM(CANCEL) for one stream; its late data is ignored, others go on."""
    pair = Pair()
    a, b = pair.get("/a"), pair.get("/b")
    pair.to_server()
    pair.client.reset(a)
    resets = [e for e in pair.to_server() if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(a, h2.errors.ErrorCodes.CANCEL)]
    pair.respond(b, b"still here")
    events = pair.to_client()
    assert consume_all(pair, events) == b"still here"
    assert pair.client.streams == 0


def test_late_frames_on_a_cancelled_stream_are_dropped_and_others_go_on() -> None:
    """A response already on its way when we reset its stream: its HEADERS and DATA are
    dropped (h2's closed-by-reset path), the connection stays healthy, others finish."""
    pair = Pair()
    a, b = pair.get("/a"), pair.get("/b")
    pair.to_server()
    pair.respond(a, b"x" * 40_000)  # in flight before the server sees our RST_STREAM
    late = pair.server.data_to_send()
    pair.client.reset(a)
    assert pair.client.receive(late, 0.0) == []
    assert not pair.client.error
    pair.to_server()
    pair.respond(b, b"still here")
    events = pair.to_client()
    assert consume_all(pair, events) == b"still here"
    assert events[-1] == StreamEnd(b)
    assert not pair.client.error


def test_free_slots_follow_the_server_setting_and_ours() -> None:
    """SETTINGS_MAX_CONCURRENT_STREAMS from the server caps the slots, as does ours."""
    pair = Pair(max_concurrent_streams=10)
    assert pair.client.free_slots == 10
    pair.server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 3})
    pair.to_client()
    pair.get()
    assert pair.client.free_slots == 2


def test_connection_lost_ends_running_streams() -> None:
    """EOF with streams running: each ends, marked lost, with HTTP2 (16; the stream makes
    it PARTIAL_FILE once body bytes came, as libcurl 8.23 reports it)."""
    pair = Pair()
    sid = pair.get()
    (reset,) = pair.client.connection_lost("Connection closed")
    assert isinstance(reset, StreamReset)
    assert (reset.stream_id, reset.code, reset.lost, reset.retry) == (sid, Code.HTTP2, True, False)
    assert "not closed cleanly before end of the underlying connection" in reset.text
    assert pair.client.finished


def assert_connection_error(events: list[object], sids: list[int], needle: str) -> None:
    resets = [e for e in events if isinstance(e, StreamReset)]
    assert [r.stream_id for r in resets] == sids
    assert all(r.code is Code.HTTP2 and not r.retry for r in resets)
    assert needle in resets[0].text


def test_header_list_over_the_limit_is_a_connection_error() -> None:
    """150 KB of headers (in CONTINUATION frames): HTTP2 (16) for every stream, GOAWAY sent."""
    pair = Pair()
    sids = [pair.get("/a"), pair.get("/b")]
    pair.to_server()
    fields = [(":status", "200")] + [(f"x-h{i}", "v" * 1000) for i in range(150)]
    pair.server.send_headers(sids[0], fields, end_stream=True)
    events = pair.to_client()
    assert_connection_error(events, sids, "Oversized header block")
    assert not pair.client.accepting
    goaway = [e for e in pair.to_server() if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway
    assert pair.client.receive(b"more", 1.0) == []  # a failed connection takes nothing more


def test_hpack_bomb_is_refused_without_building_it() -> None:
    """One 4 KB header indexed again 200 times (~800 KB decoded): refused at 100 KiB."""
    pair = Pair()
    sid = pair.get()
    pair.to_server()
    block = hpack.Encoder().encode([(b":status", b"200")] + [(b"x-bomb", b"b" * 4000)] * 200)
    assert len(block) < 5000  # tiny on the wire...
    frame = HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
    events = split_ends(pair.client.receive(frame, 0.0))
    assert_connection_error(events, [sid], "Oversized header block")
    assert MAX_HEADER_LIST == 100 * 1024


def test_endless_continuation_is_a_connection_error() -> None:
    """HEADERS without END_HEADERS and CONTINUATION frames forever: cut off, HTTP2 (16)."""
    pair = Pair()
    sid = pair.get()
    pair.to_server()
    first = HeadersFrame(sid, hpack.Encoder().encode([(b":status", b"200")])).serialize()
    events = pair.client.receive(first + ContinuationFrame(sid, b"").serialize() * 10_000, 0.0)
    assert_connection_error(events, [sid], "continuation")


@pytest.mark.parametrize(
    "frame",
    [
        PingFrame(0, opaque_data=b"12345678"),
        RstStreamFrame(1, error_code=0),
        HeadersFrame(1, b"", flags=[]),  # placeholder, replaced below by a SETTINGS frame
    ],
    ids=["PING", "RST_STREAM", "SETTINGS"],
)
def test_control_frame_flood_closes_the_connection(frame: object) -> None:
    """More than the burst of PING/RST_STREAM/SETTINGS frames at once: ENHANCE_YOUR_CALM, 16."""
    from hyperframe.frame import SettingsFrame

    if isinstance(frame, HeadersFrame):
        frame = SettingsFrame(0, settings={h2.settings.SettingCodes.ENABLE_PUSH: 0})
    pair = Pair()
    sids = [pair.get("/a"), pair.get("/b")]
    pair.to_server()
    flood = frame.serialize() * (CONTROL_BURST + 10)  # type: ignore[attr-defined]
    events = split_ends(pair.client.receive(flood, 0.0))
    if isinstance(frame, RstStreamFrame):  # the first one closes stream 1 (NO_ERROR)
        assert events[0] == StreamReset(1, Code.OK, "HTTP/2 stream 1 reset with NO_ERROR", False)
        events, sids = events[1:], sids[1:]
    assert_connection_error(events, sids, "flood")
    terminated = [e for e in pair.to_server() if isinstance(e, h2.events.ConnectionTerminated)]
    assert terminated[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_pings_at_an_honest_rate_are_answered() -> None:
    """A PING every 20 ms for 3,000 pings (over a minute of clock) is no flood: all answered."""
    pair = Pair()
    sid = pair.get()
    pair.to_server()
    ping = PingFrame(0, opaque_data=b"abcdefgh").serialize()
    for i in range(3000):
        assert pair.client.receive(ping, i * 0.02) == []
    acks = [e for e in pair.to_server() if isinstance(e, h2.events.PingAckReceived)]
    assert len(acks) == 3000
    pair.respond(sid)
    assert StreamEnd(sid) in pair.to_client()


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-Evil", "a\r\nInjected: 1"), ("Bad Name", "v"), ("X-Nul", "a\x00b"), ("X-Space", " v")],
)
def test_invalid_request_header_is_refused(name: str, value: str) -> None:
    """A header h2 must not send (CR/LF/NUL, a space in a name, edge whitespace): 43."""
    pair = Pair()
    with pytest.raises(TransferError) as caught:
        pair.client.open_stream("GET", "https", "/", [*GET, (name, value)], None)
    assert caught.value.code is Code.BAD_FUNCTION_ARGUMENT
    assert pair.client.streams == 0
    assert pair.client.free_slots == 100


def test_repeated_headers_are_checked_once_and_sent_alike() -> None:
    """The same headers on 3 streams arrive the same 3 times (the check is remembered)."""
    pair = Pair()
    headers = [*GET, ("X-Thing", "caf\xe9")]
    for _ in range(3):
        pair.client.open_stream("GET", "https", "/", headers, None)
    requests = [e for e in pair.to_server() if isinstance(e, h2.events.RequestReceived)]
    assert [r.headers[-1] for r in requests] == [(b"x-thing", b"caf\xe9")] * 3


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([(b":status", b"200"), (b"X-Upper", b"1")], "bad header name"),
        ([(b":status", b"200"), (b"connection", b"close")], "connection-specific"),
        ([(b":status", b"200"), (b"x-a", b"b\r\nc")], "bad value"),
        ([(b"x-a", b"1"), (b":status", b"200")], "misplaced"),
        ([(b":status", b"20x")], "bad :status"),
        ([(b":status", b"200"), (b":path", b"/")], "misplaced"),
    ],
    ids=["uppercase", "connection", "crlf", "pseudo-after", "status", "request-pseudo"],
)
def test_malformed_response_head_resets_only_its_stream(
    fields: list[tuple[bytes, bytes]], reason: str
) -> None:
    """A malformed head is a stream error (92, RST_STREAM PROTOCOL_ERROR); the rest go on."""
    pair = Pair()
    bad, good = pair.get("/bad"), pair.get("/good")
    pair.to_server()
    block = pair_encoder(pair).encode(fields)
    raw = HeadersFrame(bad, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
    events = split_ends(pair.client.receive(raw, 0.0))
    (reset,) = events
    assert isinstance(reset, StreamReset)
    assert (reset.stream_id, reset.code, reset.retry) == (bad, Code.HTTP2_STREAM, False)
    assert reason in reset.text
    pair.respond(good)
    assert StreamEnd(good) in pair.to_client()


def pair_encoder(pair: Pair) -> hpack.Encoder:
    """The server's HPACK encoder: a raw block must share its dynamic table."""
    return pair.server.encoder
