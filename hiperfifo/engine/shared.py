"""A connection that carries several transfers at once: HTTP/2 streams on one socket.

Owns one Connection (socket and TLS) and its Http2 protocol state, and the
table stream id -> the transfer on that stream. The multi announces its fd
once for all its streams (the PollSet owner is this object, not a
transfer) and calls `on_ready()` when the socket is ready: it reads (up to a
budget), hands each event to its stream's transfer, and sends what the
protocol wants sent. It never closes its socket: `finished` tells the lease
to (POLL_REMOVE first). A socket error or EOF ends every stream still on it
(PARTIAL_FILE or HTTP2, as libcurl 8.23 says), never only the transfer that happened to be
reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from hiperfifo.engine.codes import POLL_IN, POLL_INOUT
from hiperfifo.engine.connection import Connection
from hiperfifo.engine.http2_events import Event, StreamData, StreamEnd, StreamReset

if TYPE_CHECKING:
    from hiperfifo.engine.http2 import Http2

READ_BUDGET = (
    1 << 20
)  # bytes read per readiness event, so one busy connection cannot starve others


class StreamUser(Protocol):
    """What a transfer on a stream answers to."""

    easy: Any  # the application's Easy (for the socket callback)
    handle: Any  # its Handle (handle.py): options in, getinfo out

    def on_stream(self, event: Event) -> None: ...


class Shared:
    """One HTTP/2 connection and the transfers on its streams."""

    __slots__ = ("_announced", "_users", "conn", "h2", "idle_since", "opened_at", "origin")

    def __init__(self, conn: Connection, max_streams: int, now: float) -> None:
        self.conn = conn
        self.origin = conn.origin
        from hiperfifo.engine.http2 import Http2  # h2 is imported once a connection speaks it

        self.h2: Http2 = Http2(max_streams)
        self._users: dict[int, StreamUser] = {}
        self._announced = 0  # the stream whose easy the socket callback was given
        self.opened_at = now
        self.idle_since = now
        conn.queue(self.h2.data_to_send())

    def __repr__(self) -> str:
        scheme, host, port, _tls = self.origin
        fd = self.conn.sock.fileno()
        state = "CLOSED" if fd < 0 else f"fd={fd}"
        return f"<Shared {scheme}://{host}:{port} {state} {self.h2!r}>"

    # --- questions ---------------------------------------------------------------------

    @property
    def fd(self) -> int:
        return self.conn.fd

    @property
    def free_slots(self) -> int:
        return self.h2.free_slots

    @property
    def streams(self) -> int:
        return len(self._users)

    @property
    def finished(self) -> bool:
        """No stream left and none will be opened: close it."""
        return self.h2.finished

    @property
    def unsent(self) -> bool:
        """Bytes wait to go out: on the socket, or in h2 (streams opened since the last
        flush(), which encrypts and sends them together)."""
        return bool(self.conn.outbuf) or self.h2.unsent

    def wanted(self) -> dict[int, int]:
        """fd -> POLL_*: watched while a stream runs, not while idle (libcurl S5)."""
        if not self._users:
            return {}
        return {self.conn.fd: POLL_INOUT if self.unsent else POLL_IN}

    def easy(self) -> Any:
        """The easy given with this socket to the socket callback: one still running."""
        users = self._users
        user = users.get(self._announced)
        if user is None:
            if not users:
                return None
            self._announced, user = next(iter(users.items()))
        return user.easy

    # --- streams -----------------------------------------------------------------------

    def open(
        self,
        user: StreamUser,
        method: str,
        scheme: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> int:
        """Start a request on a new stream; its id. Call only with free_slots > 0."""
        stream_id = self.h2.open_stream(method, scheme, target, headers, body)
        self._users[stream_id] = user
        return stream_id  # its frames wait in h2 for flush(): one TLS record for them all

    def cancel(self, stream_id: int) -> None:
        """The transfer on `stream_id` went away (finished early, failed, removed)."""
        if self._users.pop(stream_id, None) is not None:
            self.h2.reset(stream_id)
            self._flush_quietly()

    def consumed(self, stream_id: int, flow: int) -> None:
        self.h2.consumed(stream_id, flow)

    # --- I/O ---------------------------------------------------------------------------

    def on_ready(self, view: memoryview, now: float) -> list[StreamUser]:
        """Read and dispatch what arrived, send what is due; the transfers that got events."""
        touched: dict[StreamUser, None] = {}
        budget = READ_BUDGET
        conn = self.conn
        while budget > 0 and not self.h2.error:
            try:
                data = conn.read(view)
            except OSError as exc:
                self._dispatch(self.h2.connection_lost(exc.strerror or str(exc)), touched)
                break
            if data is None:
                break
            if not data:
                self._dispatch(self.h2.connection_lost("Connection closed"), touched)
                break
            self._dispatch(self.h2.receive(data, now), touched)
            budget -= len(data)
        self._flush(touched)
        if not self._users:
            self.idle_since = now
        return list(touched)

    def flush(self) -> list[StreamUser]:
        """Send what is queued; the transfers that failed because the socket did."""
        touched: dict[StreamUser, None] = {}
        self._flush(touched)
        return list(touched)

    def revive(self, view: memoryview, now: float) -> bool:
        """An idle connection about to be reused: take what the server sent meanwhile
        (SETTINGS, PING, GOAWAY) and say whether it still takes streams."""
        self.on_ready(view, now)
        return self.h2.free_slots > 0

    def close(self) -> None:
        """A polite GOAWAY before the lease closes the socket (best effort, never blocks)."""
        self.h2.close()
        self._flush_quietly()

    # --- internals ---------------------------------------------------------------------

    def _flush(self, touched: dict[StreamUser, None]) -> None:
        conn = self.conn
        pending = self.h2.data_to_send()
        try:
            if pending:
                conn.queue(pending)  # TLS encrypts here: a dead session raises (ssl.SSLError)
            conn.flush()
        except OSError as exc:
            self._dispatch(self.h2.connection_lost(exc.strerror or str(exc)), touched)

    def _flush_quietly(self) -> None:
        """Send without failing anyone now: a broken socket shows at the next read."""
        pending = self.h2.data_to_send()
        try:
            if pending:
                self.conn.queue(pending)
            self.conn.flush()
        except OSError:
            pass

    def _dispatch(self, events: list[Event], touched: dict[StreamUser, None]) -> None:
        users = self._users
        for event in events:
            user = users.get(event.stream_id)
            if user is None:
                continue
            if isinstance(event, StreamData):
                if event.end:  # the stream is over: forget it
                    del users[event.stream_id]
            elif type(event) is StreamEnd or type(event) is StreamReset:
                del users[event.stream_id]
            touched[user] = None
            user.on_stream(event)
