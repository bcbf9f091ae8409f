"""What the issue-4 engine tests (TLS, redirects, encodings, proxies) add to tests/servers.py.

The threaded core (`Server`, `Peer`, `Request`, TLS handshakes recorded as
`tls_errors`, `sni`, `alpn`) is servers.py's. Here: `HttpServer`, whose
`app(request)` returns the exact response bytes; byte-level response helpers;
handlers that hold, answer once or relay in tiny pieces; a gzip bomb. Real
proxies are tests/proxies.py's.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable

from servers import POLL_INTERVAL, HTTPServer, Peer, Request, _Stopped, response_head

App = Callable[[Request], "bytes | None"]  # the exact response bytes; None: close unanswered


class HttpServer(HTTPServer):
    """Keep-alive HTTP/1.1 whose every request is recorded, then answered by `app`."""

    def __init__(self, app: App, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        super().__init__(default=self._answer, ssl_context=ssl_context)

    def _answer(self, request: Request, peer: Peer) -> bool:
        """Send what `app` says; keep the connection unless it says Connection: close."""
        answer = self.app(request)
        if answer is None or not peer.send(answer):
            return False
        return b"\r\nconnection: close\r\n" not in (
            answer.partition(b"\r\n\r\n")[0].lower() + b"\r\n"
        )


def response(
    status: int = 200,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    *,
    reason: str = "Whatever",
    length: int | None = None,
) -> bytes:
    """An HTTP/1.1 response with a Content-Length (`length` to lie about it)."""
    size = len(body) if length is None else length
    return response_head(status, reason, [("Content-Length", str(size)), *headers]) + body


def hold(peer: Peer) -> None:
    """A handler that reads what comes (a ClientHello, a request) and never answers."""
    peer.hold()


def answer_once(data: bytes) -> Callable[[Peer], None]:
    """A handler that waits for the client's first bytes, sends `data`, and closes."""

    def handler(peer: Peer) -> None:
        if peer.recv():
            peer.send(data)

    return handler


def gzip_of_zeros(size: int, *, wbits: int = 16 + zlib.MAX_WBITS) -> bytes:
    """`size` zero bytes, compressed in 1 MiB steps so the test never holds them whole."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(1 << 20)
    parts = [
        compressor.compress(block[: min(len(block), size - done)])
        for done in range(0, size, len(block))
    ]
    return b"".join(parts) + compressor.flush()


def relay(upstream_port: int, *, piece: int = 7, pause: float = 0.0005) -> Callable[[Peer], None]:
    """A handler forwarding to 127.0.0.1:`upstream_port`, the answers cut into tiny pieces.

    The client then sees TLS records (handshake included) split across many reads.
    """

    def handler(peer: Peer) -> None:
        with socket.create_connection(("127.0.0.1", upstream_port), timeout=5) as upstream:
            upstream.settimeout(POLL_INTERVAL)
            pump = threading.Thread(target=_forward, args=(peer, upstream), daemon=True)
            pump.start()
            try:
                while not peer.server.stopping.is_set():
                    try:
                        data = upstream.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        return
                    for start in range(0, len(data), piece):
                        if not peer.send(data[start : start + piece]):
                            return
                        time.sleep(pause)
            finally:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_RDWR)
                pump.join(5)

    return handler


def _forward(peer: Peer, upstream: socket.socket) -> None:
    """Client to upstream, as it comes, until either side ends."""
    try:
        while data := peer.recv():
            upstream.sendall(data)
        upstream.shutdown(socket.SHUT_WR)
    except (_Stopped, OSError):
        pass
