"""One HTTP/2 connection on h2: requests in, per-stream events out; no I/O, no clock.

The only module that imports h2. It owns the h2 state machine of one
connection, the streams we opened on it, their request bodies waiting for
flow-control window, and the limits that keep a misbehaving server from
costing memory or CPU without bound (a header list over 100 KiB, an HPACK
bomb, an endless CONTINUATION sequence, a flood of PING/SETTINGS/RST_STREAM
frames). Bytes come in through `receive()`, go out through `data_to_send()`;
the caller owns the socket and the clock (`now` is passed in).

Every h2 exception is mapped here, at this one boundary, to libcurl's codes
and turned into per-stream events: a stream the server reset is
HTTP2_STREAM (92), a connection-level error is HTTP2 (16) for every stream
on the connection, a stream the server never processed (above a GOAWAY's
last_stream_id, or REFUSED_STREAM) comes back with `retry=True`, as
libcurl's `refused_stream` does. Window space is handed back only when the
caller says the data was consumed (`consumed()`), so a stream whose reader
stalls holds at most its own window and stalls nobody else.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
from h2.errors import ErrorCodes
from h2.utilities import is_informational_response

from hiperfifo.engine.codes import Code, TransferError
from hiperfifo.engine.http1 import ResponseHead
from hiperfifo.engine.http2_events import (
    Event,
    StreamData,
    StreamEnd,
    StreamHead,
    StreamReset,
    StreamTrailers,
)

MAX_HEADER_LIST = 100 * 1024  # decoded header list of one head (libcurl: CURL_MAX_HTTP_HEADER)
STREAM_WINDOW = 1 << 20  # what one stream may have in flight before we consume it
CONNECTION_WINDOW = 16 << 20  # what all streams together may have in flight
MAX_CONCURRENT_STREAMS = 100  # libcurl's default CURLMOPT_MAX_CONCURRENT_STREAMS
# Control frames (PING, SETTINGS, RST_STREAM, PRIORITY, ALTSVC, unknown types, empty DATA)
# the server may send: a burst, then a steady rate. An honest server sends a handful.
CONTROL_BURST = 1000
CONTROL_RATE = 100.0  # per second, refilling the burst
_IDS = 2**31 - 4  # the highest stream id after which one more can still be opened
_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host")
)

# RFC 9110's token and field-value (no CR, LF, NUL, other controls, or whitespace at the ends):
# what h2's outbound validation would check, done once per distinct (name, value).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")
_PATH = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_FIELDS: dict[tuple[str, str], tuple[bytes, bytes]] = {}  # checked, by (name, value)
_FIELDS_KEPT = 1024
_DECODED_KEPT = 256  # header blocks remembered per connection
_PRIVATE = frozenset(("authorization", "proxy-authorization", "cookie"))
_PRIVATE_FIELDS = frozenset(name.encode() for name in _PRIVATE)
_ENCODED: dict[tuple[bytes, bytes], bytes] = {}  # HPACK bytes of a field (_EncodeCache)
# A request head without its :path, checked and encoded: (method, scheme, *headers) ->
# (:method, :authority, the HPACK bytes before :path, those after it). Not with credentials.
_PREPARED: dict[tuple[Any, ...], tuple[bytes, bytes, bytes, bytes]] = {}
_LOWER_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_CONNECTION_SPECIFIC = _HOP_BY_HOP - {b"host"}
_SEEN: set[tuple[bytes, bytes]] = set()  # response header fields judged well-formed
_HEADS: dict[tuple[tuple[bytes, bytes], ...], ResponseHead] = {}  # header list -> its head
_HEADS_KEPT = 64
_HEAD_FIELDS_KEPT = 32  # a longer header list is checked every time, not remembered

Headers = list[tuple[bytes, bytes]]


class _DecodeCache:
    """h2's HPACK decoder, with the headers of a header block seen before remembered.

    Sound only while the dynamic table is empty and cannot grow (we advertise
    SETTINGS_HEADER_TABLE_SIZE 0): a block's headers then depend on its bytes
    alone. nginx sends the same block for every response of a second (the Date
    changes), so most blocks skip the Huffman decoding, the costliest part.
    """

    __slots__ = ("_cache", "_decoder")

    def __init__(self, decoder: Any) -> None:
        object.__setattr__(self, "_decoder", decoder)
        object.__setattr__(self, "_cache", {})

    def decode(self, data: Any, raw: bool = False) -> Any:
        decoder = self._decoder
        table = decoder.header_table
        if table.maxsize or table.dynamic_entries:
            return decoder.decode(data, raw)
        key = (bytes(data), raw)
        headers = self._cache.get(key)
        if headers is None:
            headers = decoder.decode(data, raw)  # the header-list limit applies here
            if len(self._cache) >= _DECODED_KEPT:
                self._cache.clear()
            self._cache[key] = headers
        return list(headers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._decoder, name, value)


class _EncodeCache:
    """h2's HPACK encoder without a dynamic table, each field's bytes remembered.

    We tell the server once (a table size update to 0 in our first block) that
    we index nothing: a header block is then the concatenation of its fields'
    representations, each depending on the field alone, so a field is encoded
    once per process instead of once per request. Credentials go out "never
    indexed" (RFC 7541 7.1.3; nghttp2: Authorization, short cookies) and are
    not remembered; :path, new with every URL, is written as a plain literal.
    A server's HEADER_TABLE_SIZE is a maximum: we keep using 0.
    """

    __slots__ = ("_encoder",)

    def __init__(self, encoder: Any) -> None:
        encoder.header_table_size = 0
        object.__setattr__(self, "_encoder", encoder)

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        return self.update() + self.fields(headers, huffman)

    def update(self) -> bytes:
        """The table size update our first block carries (b"" once it went)."""
        encoder = self._encoder
        return encoder.encode((), True) if encoder.header_table.resized else b""

    def fields(self, headers: Any, huffman: bool = True) -> bytes:
        """`headers` as HPACK field representations (context-free: no dynamic table)."""
        encoder = self._encoder
        block = []
        encoded = _ENCODED
        for field in headers:
            data = encoded.get(field)
            if data is None:
                name = field[0]
                if name == b":path":  # new with every URL: a plain literal, no Huffman
                    data = _literal_path(field[1])
                else:
                    private = name in _PRIVATE_FIELDS
                    data = encoder.add((name, field[1]), private, huffman)
                    if not private:
                        if len(encoded) >= _FIELDS_KEPT:
                            encoded.clear()
                        encoded[field] = data
            block.append(data)
        return b"".join(block)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "header_table_size":  # the server's maximum: we stay at 0
            setattr(self._encoder, name, value)


def _literal_path(value: bytes) -> bytes:
    """:path as an HPACK literal without indexing, name from the static table (index 4),
    value not Huffman-coded (RFC 7541 6.2.2, 5.1, 5.2)."""
    size = len(value)
    if size < 127:
        return bytes((0x04, size)) + value
    out = bytearray((0x04, 127))
    size -= 127
    while size >= 128:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + value


class _DrainingStateMachine(h2.connection.H2ConnectionStateMachine):
    """h2's connection states, except that a received GOAWAY still lets streams finish.

    h2 goes CLOSED on GOAWAY and then refuses every frame (python-hyper/h2#1181),
    but RFC 9113 6.8 says streams up to last_stream_id may still complete, and
    nginx sends its GOAWAY (keepalive_requests) before the responses it still
    owes. New streams (SEND_HEADERS) stay refused.
    """

    _transitions = {
        **h2.connection.H2ConnectionStateMachine._transitions,
        **{
            (h2.connection.ConnectionState.CLOSED, kind): (
                None,
                h2.connection.ConnectionState.CLOSED,
            )
            for kind in h2.connection.ConnectionInputs
            if kind.name.startswith("RECV_")
            or kind.name in ("SEND_DATA", "SEND_WINDOW_UPDATE", "SEND_RST_STREAM", "SEND_SETTINGS")
        },
    }
    _transitions.pop(
        (h2.connection.ConnectionState.CLOSED, h2.connection.ConnectionInputs.RECV_PUSH_PROMISE)
    )


# Frame types (RFC 9113 6, RFC 7838): PRIORITY, RST_STREAM, SETTINGS, PING, ALTSVC, and any
# type h2 does not know (an extension); DATA (0) counts when it is empty and does not end.
_CONTROL_FRAMES = frozenset((0x2, 0x3, 0x4, 0x6, 0xA))
_KNOWN_FRAMES = frozenset(range(0xB))
# hyperframe's RST_STREAM frame, as h2 imports it (the engine imports h2 only).
_RST_STREAM: Any = vars(h2.connection)["RstStreamFrame"]
_HEADERS_FRAME: Any = vars(h2.connection)["HeadersFrame"]
_CONTINUATION_FRAME: Any = vars(h2.connection)["ContinuationFrame"]
_SEND_HEADERS = h2.connection.ConnectionInputs.SEND_HEADERS
_RECV_DATA = h2.connection.ConnectionInputs.RECV_DATA
_RECV_HEADERS = h2.connection.ConnectionInputs.RECV_HEADERS
_decode_headers: Callable[[Any, bytes], Any] = vars(h2.connection)["_decode_headers"]
_FRAME_HEADER = struct.Struct(">HBBBL")  # hyperframe's: length (24 bits), type, flags, id
_PADDED_OR_PRIORITY = 0x08 | 0x20  # DATA's and HEADERS' PADDED, HEADERS' PRIORITY
# The connection state in which h2's machine takes SEND_HEADERS, RECV_HEADERS and RECV_DATA
# as no change and no event (CLIENT_OPEN -> CLIENT_OPEN, nothing called): skipped there.
_QUIET_IN: Any = h2.connection.ConnectionState.CLIENT_OPEN
if any(
    _DrainingStateMachine._transitions.get((_QUIET_IN, kind)) != (None, _QUIET_IN)
    for kind in (_SEND_HEADERS, _RECV_HEADERS, _RECV_DATA)
):
    _QUIET_IN = None  # another h2: always ask its machine
# Stream states in which a DATA or HEADERS frame is a plain next step (RFC 9113 5.1).
_RECEIVING = {
    state: state in (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL)
    for state in h2.stream.StreamState
}
_ODD = h2.connection.AllowedStreamIDs.ODD
_STREAM_SEND_HEADERS = h2.stream.StreamInputs.SEND_HEADERS
_STREAM_SEND_END_STREAM = h2.stream.StreamInputs.SEND_END_STREAM
_STREAM_RECV_HEADERS = h2.stream.StreamInputs.RECV_HEADERS
_STREAM_RECV_INFO = h2.stream.StreamInputs.RECV_INFORMATIONAL_HEADERS
_STREAM_RECV_END_STREAM = h2.stream.StreamInputs.RECV_END_STREAM


class _Taken(NamedTuple):
    """What _malformed() reads of a frame the short path took."""

    stream_id: int
    type: int
    flow_controlled_length: int


def _frame_length(data: Any, at: int) -> int:
    high, low = _FRAME_HEADER.unpack_from(data, at)[:2]
    return int((high << 8) | low)


# h2 keeps a closed stream's object until a count of open streams sweeps it (late frames on
# it are answered from _closed_streams after that): a sweep walks every stream, open or not.
_SWEEP = 256


class _Connection(h2.connection.H2Connection):
    """h2's connection, counting the frames that cost us work and carry no response, and
    counting our open streams from our own table: h2 walks all its streams for that on
    every new one (and drops the closed ones as it goes), here once per _SWEEP new ones."""

    control = 0
    ours: set[int] = set()  # Http2's running streams (replaced per connection)
    _sweep_at = _SWEEP

    @property
    def open_outbound_streams(self) -> int:
        if len(self.streams) >= self._sweep_at:
            count = super().open_outbound_streams  # forgets the closed streams
            self._sweep_at = len(self.streams) + _SWEEP
            return count
        return len(self.ours)

    def _receive_frame(self, frame: Any) -> list[h2.events.Event]:
        """h2 4.4's own, less its trace line: that formats repr(frame) for every frame
        even with its logger off (~4% of our CPU per request)."""
        kind = frame.type
        if kind in _CONTROL_FRAMES or kind not in _KNOWN_FRAMES:
            self.control += 1
        elif kind == 0 and not frame.data and "END_STREAM" not in frame.flags:
            self.control += 1  # empty DATA frames: nghttp2 counts them as a flood too
        events: list[h2.events.Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as e:
            if not self._stream_is_closed_by_reset(e.stream_id):
                raise
            reset = _RST_STREAM(e.stream_id)
            reset.error_code = e.error_code
            self._prepare_for_sending([reset])
            events = e._events
        except h2.exceptions.StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                reset = _RST_STREAM(e.stream_id)
                reset.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([reset])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise h2.exceptions.StreamClosedError(e.stream_id) from e
            else:
                raise
        except h2.exceptions.ProtocolError as e:
            events = self._malformed(frame, e)
        else:
            self._prepare_for_sending(frames)
        return events

    def _malformed(self, frame: Any, exc: h2.exceptions.ProtocolError) -> list[h2.events.Event]:
        """What h2 found wrong while one of our streams took a HEADERS or DATA frame (after
        HPACK decoding): DATA over or short of the content-length, an invalid content-length,
        END_STREAM on a 1xx, trailers without END_STREAM, DATA before the final head. nghttp2
        makes these stream errors (RFC 9113 8.1.1: a malformed response; DATA before any
        HEADERS at all aside: a connection error there), h2 connection errors that would fail
        every stream: reset that stream alone. Anything else is raised on."""
        sid = frame.stream_id
        trace = exc.__traceback__
        while trace is not None and trace.tb_frame.f_code not in _STREAM_RECEIVERS:
            trace = trace.tb_next
        if trace is None or sid not in self.ours:
            raise exc
        try:
            self.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
        except h2.exceptions.H2Error:
            pass  # closed already: its END_STREAM came with the error
        if frame.type == 0:  # the connection window it took is ours to give back
            self.acknowledge_received_data(frame.flow_controlled_length, sid)
        return [_StreamError(sid, str(exc) or type(exc).__name__)]

    def receive_data(self, data: Any) -> list[h2.events.Event]:
        """h2's receive_data, with the two frames of every response taken on a short path:
        a DATA frame, and a HEADERS frame that holds a whole header block (END_HEADERS),
        on a stream of ours that is open for receiving, unpadded, without priority, within
        the frame size and both windows. Those go to the same h2 calls h2's own handlers
        make (connection state machine, flow-control windows, the stream's receive_data /
        receive_headers, the HPACK decoder), only without building hyperframe objects or
        copying through h2's FrameBuffer. Any other whole frame goes to h2 alone; from an
        incomplete one, or a header block that goes on in CONTINUATION frames, h2 takes
        the rest of the bytes."""
        buf = self.incoming_buffer
        if buf._headers_buffer:  # in a header block: h2 collects its CONTINUATION frames
            return super().receive_data(data)
        pending = buf._data
        if pending:  # the start of a frame, left over from the last call
            if len(pending) >= 9 and len(pending) + len(data) < 9 + _frame_length(pending, 0):
                return super().receive_data(data)  # still short of it: no copy back and forth
            data = bytes(pending) + bytes(data)
            pending.clear()
        elif type(data) is not bytes:
            data = bytes(data)  # event data must not be a view of a buffer reused later
        events: list[h2.events.Event] = []
        size = len(data)
        at = 0
        while at < size:
            try:
                at = self._short_path(data, at, events)
            except h2.exceptions.ProtocolError as e:  # as h2's receive_data does
                self._terminate_connection(e.error_code)
                raise
            end = at + 9 + _frame_length(data, at) if size - at >= 9 else size + 1
            if end > size:
                break
            events += super().receive_data(memoryview(data)[at:end])  # one frame, h2's way
            at = end
            if buf._headers_buffer:
                break
        if at < size:
            events += super().receive_data(memoryview(data)[at:])
        return events

    def _short_path(self, data: bytes, at: int, events: list[h2.events.Event]) -> int:
        """Take the frames from `at` on that receive_data() takes itself; where the first
        other one starts."""
        streams = self.streams
        limit = self.max_inbound_frame_size
        size = len(data)
        while size - at >= 9:
            high, low, kind, flags, sid = _FRAME_HEADER.unpack_from(data, at)
            length = (high << 8) | low
            end = at + 9 + length
            if end > size or length > limit or flags & _PADDED_OR_PRIORITY:
                break
            stream = streams.get(sid & 0x7FFFFFFF)
            if stream is None or not _RECEIVING[stream.state_machine.state]:
                break
            windows = self._inbound_flow_control_window_manager
            if kind == 0x0 and (
                length > windows.current_window_size
                or length > stream._inbound_window_manager.current_window_size
            ):
                break  # h2 raises the FLOW_CONTROL_ERROR
            if kind != 0x0 and (kind != 0x1 or not flags & 0x4):
                break  # not DATA, nor HEADERS with END_HEADERS
            try:
                if kind == 0x0:
                    if not length and not flags & 0x1:
                        self.control += 1  # an empty DATA frame: a flood, as nghttp2 counts
                    if self.state_machine.state is not _QUIET_IN:
                        events += self.state_machine.process_input(_RECV_DATA)
                    windows.window_consumed(length)
                    body = data[at + 9 : end]
                    frames, more = stream.receive_data(body, bool(flags & 0x1), length)
                else:
                    headers = _decode_headers(self.decoder, data[at + 9 : end])
                    if self.state_machine.state is not _QUIET_IN:
                        events += self.state_machine.process_input(_RECV_HEADERS)
                    frames, more = _receive_headers(stream, headers, bool(flags & 0x1))
            except h2.exceptions.ProtocolError as e:  # as in _receive_frame
                frames, more = [], self._malformed(_Taken(stream.stream_id, kind, length), e)
            self._prepare_for_sending(frames)
            events += more
            at = end
        return at

    def send_request(
        self, stream_id: int, method: bytes, authority: bytes, encoded: bytes, end_stream: bool
    ) -> None:
        """h2 4.4's send_headers for the request that opens a client stream, step for step
        (the same state machines, stream object and frames), less what cannot apply to it:
        str headers to encode, the validation flags (our checks run instead), trailers,
        priority. `encoded`: the header block's fields, HPACK-encoded (open_stream)."""
        remote_max = self.remote_settings.max_concurrent_streams
        if self.open_outbound_streams + 1 > remote_max:
            raise h2.exceptions.TooManyStreamsError(f"Max outbound streams is {remote_max}")
        if self.state_machine.state is not _QUIET_IN:
            self.state_machine.process_input(_SEND_HEADERS)
        stream = self._begin_new_stream(stream_id, _ODD)
        machine = stream.state_machine
        machine.process_input(_STREAM_SEND_HEADERS)
        encoded = cast(_EncodeCache, self.encoder).update() + encoded  # after the states, as h2
        size = self.max_outbound_frame_size
        if end_stream:
            machine.process_input(_STREAM_SEND_END_STREAM)
        stream._authority = authority
        stream.request_method = method
        if len(encoded) <= size:  # one HEADERS frame: its 9-byte header as hyperframe's
            flags = 0x5 if end_stream else 0x4  # END_HEADERS, END_STREAM
            length = len(encoded)
            header = _FRAME_HEADER.pack(length >> 8, length & 0xFF, 0x1, flags, stream_id)
            self._data_to_send += header + encoded
            return
        first = _HEADERS_FRAME(stream_id, encoded[:size])
        frames = [first]
        frames.extend(
            _CONTINUATION_FRAME(stream_id, encoded[at : at + size])
            for at in range(size, len(encoded), size)
        )
        frames[-1].flags.add("END_HEADERS")
        if end_stream:
            first.flags.add("END_STREAM")
        self._data_to_send += b"".join([frame.serialize() for frame in frames])


def _receive_headers(
    stream: Any, headers: list[Any], end_stream: bool
) -> tuple[list[Any], list[h2.events.Event]]:
    """h2 4.4's H2Stream.receive_headers for a whole header block the short path took, step
    for step (the same state machine inputs, events, content-length), less what _CONFIG
    makes a no-op there: the header validation flags (inbound validation and normalisation
    are off) and the pipeline's copy of the list (no header_encoding: the decoded list,
    new for each block, goes to the event as it is)."""
    if is_informational_response(headers):
        if end_stream:
            raise h2.exceptions.ProtocolError("Cannot set END_STREAM on informational responses")
        input_ = _STREAM_RECV_INFO
    else:
        input_ = _STREAM_RECV_HEADERS
    machine = stream.state_machine
    events: list[Any] = machine.process_input(input_)
    headers_event = events[0]
    if end_stream:
        ended = machine.process_input(_STREAM_RECV_END_STREAM)
        headers_event.stream_ended = ended[0]
        events += ended
    stream._initialize_content_length(headers)
    if isinstance(headers_event, h2.events.TrailersReceived) and not end_stream:
        raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set")
    headers_event.headers = headers
    return [], events


_STREAM_RECEIVERS = frozenset(
    (
        h2.stream.H2Stream.receive_headers.__code__,
        h2.stream.H2Stream.receive_data.__code__,
        _receive_headers.__code__,
    )
)


class _StreamError(h2.events.Event):
    """Our event: h2 found the response on `stream_id` malformed (_Connection._malformed)."""

    def __init__(self, stream_id: int, reason: str) -> None:
        self.stream_id = stream_id
        self.reason = reason


# Headers are checked by _field() and _head() (once per distinct header, not per request).
_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
)
if (
    _CONFIG.validate_inbound_headers
    or _CONFIG.normalize_inbound_headers
    or _CONFIG.header_encoding
):
    raise ImportError("http2._receive_headers needs h2's inbound header pipeline off (_CONFIG)")


