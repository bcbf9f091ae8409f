"""One non-blocking TCP connection and its HTTP/1.1 state; the connect attempts before it.

A Connection answers questions (`is_alive()`, `is_reusable()`) and moves
bytes when told the socket is ready; it never waits. `OSError` from the
socket is the caller's to map, except in the TLS handshake, which maps its
own failures (SSL_CONNECT_ERROR). Closing goes through the multi, which
announces POLL_REMOVE first.
"""

from __future__ import annotations

import select
import socket
from typing import Any, Final

from hiperfifo.engine.codes import Code, TransferError, caused
from hiperfifo.engine.http1 import Http1
from hiperfifo.engine.tls import TlsSession

Origin = tuple[str, str, int, str]  # (scheme, host, port, TLS profile: "" for plain http)
# A non-blocking socket with nothing to give or take now (compiled: one static tuple, not
# two builtins looked up and a tuple made at each except).
_AGAIN: Final = (BlockingIOError, InterruptedError)


class Connection:
    """A connected socket to one origin, reusable across requests (keep-alive)."""

    __slots__ = (
        "_local_port",
        "_peer",
        "_poller",
        "http",
        "last_used",
        "origin",
        "outbuf",
        "released_in",
        "requests",
        "sock",
        "tls",
        "tls_eof",
    )

    def __init__(
        self, origin: Origin, sock: socket.socket, now: float, tls: TlsSession | None = None
    ) -> None:
        self.origin = origin
        self.sock = sock
        self.tls = tls
        self._peer: tuple[str, int] | None = None  # asked once per connection, not per request
        self._local_port: int | None = None
        self.tls_eof = False  # the peer ended the TLS stream after the plaintext we returned
        self.http = Http1()
        self.requests = 0
        self.last_used = now
        self.released_in = -1  # the multi's API call that last put it back in the pool
        self.outbuf: bytes | memoryview = b""  # to send: bytes, the rest of a short send a view
        self._poller: Any = None  # a select.poll on our socket, made when first asked

    def __repr__(self) -> str:
        scheme, host, port, _tls = self.origin
        fd = self.sock.fileno()
        state = "CLOSED" if fd < 0 else f"fd={fd}"
        return f"<Connection {scheme}://{host}:{port} {state} requests={self.requests}>"

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    @property
    def reused(self) -> bool:
        """True when an earlier request completed on this connection."""
        return self.http.cycles > 0

    def peer(self) -> tuple[str, int]:
        """The remote address, or ("", 0) if the socket lost it (reset under our feet)."""
        if self._peer is None:
            try:
                name = self.sock.getpeername()
                self._peer = (str(name[0]), int(name[1]))
            except OSError:
                return "", 0
        return self._peer

    def local_port(self) -> int:
        if self._local_port is None:
            try:
                self._local_port = int(self.sock.getsockname()[1])
            except OSError:
                return 0
        return self._local_port

    def queue(self, plaintext: bytes) -> None:
        """Queue request bytes (encrypted first on a TLS connection)."""
        raw = self.tls.encrypt(plaintext) if self.tls is not None else plaintext
        self.outbuf = bytes(self.outbuf) + raw if self.outbuf else raw

    def queue_raw(self, raw: bytes) -> None:
        if raw:
            self.outbuf = bytes(self.outbuf) + raw if self.outbuf else raw

    def read(self, view: memoryview) -> bytes | None:
        """Plaintext received now; b"" at end of stream; None when nothing is ready.

        Raises OSError for the socket's errors. On TLS it reads until a record
        yields plaintext or the socket runs dry, so no decrypted byte is left
        waiting for a readiness event that will not come.
        """
        tls = self.tls
        if self.tls_eof:
            return b""
        while True:
            try:
                n = self.sock.recv_into(view)
            except _AGAIN:
                return None
            if tls is None:
                return view[:n].tobytes()
            if n == 0:
                tls.feed_eof()
            else:
                tls.feed(view[:n])
            plaintext, closed = tls.decrypt()
            self.queue_raw(tls.take_outgoing())
            if plaintext or closed or n == 0:
                self.tls_eof = bool(plaintext) and (closed or n == 0)
                return plaintext

    def readable_now(self) -> bool:
        """Has the peer sent something (or closed, or failed) already? One poll(2) that
        does not wait: a read that finds nothing costs a raised BlockingIOError, this
        does not. (The poll object watches our socket for the connection's life.)"""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def flush(self) -> bool:
        """Send what is queued; True when everything went out. Raises OSError."""
        outbuf = self.outbuf
        while outbuf:
            try:
                sent = self.sock.send(outbuf)
            except _AGAIN:
                return False
            # all of it, most of the time: no view made (a short send keeps one on the rest)
            outbuf = self.outbuf = memoryview(outbuf)[sent:] if sent < len(outbuf) else b""
        return True

    def handshake(self, view: memoryview) -> bool:
        """Advance the TLS handshake as far as the socket allows; True when it is done."""
        tls = self.tls
        assert tls is not None
        try:
            while True:
                done = tls.handshake()
                self.queue_raw(tls.take_outgoing())
                if not self.flush():
                    return False
                if done:
                    return True
                n = self.sock.recv_into(view)
                if n == 0:
                    raise TransferError(
                        Code.SSL_CONNECT_ERROR, "Connection closed in the TLS handshake"
                    )
                tls.feed(view[:n])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise caused(TransferError(Code.SSL_CONNECT_ERROR, f"TLS connect error: {exc}"), exc)

    def is_alive(self) -> bool:
        """A pooled connection is usable if the server has neither closed it nor spoken:
        nothing to read (poll(2): a readable socket holds unexpected bytes, an EOF or an
        error, all unusable; a peeking recv would raise BlockingIOError for a live one)."""
        return not self.readable_now()

    def is_reusable(self) -> bool:
        return self.http.reusable()
