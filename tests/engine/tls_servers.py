"""Real local servers for the issue-4 engine tests: TLS, redirects, encodings, proxies.

`Server` listens on 127.0.0.1 port 0 and runs `handler(peer)` in a thread per
connection, optionally behind a server-side TLS context (the handshake runs in
that thread, its failures are recorded, never raised). `HttpServer` parses each
request with an h11 SERVER peer, records it, and sends the exact bytes its
`app(request)` returns. `TinyProxy` runs Debian's tinyproxy on a private config.
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
from dataclasses import dataclass
from pathlib import Path

import h11

POLL = 0.05  # how often a blocked server thread looks at the stop flag


class _Stopped(Exception):
    """The server is shutting down."""


@dataclass(frozen=True)
class Request:
    """One request as an h11 SERVER peer parsed it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]  # names lower-cased
    body: bytes
    client_port: int

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)


class Peer:
    """One accepted connection, seen from the server."""

    def __init__(self, sock: socket.socket, server: Server) -> None:
        self.sock = sock
        self.server = server
        self.client_port = sock.getpeername()[1]
        self.buffer = b""

    def recv(self) -> bytes:
        """The next bytes (b"" on EOF or error), waiting as long as the server runs."""
        while True:
            if self.server.stopping.is_set():
                raise _Stopped
            try:
                return self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return b""

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def hold(self) -> None:
        """Say nothing more; read and drop until the client closes."""
        while self.recv():
            pass

    def read_request(self) -> Request | None:
        """One whole request, or None when the client closed (or sent garbage) first."""
        conn = h11.Connection(h11.SERVER)
        if self.buffer:  # h11 takes b"" as end of stream
            conn.receive_data(self.buffer)
        head: h11.Request | None = None
        body = b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return None
            if event is h11.NEED_DATA:
                conn.receive_data(self.recv())
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                self.buffer = conn.trailing_data[0]
                return Request(
                    method=head.method.decode(),
                    target=head.target.decode(),
                    headers=tuple((k.decode(), v.decode()) for k, v in head.headers),
                    body=body,
                    client_port=self.client_port,
                )
            else:
                return None


class Server:
    """A threaded TCP (or TLS) server on 127.0.0.1 running `handler(peer)` per connection."""

    def __init__(
        self,
        handler: Callable[[Peer], None],
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(POLL)
        self.port: int = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.accepted = 0
        self.requests: list[Request] = []
        self.tls_errors: list[str] = []  # server-side view of failed handshakes
        self.alpn: list[str | None] = []  # protocol chosen on each TLS connection
        self.sni: list[str | None] = []  # server name the client sent, per handshake
        self.errors: list[BaseException] = []  # a broken handler: tests assert it stays empty
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        if ssl_context is not None:
            ssl_context.sni_callback = self._on_sni
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} 127.0.0.1:{self.port} accepted={self.accepted}>"

    def url(self, path: str = "/", *, host: str = "127.0.0.1", scheme: str = "") -> str:
        scheme = scheme or ("https" if self.ssl_context else "http")
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        """Stop accepting, cut every connection, join every thread."""
        self.stopping.set()
        self._acceptor.join(5)
        self.listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(5)

    def _on_sni(self, _obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        with self._lock:
            self.sni.append(name)

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _addr = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        conn: socket.socket = sock
        try:
            if self.ssl_context is not None:
                conn = self._handshake(sock)
            conn.settimeout(POLL)
            self.handler(Peer(conn, self))
        except (_Stopped, OSError):
            pass
        except Exception as exc:
            self.errors.append(exc)
        finally:
            conn.close()
            sock.close()

    def _handshake(self, sock: socket.socket) -> socket.socket:
        assert self.ssl_context is not None
        sock.settimeout(5)
        try:
            tls = self.ssl_context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with self._lock:
                self.tls_errors.append(str(exc))
            raise _Stopped from exc
        with self._lock:
            self._socks.append(tls)
            self.alpn.append(tls.selected_alpn_protocol())
        return tls


App = Callable[[Request], "bytes | None"]  # the exact response bytes; None: close unanswered


class HttpServer(Server):
    """Keep-alive HTTP/1.1 over `Server`: each request is recorded, then answered by `app`."""

    def __init__(self, app: App, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        super().__init__(self._keep_alive, ssl_context=ssl_context)

    def _keep_alive(self, peer: Peer) -> None:
        while (request := peer.read_request()) is not None:
            with self._lock:
                self.requests.append(request)
            answer = self.app(request)
            if answer is None or not peer.send(answer):
                return
            if b"\r\nconnection: close\r\n" in answer.partition(b"\r\n\r\n")[0].lower() + b"\r\n":
                return


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
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {size}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(chunks: Iterable[bytes], headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A 200 response in chunked transfer coding, one chunk per item."""
    lines = ["HTTP/1.1 200 OK", "Transfer-Encoding: chunked"]
    lines += [f"{name}: {value}" for name, value in headers]
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    for chunk in chunks:
        out += b"%x\r\n%s\r\n" % (len(chunk), chunk)
    return out + b"0\r\n\r\n"


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


def free_port() -> int:
    """A port nothing listens on right now (bound, noted, closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
            self.port = free_port()
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
            upstream.settimeout(POLL)
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
