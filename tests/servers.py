"""Real local servers for the engine tests: exact bytes, exact closes (urllib3 socket-level style).

Each server listens on a loopback address with port 0 and runs one thread per
accepted connection, optionally behind a server-side TLS context (the handshake
runs in that thread; its failures, the SNI and the ALPN protocol are recorded).
It counts what it saw (connections accepted, open at once, at most at once)
and parses every request with an h11 SERVER peer, so tests can assert what the
client wrote. `close()` shuts everything down without waiting on a client; the
fixtures in conftest.py call it. tests/engine/tls_servers.py builds on this core.
"""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
import ssl
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import h11
import trustme

HELLO = b"hello, world\n"  # the body of the standard test server's "/"
POLL_INTERVAL = 0.05  # how often blocked server threads look at the stop flag
Route = Callable[["Request", "Peer"], bool]  # returns True to keep the connection open


_unexpected: list[str] = []  # every test server's unexpected exceptions, formatted
_unexpected_lock = threading.Lock()


def report_unexpected(server: object, exc: BaseException) -> None:
    """Record that a test server raised what it did not expect; the test then fails.

    Every server the tests start reports here (this core, hf_support's stdlib
    servers); tests/conftest.py fails the running test with these tracebacks.
    """
    text = f"{server!r} raised in a handler:\n" + "".join(traceback.format_exception(exc))
    with _unexpected_lock:
        _unexpected.append(text)


def take_unexpected() -> list[str]:
    """The unexpected server exceptions reported since the last call (and forget them)."""
    with _unexpected_lock:
        taken = list(_unexpected)
        _unexpected.clear()
    return taken


class _Stopped(Exception):
    """The server is shutting down: unwind the connection thread."""


@dataclass(frozen=True)
class Request:
    """One request as the h11 SERVER peer parsed it."""

    method: str
    target: str
    http_version: str
    headers: tuple[tuple[str, str], ...]  # names lower-cased by h11, in the order sent
    body: bytes
    client_port: int

    def header(self, name: str) -> str | None:
        """The first value of header `name`, or None."""
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


class Peer:
    """One accepted connection seen from the server: read requests, write exact bytes, close."""

    def __init__(self, sock: socket.socket, server: Server) -> None:
        self.sock = sock
        self.server = server
        self.client_port = sock.getpeername()[1]
        self._buffer = b""
        self._closed = False

    def recv(self) -> bytes:
        """The next bytes from the client; b"" on EOF or reset."""
        while True:
            if self.server.stopping.is_set():
                raise _Stopped
            try:
                return self.sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                return b""

    def read_request(self) -> Request | None:
        """Parse one whole request (body included); None if the client closed first."""
        conn = h11.Connection(h11.SERVER)
        if self._buffer:  # what the last request left over; never b"", which h11 takes as EOF
            conn.receive_data(self._buffer)
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
                self._buffer = conn.trailing_data[0]
                request = Request(
                    method=head.method.decode(),
                    target=head.target.decode(),
                    http_version=head.http_version.decode(),
                    headers=tuple((k.decode(), v.decode()) for k, v in head.headers),
                    body=body,
                    client_port=self.client_port,
                )
                self.server.record(request)
                return request
            else:  # ConnectionClosed or PAUSED with nothing usable
                return None

    def send(self, data: bytes) -> bool:
        """Write all of `data`; False if the client has gone."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def sleep(self, seconds: float) -> None:
        """Wait, but give up at once when the server stops."""
        if self.server.stopping.wait(seconds):
            raise _Stopped

    def hold(self) -> None:
        """Keep the connection open, reading and discarding, until the client closes it."""
        while self.recv():
            pass

    def close(self) -> None:
        """Close normally (FIN, as long as nothing unread is left)."""
        if not self._closed:
            self._closed = True
            self.sock.close()

    def reset(self) -> None:
        """Close with RST: SO_LINGER (1, 0), then close."""
        if not self._closed:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close()


class Gauge:
    """Connections open at once, over one or more servers.

    A connection counts as closed as soon as its FIN or RST has arrived, not
    when its thread notices: each new connection first sweeps the open ones
    with a non-blocking MSG_PEEK. The client closes before it connects again,
    so a sweep at accept time never counts a connection the client let go.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.peak = 0

    @property
    def active(self) -> int:
        with self._lock:
            self._sweep()
            return len(self._open)

    def opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._sweep()
            self._open.add(sock)
            self.peak = max(self.peak, len(self._open))

    def closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _sweep(self) -> None:
        for sock in list(self._open):
            if _at_eof(sock):
                self._open.discard(sock)


