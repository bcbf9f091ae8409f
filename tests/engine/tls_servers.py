"""What the issue-4 engine tests (TLS, redirects, encodings, proxies) add to tests/servers.py.

The threaded core (`Server`, `Peer`, `Request`, TLS handshakes recorded as
`tls_errors`, `sni`, `alpn`) is servers.py's. Here: `HttpServer`, whose
`app(request)` returns the exact response bytes; byte-level response helpers;
handlers that hold, answer once or relay in tiny pieces; a gzip bomb; and
`TinyProxy`, Debian's tinyproxy on a private config.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from servers import POLL_INTERVAL, HTTPServer, Peer, Request, _Stopped, closed_port, response_head

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


class TinyProxy:
    """Debian's tinyproxy on 127.0.0.1 with a private config; `port` once started."""

    CONFIG = (
        "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\n"
        "DisableViaHeader Yes\nLogLevel Info\n"
    )

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("tinyproxy") is not None or Path("/usr/bin/tinyproxy").exists()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.workdir / "tinyproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, attempts: int = 3) -> None:
        """Start on a free port and wait until it accepts connections (retry if taken)."""
        for _ in range(attempts):
            self.port = closed_port()
            config = self.workdir / "tinyproxy.conf"
            config.write_text(self.CONFIG.format(port=self.port))
            with open(self.workdir / "tinyproxy.log", "wb") as log:
                self.proc = subprocess.Popen(
                    [self.binary, "-d", "-c", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_listening(5.0):
                return
            self.stop()
        raise RuntimeError(f"tinyproxy did not start:\n{self.log()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            time.sleep(0.02)
        return False


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
