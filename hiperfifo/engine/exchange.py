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

from hiperfifo.engine.codes import POLL_IN, POLL_OUT, Code, TransferError
from hiperfifo.engine.connection import Connection
from hiperfifo.engine.easy import Easy
from hiperfifo.engine.response import Response

READ_BUDGET = 1 << 20  # bytes read from one socket per run, so one fast peer cannot starve others


class Stale(TransferError):
    """The request died on a reused connection before any byte of its response."""


class Exchange:
    """One HTTP/1.1 request/response cycle on `conn`."""

    __slots__ = ("conn", "response", "sent")

    def __init__(self, conn: Connection, response: Response, easy: Easy) -> None:
        """Ready to carry a request on `conn` (the caller queues its bytes); its getinfo."""
        self.conn = conn
        self.response = response
        self.sent = False
        easy.primary_ip, easy.primary_port = conn.peer()
        easy.local_port = conn.local_port()
        easy.http_version = "1.1"

    def send(self) -> bool:
        """Send what the socket takes; True once the whole request is out."""
        conn = self.conn
        try:
            if not conn.flush():
                return False
        except OSError as exc:
            raise self._failed(Code.SEND_ERROR, f"Send failure: {exc.strerror or exc}") from exc
        conn.requests += 1
        self.sent = True
        return True

    def wanted(self) -> dict[int, int]:
        return {self.conn.fd: POLL_IN if self.sent else POLL_OUT}

    def receive(self, view: memoryview) -> bool:
        """Read and deliver what has come (READ_BUDGET at most); True once the response ended."""
        conn = self.conn
        http = conn.http
        budget = READ_BUDGET
        while budget > 0:
            try:
                data = conn.read(view)
            except OSError as exc:
                raise self._failed(
                    Code.RECV_ERROR, f"Recv failure: {exc.strerror or exc}"
                ) from exc
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