def _at_eof(sock: socket.socket) -> bool:
    """Has the peer closed (FIN or RST)? Never blocks, never consumes data."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        # MSG_DONTWAIT: the connection's own thread may read the bytes between the select
        # and this peek; a plain recv would then wait for the next bytes (seen: a CI run on
        # 3.13 at load 10 stuck here for 10 minutes, past every deadline)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (TimeoutError, BlockingIOError, InterruptedError):
        return False
    except (OSError, ValueError):  # reset, or already closed by its thread
        return True


def _listen(host: str, port: int = 0, *, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on `host` (IPv4 or IPv6), SO_REUSEADDR set, accept() polling."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(backlog)
    except OSError:
        listener.close()
        raise
    listener.settimeout(POLL_INTERVAL)
    return listener


def _accept_loop(
    listener: socket.socket, stopping: threading.Event, accepted: Callable[[socket.socket], None]
) -> None:
    """Hand every new connection to `accepted` until `stopping` is set or the listener closes."""
    while not stopping.is_set():
        try:
            sock, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        accepted(sock)


class Server:
    """A threaded TCP or TLS server on a loopback address: `handler(peer)` per connection."""

    def __init__(
        self,
        handler: Callable[[Peer], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        gauge: Gauge | None = None,
    ) -> None:
        self.handler = handler
        self.gauge = gauge or Gauge()
        self.ssl_context = ssl_context
        self.listener = _listen(host, port)
        self.host = host
        self.port: int = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.accepted = 0  # connections accepted so far
        self.active = 0  # connections whose handler is still running
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []  # unexpected exceptions in handlers
        self.tls_errors: list[str] = []  # server-side view of failed handshakes
        self.sni: list[str | None] = []  # server name the client sent, per handshake
        self.alpn: list[str | None] = []  # protocol chosen on each TLS connection
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []  # every connection, TCP and TLS, for close()
        if ssl_context is not None:
            ssl_context.sni_callback = self._on_sni
        self._acceptor = threading.Thread(
            target=_accept_loop, args=(self.listener, self.stopping, self._start), daemon=True
        )
        self._acceptor.start()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.netloc} accepted={self.accepted} active={self.active}>"
        )

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def peak(self) -> int:
        """Most connections open at once (over every server sharing the gauge)."""
        return self.gauge.peak

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str = "/", *, scheme: str | None = None, host: str | None = None) -> str:
        """The URL of `path` on this server (optionally through another host name)."""
        scheme = scheme or ("https" if self.ssl_context else "http")
        netloc = f"{host}:{self.port}" if host else self.netloc
        return f"{scheme}://{netloc}{path}"

    def record(self, request: Request) -> None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def paths(self) -> list[str]:
        """The targets of the requests received so far, in order."""
        with self._cond:
            return [r.target for r in self.requests]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until `predicate()` (evaluated under the server's lock) is true."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def close(self) -> None:
        """Stop accepting, close every connection, join the threads."""
        self.stopping.set()
        self._acceptor.join(5)
        self.listener.close()
        with self._cond:
            socks = list(self._socks)
        for sock in socks:  # also cuts a handshake short
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(5)

    def _on_sni(self, _obj: object, name: str | None, _context: ssl.SSLContext) -> None:
        with self._cond:
            self.sni.append(name)

    def _start(self, sock: socket.socket) -> None:
        with self._cond:
            self.accepted += 1
            self.active += 1
            self._socks.append(sock)
            self._cond.notify_all()
        self.gauge.opened(sock)
        thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _serve(self, sock: socket.socket) -> None:
        raw = sock
        peer: Peer | None = None
        try:
            sock.settimeout(POLL_INTERVAL)
            if self.ssl_context is not None:
                sock = self._handshake(sock)
            peer = Peer(sock, self)
            self.handler(peer)
        except (_Stopped, OSError, ssl.SSLError):
            pass
        except Exception as exc:  # a broken test server must show, not hang or warn
            self.errors.append(exc)
            report_unexpected(self, exc)
        finally:
            if peer is not None:
                peer.close()
            else:
                sock.close()
            self.gauge.closed(raw)
            with self._cond:
                self.active -= 1
                self._cond.notify_all()

    def _handshake(self, sock: socket.socket) -> ssl.SSLSocket:
        assert self.ssl_context is not None
        sock.settimeout(5)
        try:
            tls = self.ssl_context.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            with self._cond:
                self.tls_errors.append(str(exc))
            raise
        with self._cond:
            self._socks.append(tls)
            self.alpn.append(tls.selected_alpn_protocol())
        tls.settimeout(POLL_INTERVAL)
        return tls


class HTTPServer(Server):
    """A well-behaved HTTP/1.1 keep-alive server whose answer is scripted per path."""

    def __init__(
        self, routes: dict[str, Route] | None = None, *, default: Route | None = None, **kw: object
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.default = default or respond(b"not found", status=404, reason="Not Found")
        super().__init__(self._keep_alive, **kw)  # type: ignore[arg-type]

    def _keep_alive(self, peer: Peer) -> None:
        while True:
            request = peer.read_request()
            if request is None:
                return
            route = self.routes.get(request.target.split("?")[0], self.default)
            if not route(request, peer):
                return


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    """A server-side TLS context presenting `cert`, offering ALPN http/1.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    return context


