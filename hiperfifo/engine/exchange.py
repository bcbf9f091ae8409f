"""One request and its response on one connection (curl's request.c, its SingleRequest).

Sends the request's queued bytes and reads the response as the socket
allows, and hands what arrives to the Response. A reused connection that
fails before the first byte of the response (closed, reset, EPIPE, while
sending or while waiting) raises Stale: the server dropped an idle
connection as we reused it, so the transfer may send the request again on
a new connection (libcurl's Curl_retry_request). Every other failure is a
TransferError with libcurl's code. HTTP/2 plugs in here: a stream on a
shared connection with the same calls (send, receive).
"""

from __future__ import annotations

from collections.abc import Callable

from hiperfifo.engine.codes import POLL_IN, POLL_INOUT, Code, TransferError, caused
from hiperfifo.engine.connection import Connection
from hiperfifo.engine.debug import head_out
from hiperfifo.engine.easy import InfoType
from hiperfifo.engine.handle import Handle
from hiperfifo.engine.response import Response

READ_BUDGET = 1 << 20  # bytes read from one socket per run, so one fast peer cannot starve others


class Stale(TransferError):
    """The request died on a reused connection before any byte of its response."""


class Exchange:
    """One HTTP/1.1 request/response cycle on `conn`."""

    __slots__ = ("conn", "ended", "fresh", "response", "sent")

    def __init__(
        self,
        conn: Connection,
        response: Response,
        easy: Handle,
        method: str,
        request: tuple[str, list[tuple[str, str]], bytes | None],
        trace: Callable[[InfoType, str], None] | None = None,
    ) -> None:
        """Queue the request (`method`; `request`: target, headers, body) on `conn`; fill its
        getinfo."""
        self.conn = conn
        self.response = response
        self.sent = False
        self.ended = False  # the response ended while the request was still going out
        self.fresh = False  # the request has just gone out: receive() asks before it reads
        easy.primary_ip, easy.primary_port = conn.peer()
        easy.local_port = conn.local_port()
        easy.http_version_used = "1.1"
        target, headers, body = request
        data = conn.http.request(method, target, headers, body)  # (no *args: a native call)
        conn.queue(data)
        if trace is not None:
            trace(InfoType.HEADER_OUT, head_out(data))

    def send(self, view: memoryview) -> bool:
        """Send what the socket takes; True once the whole request is out, or once the
        server refused it before the end (see _answered_early)."""
        conn = self.conn
        try:
            if not conn.flush():
                return self._answered_early(view)
        except OSError as exc:
            # The server may have answered and closed on the unread rest (a reset): libcurl
            # reads before it writes, so its answer wins over the failed send.
            if self._answered_early(view, any_status=True):
                return True
            raise caused(
                self._failed(Code.SEND_ERROR, f"Send failure: {exc.strerror or exc}"), exc
            )
        conn.requests += 1
        self.sent = self.fresh = True
        return True

    def _answered_early(self, view: memoryview, *, any_status: bool = False) -> bool:
        """The request is not all out: has the server answered already? libcurl reads while
        it sends, and stops sending a request the server answers with a final status of 300
        or more (HTTP error before end of send), closing the connection after the response:
        a server that refuses an upload and stops reading it cannot hold the transfer. A
        1xx or 2xx: keep sending. A close: the response's verdict (what came, or nothing)."""
        conn = self.conn
        try:
            data = conn.read(view)
        except OSError:
            return False  # the next send says what happened
        if data is None:
            return False
        if not data and not conn.http.received and conn.reused:
            raise Stale(Code.SEND_ERROR, "Connection closed while sending the request")
        if self.response.feed(conn.http.receive(data)):
            self.ended = True
        head = self.response.head
        if head is None or (data and head.status < 300 and not any_status):
            return False
        conn.outbuf = b""  # the rest is not sent
        conn.http.abandon()
        conn.requests += 1
        self.sent = True
        return True

    def wanted(self) -> dict[int, int]:
        # While sending, an early answer is read too (libcurl's KEEP_SEND | KEEP_RECV).
        return {self.conn.fd: POLL_IN if self.sent else POLL_INOUT}

    def receive(self, view: memoryview) -> bool:
        """Read and deliver what has come (READ_BUDGET at most); True once the response ended."""
        if self.ended:
            return True
        conn = self.conn
        if self.fresh:
            # The request went out a moment ago: its answer is seldom in yet. Ask first
            # (libcurl 7's Curl_readwrite polled too when no socket event brought it):
            # a read that finds nothing costs a raised BlockingIOError, a poll does not.
            # TLS may hold plaintext already read off the socket: it reads.
            self.fresh = False
            if conn.tls is None and not conn.readable_now():
                return False
        http = conn.http
        budget = READ_BUDGET
        while budget > 0:
            try:
                data = conn.read(view)
            except OSError as exc:
                raise caused(
                    self._failed(Code.RECV_ERROR, f"Recv failure: {exc.strerror or exc}"), exc
                )
            if data is None:
                return False
            if not data and not http.received and conn.reused:
                raise Stale(Code.GOT_NOTHING, "Empty reply from server")
            if self.response.feed(http.receive(data)):
                return True
            if self.response.skip_body and http.will_close:
                # A redirect to follow on a connection that ends with it anyway: its body
                # is not needed, and a server may keep sending it, or hold the connection
                # open, forever (libcurl stops after the head too). The connection is closed.
                return True
            if not data:
                raise TransferError(Code.RECV_ERROR, "Connection closed before the response ended")
            budget -= len(data)
        return False

    def _failed(self, code: Code, text: str) -> TransferError:
        conn = self.conn
        if conn.reused and not conn.http.received:
            return Stale(code, text)
        return TransferError(code, text)
