"""What an HTTP/2 connection tells its streams: the per-stream events of engine/http2.py.

Apart from http2.py so that the rooms which match on them (shared.py, stream.py,
transfer.py) import no h2: `import hiperfifo.engine` stays free of h2/hpack/hyperframe
(~40% of the engine's start-up) until a connection speaks HTTP/2 (Shared imports
Http2 when it is made).
"""

from __future__ import annotations

from typing import NamedTuple

from hiperfifo.engine.codes import Code
from hiperfifo.engine.http1 import ResponseHead


class StreamHead(NamedTuple):
    """A response head on `stream_id`: final, or an informational (1xx) one."""

    stream_id: int
    head: ResponseHead
    final: bool


class StreamData(NamedTuple):
    """Body bytes on `stream_id`; pass `flow` to consumed() once they are taken. `end`: the
    response is complete with them (END_STREAM came on their DATA frame): no StreamEnd
    follows (one event less per response)."""

    stream_id: int
    data: bytes
    flow: int
    end: bool = False


class StreamTrailers(NamedTuple):
    """Trailer fields after the body on `stream_id`, as `name: value` lines with CRLF (what
    libcurl writes to the header callback), just before its StreamEnd."""

    stream_id: int
    lines: list[bytes]


class StreamEnd(NamedTuple):
    """The response on `stream_id` is complete."""

    stream_id: int


class StreamReset(NamedTuple):
    """`stream_id` ended without its response: `retry` when the server never processed it,
    `lost` when the connection itself went away under it (closed, or failed)."""

    stream_id: int
    code: Code
    text: str
    retry: bool
    lost: bool = False


Event = StreamHead | StreamData | StreamTrailers | StreamEnd | StreamReset