def tls_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """server_context() for a certificate `ca` issues for `names` (127.0.0.1 and localhost
    when none): every TLS test server, engine or daemon, is built on this."""
    return server_context(ca.issue_cert(*(names or ("127.0.0.1", "localhost"))))


# --- answers: each returns a Route, i.e. (request, peer) -> keep the connection? ---


def response_head(status: int, reason: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """A status line and header block, blank line included."""
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked_response(chunks: Iterable[bytes], headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole 200 response in chunked transfer coding, one chunk per item."""
    out = response_head(200, "OK", [("Transfer-Encoding", "chunked"), *headers])
    for chunk in chunks:
        out += b"%x\r\n%s\r\n" % (len(chunk), chunk)
    return out + b"0\r\n\r\n"


def respond(
    body: bytes = b"hello",
    *,
    status: int = 200,
    reason: str = "OK",
    headers: Sequence[tuple[str, str]] = (),
    delay: float = 0.0,
    then: str = "keep",
) -> Route:
    """A Content-Length answer (no body for HEAD). `then`: "keep", "close"
    (announced with Connection: close) or "hangup" (close right after, unannounced)."""

    def route(request: Request, peer: Peer) -> bool:
        if delay:
            peer.sleep(delay)
        extra = [("Connection", "close")] if then == "close" else []
        head = response_head(
            status, reason, [("Content-Length", str(len(body))), *headers, *extra]
        )
        peer.send(head if request.method == "HEAD" else head + body)
        return then == "keep"

    return route


def echo() -> Route:
    """Answer with the request body."""

    def route(request: Request, peer: Peer) -> bool:
        return respond(request.body, headers=[("Content-Type", "application/octet-stream")])(
            request, peer
        )

    return route


def chunked(chunks: Sequence[bytes], *, headers: Sequence[tuple[str, str]] = ()) -> Route:
    """A chunked answer, one chunk per item."""

    def route(request: Request, peer: Peer) -> bool:
        peer.send(chunked_response(chunks, headers))
        return True

    return route


def until_close(body: bytes) -> Route:
    """A body delimited by closing the connection (no Content-Length, no chunking)."""

    def route(request: Request, peer: Peer) -> bool:
        peer.send(response_head(200, "OK", [("Content-Type", "text/plain")]) + body)
        return False

    return route


def redirect(location: str, status: int = 302) -> Route:
    """A redirect to `location`."""
    return respond(b"", status=status, reason="Found", headers=[("Location", location)])


def raw(data: bytes, *, then: str = "keep", delay: float = 0.0) -> Route:
    """Exact bytes, then "keep" (read the next request), "close" (FIN), "reset" (RST) or
    "hold" (keep the connection open and say nothing more)."""

    def route(request: Request, peer: Peer) -> bool:
        peer.send(data)
        if delay:
            peer.sleep(delay)
        if then == "reset":
            peer.reset()
        elif then == "hold":
            peer.hold()
        return then == "keep"

    return route


def in_pieces(data: bytes, *, size: int = 7, then: str = "hold", pause: float = 0.002) -> Route:
    """Exact bytes in pieces of `size` bytes (TCP_NODELAY, a short pause after each, so the
    client usually reads them apart; it must cope with any split), then `then` as in `raw`:
    by default the connection stays open, as a server that keeps it alive does."""

    def route(request: Request, peer: Peer) -> bool:
        with contextlib.suppress(OSError):
            peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(data), size):
            if not peer.send(data[start : start + size]):
                return False
            peer.sleep(pause)
        return raw(b"", then=then)(request, peer)

    return route


def trickle(body: bytes, *, interval: float) -> Route:
    """Headers at once, then the body one byte every `interval` seconds (slow loris)."""

    def route(request: Request, peer: Peer) -> bool:
        if not peer.send(response_head(200, "OK", [("Content-Length", str(len(body)))])):
            return False
        for i in range(len(body)):
            peer.sleep(interval)
            if not peer.send(body[i : i + 1]):
                return False
        return True

    return route


def huge_headers(total: int = 1_000_000, *, line: int = 1000) -> Route:
    """A complete response whose header block is `total` bytes long."""

    def route(request: Request, peer: Peer) -> bool:
        pad = "x" * (line - 20)
        fields = [(f"X-Pad-{i:06d}", pad) for i in range(total // line)]
        peer.send(response_head(200, "OK", [("Content-Length", "2"), *fields]) + b"ok")
        peer.hold()
        return False

    return route


# --- misbehaving servers ---


def closed_port(host: str = "127.0.0.1") -> int:
    """A port that was bound and closed again: connecting to it is refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def never_answers(**kw: object) -> Server:
    """Accepts, reads the request, and never says a word."""

    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.hold()

    return Server(handler, **kw)  # type: ignore[arg-type]


def answers_with(data: bytes, *, then: str = "close", **kw: object) -> HTTPServer:
    """Answers every request with exact `data`, then does `then` (see `raw`)."""
    return HTTPServer(default=raw(data, then=then), **kw)  # type: ignore[arg-type]


def closes_before_any_byte(**kw: object) -> Server:
    """Reads the whole request, then closes (FIN) without sending anything."""

    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.close()

    return Server(handler, **kw)  # type: ignore[arg-type]


def in_rounds(parties: int) -> Callable[[Peer], None]:
    """A Server handler: keep-alive, and `parties` requests answered at once (each waits
    until that many have arrived), so the answers reach the client together and its loop
    finds every socket ready in one round."""
    barrier = threading.Barrier(parties)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(HELLO), HELLO)

    def handler(peer: Peer) -> None:
        while peer.read_request() is not None:
            with contextlib.suppress(threading.BrokenBarrierError):  # a short round: answer
                barrier.wait(timeout=10)
            if not peer.send(answer):
                return

    return handler


def stale_after_first(body: bytes = b"first", **kw: object) -> HTTPServer:
    """Keep-alive in its headers, but closes each connection right after the first response."""
    return HTTPServer(default=respond(body, then="hangup"), **kw)  # type: ignore[arg-type]


class QuickServer:
    """Keep-alive HTTP/1.1 on several ports, one thread, one selectors loop: every request
    (a GET: no body) is answered at once with HELLO, connections served in the order they
    are ready, so no origin runs ahead for the scheduler's sake. Counts accepted
    connections per port and the request lines per port in the order they came."""

    def __init__(self, ports: int = 1, host: str = "127.0.0.1", delay: float = 0.0) -> None:
        self.delay = delay  # each answer goes out this long after its request came
        self._due: list[tuple[float, socket.socket]] = []
        self.listeners = [_listen(host) for _ in range(ports)]
        self.host = host
        self.ports: list[int] = [sock.getsockname()[1] for sock in self.listeners]
        self.accepted = dict.fromkeys(self.ports, 0)
        self.lines: dict[int, list[bytes]] = {port: [] for port in self.ports}
        self._answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(HELLO), HELLO)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def url(self, index: int, path: str = "/") -> str:
        return f"http://{self.host}:{self.ports[index]}{path}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        for sock in self.listeners:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, (None, sock.getsockname()[1]))
        pending: dict[socket.socket, bytes] = {}
        try:
            while not self._stop.is_set():
                wait = POLL_INTERVAL
                if self._due:
                    wait = max(0.0, min(wait, self._due[0][0] - time.monotonic()))
                for key, _mask in sel.select(wait):
                    conn, port = key.data
                    if conn is None:
                        self._accept(key.fileobj, port, sel)
                    else:
                        self._serve(conn, port, sel, pending)
                self._answer_due()
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()

    def _answer_due(self) -> None:
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            _due, conn = self._due.pop(0)
            with contextlib.suppress(OSError):
                conn.sendall(self._answer)

    def _accept(self, listener: Any, port: int, sel: selectors.BaseSelector) -> None:
        with contextlib.suppress(BlockingIOError):
            conn, _addr = listener.accept()
            conn.setblocking(False)
            self.accepted[port] += 1
            sel.register(conn, selectors.EVENT_READ, (conn, port))

    def _serve(
        self,
        conn: socket.socket,
        port: int,
        sel: selectors.BaseSelector,
        pending: dict[socket.socket, bytes],
    ) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            sel.unregister(conn)
            pending.pop(conn, None)
            conn.close()
            return
        buffer = pending.pop(conn, b"") + data
        *requests, rest = buffer.split(b"\r\n\r\n")
        for request in requests:
            self.lines[port].append(request.split(b"\r\n", 1)[0])
            if self.delay:
                self._due.append((time.monotonic() + self.delay, conn))
            else:
                conn.sendall(self._answer)  # small: fits the socket buffer
        if rest:
            pending[conn] = rest