class Http2:
    """The client side of one HTTP/2 connection: many streams, one byte stream."""

    __slots__ = (
        "_bodies",
        "_budget",
        "_budget_at",
        "_ended_flow",
        "_ended_on",
        "_h2",
        "_limit",
        "_max_streams",
        "_streams",
        "completed",
        "error",
        "goaway",
        "raised",
    )

    def __init__(self, max_concurrent_streams: int = MAX_CONCURRENT_STREAMS) -> None:
        conn = _Connection(config=_CONFIG)
        self._streams: set[int] = set()  # ours, not ended yet
        conn.ours = self._streams
        conn.state_machine = _DrainingStateMachine()
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                # No dynamic table for the server's encoder: nginx never refers back to one
                # anyway, and a header block then means the same every time (_DecodeCache).
                h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            },
        )
        # The limit holds from the first byte, not only once the server acknowledged it.
        conn.decoder.max_header_list_size = MAX_HEADER_LIST
        conn.decoder = cast(Any, _DecodeCache(conn.decoder))
        conn.encoder = cast(Any, _EncodeCache(conn.encoder))
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._h2 = conn
        self._max_streams = max_concurrent_streams
        self._limit = min(max_concurrent_streams, 100)  # the server's, until its SETTINGS say
        self._bodies: dict[int, memoryview] = {}  # request bodies still to send
        self._ended_flow = 0  # consumed on streams that ended, not handed back yet
        self._ended_on = 0  # the last of those streams
        self._budget = float(CONTROL_BURST)
        self._budget_at: float | None = None
        self.goaway: int | None = None  # last_stream_id of the server's GOAWAY
        self.error: str = ""  # why the connection failed; "" while it is healthy
        self.completed = 0  # streams that got their whole response
        self.raised = False  # the server raised its stream limit: queued transfers may go

    def __repr__(self) -> str:
        state = "FAILED" if self.error else "GOAWAY" if self.goaway is not None else "OPEN"
        return f"<Http2 {state} streams={len(self._streams)} completed={self.completed}>"

    # --- questions ---------------------------------------------------------------------

    @property
    def streams(self) -> int:
        """Streams of ours still running."""
        return len(self._streams)

    @property
    def accepting(self) -> bool:
        """May new streams be opened (no GOAWAY, no error, stream ids left)?"""
        return (
            not self.error and self.goaway is None and self._h2.highest_outbound_stream_id <= _IDS
        )

    @property
    def free_slots(self) -> int:
        """How many more streams may be opened now (ours and the server's limit)."""
        if self.error or self.goaway is not None or self._h2.highest_outbound_stream_id > _IDS:
            return 0
        return max(self._limit - len(self._streams), 0)

    @property
    def finished(self) -> bool:
        """Nothing more will happen on this connection: close it."""
        return not self._streams and not self.accepting

    # --- requests ----------------------------------------------------------------------

    def open_stream(
        self,
        method: str,
        scheme: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> int:
        """Send a request's HEADERS (and its body as the window allows); its stream id.
        Call only when free_slots > 0."""
        conn = self._h2
        method_b, authority, encoded = _prepared(conn.encoder, method, scheme, target, headers)
        stream_id = conn.get_next_available_stream_id()
        conn.send_request(stream_id, method_b, authority, encoded, not body)
        self._streams.add(stream_id)
        if body:
            self._bodies[stream_id] = memoryview(body)
            self._pump_bodies()
        return stream_id

    def reset(self, stream_id: int) -> None:
        """Cancel one stream (the transfer went away); the others go on."""
        if stream_id not in self._streams:
            return
        self._streams.discard(stream_id)
        self._bodies.pop(stream_id, None)
        if self.error:
            return
        try:
            self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        except h2.exceptions.H2Error:
            pass  # already closed on h2's side: nothing to cancel

    def consumed(self, stream_id: int, flow: int) -> None:
        """The application took `flow` bytes of `stream_id`: reopen that much window. For a
        stream that ended there is only the connection's: handed back once for all the
        streams that ended, before the next bytes go out (h2 sends the WINDOW_UPDATE when
        half the window is taken either way)."""
        if flow and not self.error:
            if stream_id in self._streams:
                self._h2.acknowledge_received_data(flow, stream_id)
            else:
                self._ended_flow += flow
                self._ended_on = stream_id

    @property
    def unsent(self) -> bool:
        """Frames wait for data_to_send()."""
        if self._ended_flow:
            self._ack_ended()
        return bool(self._h2._data_to_send)

    def data_to_send(self) -> bytes:
        if self._ended_flow:
            self._ack_ended()
        return self._h2.data_to_send()

    def _ack_ended(self) -> None:
        flow, self._ended_flow = self._ended_flow, 0
        if not self.error:  # h2 gives a stream that is gone nothing: the connection only
            self._h2.acknowledge_received_data(flow, self._ended_on)

    def close(self) -> None:
        """Say GOAWAY (a polite close of an idle connection); nothing more is opened."""
        if not self.error and self._h2.state_machine.state is not (
            h2.connection.ConnectionState.CLOSED
        ):
            self._h2.close_connection()
        self.error = self.error or "closed"

    # --- what the server said ----------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the socket; the events for our streams, in order."""
        if self.error:
            return []
        try:
            raw = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            return self._fail(f"HTTP/2 protocol error: {exc}")
        out: list[Event] = []
        pump = False
        for event in raw:
            kind = type(event)
            handler = _HANDLERS.get(kind)
            if handler is not None:
                handler(self, event, out)
            elif kind is h2.events.WindowUpdated:
                pump = True
            elif kind is h2.events.RemoteSettingsChanged:
                pump = True
                remote = self._h2.remote_settings.max_concurrent_streams
                limit = min(self._max_streams, remote)
                self.raised = self.raised or limit > self._limit
                self._limit = limit
        control, self._h2.control = self._h2.control, 0
        if control and not self._charge(control, now):
            return out + self._fail(
                "HTTP/2 flood: too many control frames (PING, SETTINGS, RST_STREAM)",
                ErrorCodes.ENHANCE_YOUR_CALM,
            )
        if pump and self._bodies:
            self._pump_bodies()
        return out

    def connection_lost(self, reason: str) -> list[Event]:
        """The socket closed or failed: every stream still running ends, as libcurl says."""
        if not self.error:
            self.error = reason
        out: list[Event] = [
            StreamReset(
                sid,
                Code.HTTP2,  # PARTIAL_FILE once body bytes came: the stream decides
                f"HTTP/2 stream {sid} was not closed cleanly before end of the underlying "
                f"connection ({reason})",
                False,
                True,
            )
            for sid in sorted(self._streams)
        ]
        self._streams.clear()
        self._bodies.clear()
        return out

    # --- internals ---------------------------------------------------------------------

    def _on_response(self, event: h2.events.ResponseReceived, out: list[Event]) -> None:
        self._on_head(event.stream_id, event.headers, True, out)

    def _on_info(self, event: h2.events.InformationalResponseReceived, out: list[Event]) -> None:
        self._h2.control += 1  # an endless run of 1xx heads is a flood like any other
        self._on_head(event.stream_id, event.headers, False, out)

    def _on_head(self, sid: int, headers: Headers, final: bool, out: list[Event]) -> None:
        if sid not in self._streams:
            return
        head = _head(headers)
        if isinstance(head, ResponseHead):
            out.append(StreamHead(sid, head, final))
            return
        # libcurl writes the fields of a head without :status as header lines before any
        # status line: its HTTP layer calls that a weird reply (8).
        code = Code.WEIRD_SERVER_REPLY if head is _NO_STATUS else Code.HTTP2_STREAM
        _stream_error(self, sid, f"Invalid HTTP/2 response: {head}", out, code)

    def _on_data(self, event: h2.events.DataReceived, out: list[Event]) -> None:
        sid = event.stream_id
        if sid not in self._streams:  # a stream we cancelled: its bytes still count
            self._h2.acknowledge_received_data(event.flow_controlled_length, sid)
        elif event.stream_ended is None:
            out.append(StreamData(sid, event.data, event.flow_controlled_length))
        else:  # END_STREAM on it: the end goes with the data (h2's StreamEnded then finds
            self._ended(sid)  # the stream gone from ours)
            out.append(StreamData(sid, event.data, event.flow_controlled_length, True))

    def _on_end(self, event: h2.events.StreamEnded, out: list[Event]) -> None:
        sid = event.stream_id
        if sid in self._streams:
            self._ended(sid)
            out.append(StreamEnd(sid))

    def _ended(self, sid: int) -> None:
        """The response on `sid` is complete."""
        self._streams.discard(sid)
        if self._bodies.pop(sid, None) is not None:
            _stop_upload(self, sid)
        self.completed += 1

    def _fail(self, reason: str, code: ErrorCodes | None = None) -> list[Event]:
        """A connection-level error: every stream of ours ends with HTTP2 (16)."""
        if code is not None:
            try:
                self._h2.close_connection(code)
            except h2.exceptions.H2Error:
                pass
        self.error = reason
        out: list[Event] = [
            StreamReset(sid, Code.HTTP2, reason, False) for sid in sorted(self._streams)
        ]
        self._streams.clear()
        self._bodies.clear()
        return out

    def _charge(self, frames: int, now: float) -> bool:
        """Take `frames` from the control-frame budget; False when it ran out."""
        if self._budget_at is not None:
            self._budget = min(
                CONTROL_BURST, self._budget + (now - self._budget_at) * CONTROL_RATE
            )
        self._budget_at = now
        self._budget -= frames
        return self._budget >= 0

    def _pump_bodies(self) -> None:
        """Send request bodies as far as the flow-control windows allow."""
        conn = self._h2
        for sid, body in list(self._bodies.items()):
            while body:
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0:
                    break
                conn.send_data(sid, body[:room].tobytes())
                body = body[room:]
            if body:
                self._bodies[sid] = body
            else:
                del self._bodies[sid]
                conn.end_stream(sid)


def _prepared(
    encoder: Any, method: str, scheme: str, target: str, headers: list[tuple[str, str]]
) -> tuple[bytes, bytes, bytes]:
    """A request's :method, :authority and HPACK-encoded fields: request_block() and the
    encoding done once per distinct head (all but :path), credentials never kept."""
    key = (method, scheme, *headers)
    prepared = _PREPARED.get(key)
    if prepared is None:
        block = request_block(method, scheme, "/", headers)
        fields = cast(_EncodeCache, encoder).fields
        prepared = (block[0][1], block[2][1], fields(block[:3]), fields(block[4:]))
        if not any(name in _PRIVATE_FIELDS for name, _ in block):
            if len(_PREPARED) >= _FIELDS_KEPT:
                _PREPARED.clear()
            _PREPARED[key] = prepared
    method_b, authority, before, after = prepared
    target_b = target.encode("ascii", "replace")
    if not _PATH.fullmatch(target_b):
        raise TransferError(Code.BAD_FUNCTION_ARGUMENT, f"Invalid request: {method!r} {target!r}")
    return method_b, authority, before + _literal_path(target_b) + after


def request_block(
    method: str, scheme: str, target: str, headers: list[tuple[str, str]]
) -> Headers:
    """The HEADERS of a request from HTTP/1.1-shaped parts: Host becomes :authority,
    hop-by-hop headers are dropped, names lower-cased; TransferError(43) for what h2
    must not send."""
    authority = b""
    fields: Headers = []
    for name, value in headers:
        field = _field(name, value)
        lname = field[0]
        if lname == b"host":
            authority = authority or field[1]
        elif lname == b"te":
            if field[1].lower() == b"trailers":
                fields.append((lname, b"trailers"))
        elif lname not in _HOP_BY_HOP:
            fields.append(field)
    method_b = method.encode("ascii", "replace")
    target_b = target.encode("ascii", "replace")
    if not _TOKEN.fullmatch(method_b) or not _PATH.fullmatch(target_b) or not authority:
        raise TransferError(Code.BAD_FUNCTION_ARGUMENT, f"Invalid request: {method!r} {target!r}")
    return [
        (b":method", method_b),
        (b":scheme", scheme.encode("ascii")),
        (b":authority", authority),
        (b":path", target_b),
        *fields,
    ]


def _field(name: str, value: str) -> tuple[bytes, bytes]:
    """(lower-case name, value) as bytes, checked; remembered, credentials excepted."""
    key = (name, value)
    field = _FIELDS.get(key)
    if field is None:
        name_b = name.lower().encode("ascii", "replace")
        value_b = value.encode("latin-1", "replace")
        if not _TOKEN.fullmatch(name_b) or not _VALUE.fullmatch(value_b):
            raise TransferError(
                Code.BAD_FUNCTION_ARGUMENT, f"Invalid request header: {name!r}: {value!r}"
            )
        field = (name_b, value_b)
        if name_b.decode() not in _PRIVATE:
            if len(_FIELDS) >= _FIELDS_KEPT:
                _FIELDS.clear()
            _FIELDS[key] = field
    return field


def _head(headers: Headers) -> ResponseHead | str:
    """The response head, or why it is malformed (RFC 9113 8.2, 8.3.2): h2's inbound
    checks, done here with every distinct (name, value) judged once, and a well-formed
    head of a few fields made once per distinct header list (a server repeats its heads:
    nginx's differ only in Date, once a second). Heads are never changed once made."""
    key = tuple(headers)
    head = _HEADS.get(key)
    if head is not None:
        return head
    made = _check_head(headers)
    if isinstance(made, ResponseHead) and len(key) <= _HEAD_FIELDS_KEPT:
        if len(_HEADS) >= _HEADS_KEPT:
            _HEADS.clear()
        _HEADS[key] = made
    return made


def _check_head(headers: Headers) -> ResponseHead | str:
    status = b""
    fields: Headers = []
    lookup: dict[bytes, bytes] = {}
    seen = _SEEN
    for field in headers:
        name, value = field
        if name[:1] == b":":
            if name != b":status" or status or fields:
                return f"pseudo-header {name!r} misplaced"
            status = value
            continue
        if field not in seen:
            reason = _bad_field(name, value)
            if reason:
                return reason
            if len(seen) >= _FIELDS_KEPT:
                seen.clear()
            seen.add(field)
        fields.append(field)
        if name not in lookup:
            lookup[name] = value
    if len(status) != 3 or not status.isdigit() or status < b"100" or status == b"101":
        return f"bad :status {status!r}" if status or not fields else _NO_STATUS
    return ResponseHead(int(status), "2", "", fields, lookup)


def _bad_field(name: bytes, value: bytes) -> str:
    if not _LOWER_TOKEN.fullmatch(name):
        return f"bad header name {name!r}"
    if not _VALUE.fullmatch(value):
        return f"bad value of header {name.decode()}"
    if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
        return f"connection-specific header {name.decode()}"
    return ""


_NO_STATUS = "no :status"


# --- what ends a stream otherwise, and trailers: rarer than a response's ordinary course ---


def _stream_error(
    conn: Http2, sid: int, text: str, out: list[Event], code: Code = Code.HTTP2_STREAM
) -> None:
    """A malformed response on `sid` (RFC 9113 8.1.1) is a stream error, as nghttp2 treats
    it: RST_STREAM(PROTOCOL_ERROR) unless it is closed already; the other streams go on."""
    conn._streams.discard(sid)
    conn._bodies.pop(sid, None)
    try:
        conn._h2.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
    except h2.exceptions.H2Error:
        pass  # closed already (its END_STREAM came with the trouble)
    out.append(StreamReset(sid, code, text, False))


def _stop_upload(conn: Http2, sid: int) -> None:
    """The whole response came before the whole request body: stop sending it with
    RST_STREAM(STREAM_CLOSED), as libcurl does, else the stream stays half open on both
    sides for good and counts against the server's stream limit (after 100 such, the
    connection broke on the next stream)."""
    try:
        conn._h2.reset_stream(sid, ErrorCodes.STREAM_CLOSED)
    except h2.exceptions.H2Error:
        pass  # the server reset it already


def _on_malformed(conn: Http2, event: _StreamError, out: list[Event]) -> None:
    sid = event.stream_id
    if sid in conn._streams:
        conn._streams.discard(sid)
        conn._bodies.pop(sid, None)
        text = f"Invalid HTTP/2 response on stream {sid}: {event.reason}"
        out.append(StreamReset(sid, Code.HTTP2_STREAM, text, False))


def _on_trailers(conn: Http2, event: h2.events.TrailersReceived, out: list[Event]) -> None:
    """Trailer fields (a HEADERS after the body, with END_STREAM): checked as a head's
    fields, no pseudo-header allowed; handed on as the `name: value` lines libcurl writes
    to the header callback after the body (as for chunked trailers over HTTP/1.1)."""
    sid = event.stream_id
    if sid not in conn._streams:
        return
    lines = []
    for name, value in event.headers:
        reason = "pseudo-header in trailers" if name[:1] == b":" else _bad_field(name, value)
        if reason:
            _stream_error(conn, sid, f"Invalid HTTP/2 trailers: {reason}", out)
            return
        lines.append(b"%s: %s\r\n" % (name, value))
    out.append(StreamTrailers(sid, lines))


def _on_reset(conn: Http2, event: h2.events.StreamReset, out: list[Event]) -> None:
    """RST_STREAM from the server, or h2's own reset of a stream the server broke (a
    WINDOW_UPDATE past 2^31-1 on it): that stream ends, REFUSED_STREAM to be retried."""
    sid = event.stream_id
    if sid not in conn._streams:
        return
    conn._streams.discard(sid)
    conn._bodies.pop(sid, None)
    code = event.error_code
    name = code.name if isinstance(code, ErrorCodes) else str(code)
    if code == ErrorCodes.REFUSED_STREAM and event.remote_reset:
        out.append(StreamReset(sid, Code.HTTP2_STREAM, f"HTTP/2 stream {sid} refused", True))
        return
    if code == ErrorCodes.NO_ERROR and event.remote_reset:  # a close, not a failure (stream.py)
        out.append(StreamReset(sid, Code.OK, f"HTTP/2 stream {sid} reset with NO_ERROR", False))
        return
    text = f"HTTP/2 stream {sid} was not closed cleanly: {name} (err {int(code)})"
    out.append(StreamReset(sid, Code.HTTP2_STREAM, text, False))


def _on_goaway(conn: Http2, event: h2.events.ConnectionTerminated, out: list[Event]) -> None:
    """Streams above last_stream_id were not processed: retried elsewhere, unless the GOAWAY
    carries an error (libcurl 8.23 fails them then, 92); those up to it may finish."""
    last = event.last_stream_id if event.last_stream_id is not None else 0
    conn.goaway = last if conn.goaway is None else min(conn.goaway, last)
    code = event.error_code
    error = "" if not code else code.name if isinstance(code, ErrorCodes) else str(code)
    for sid in sorted(s for s in conn._streams if s > last):
        conn._streams.discard(sid)
        conn._bodies.pop(sid, None)
        why = f"GOAWAY {error} (err {int(code or 0)})" if error else "GOAWAY"
        text = f"HTTP/2 stream {sid} was not processed by the server ({why}, last stream {last})"
        out.append(StreamReset(sid, Code.HTTP2_STREAM, text, not error))


_HANDLERS: dict[type, Callable[[Http2, Any, list[Event]], None]] = {
    h2.events.ResponseReceived: Http2._on_response,
    h2.events.DataReceived: Http2._on_data,
    h2.events.StreamEnded: Http2._on_end,
    h2.events.StreamReset: _on_reset,
    h2.events.InformationalResponseReceived: Http2._on_info,
    h2.events.ConnectionTerminated: _on_goaway,
    h2.events.TrailersReceived: _on_trailers,
    _StreamError: _on_malformed,
}