class HoldServer:
    """Accepts any number of connections on one thread and never reads or answers.

    For the scale tests: thousands of idle connections without thousands of threads.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.listener = _listen(host, backlog=4096)
        self.host = host
        self.port: int = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.stopping = threading.Event()
        self._thread = threading.Thread(
            target=_accept_loop,
            args=(self.listener, self.stopping, self.socks.append),
            daemon=True,
        )
        self._thread.start()

    @property
    def accepted(self) -> int:
        return len(self.socks)

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.stopping.set()
        self._thread.join(5)
        self.listener.close()
        for sock in self.socks:
            sock.close()
        self.socks.clear()


class Blackhole:
    """A port where connect() never completes: a listener with a full accept queue.

    Linux drops the SYN when the accept queue is full, so the client stays in
    SYN_SENT until its own timeout, which is how a firewalled host looks.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.listener = _listen(host, port, backlog=0)
        self.host = host
        self.port: int = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        self._fill(self.listener.family)

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        for sock in self.fillers:
            sock.close()
        self.listener.close()

    def _fill(self, family: int) -> None:
        for _ in range(16):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            self.fillers.append(sock)
            with contextlib.suppress(BlockingIOError):
                sock.connect((self.host, self.port))
            if not self._completes(sock):
                return
        raise RuntimeError("could not fill the accept queue")

    @staticmethod
    def _completes(sock: socket.socket, wait: float = 0.1) -> bool:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_WRITE)
            return bool(sel.select(wait))


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `predicate` until it is true or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
