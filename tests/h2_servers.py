"""HTTP/2 servers for the tests: the h2 library's server side in a thread, and Debian's nginx.

`H2Server` runs h2's SERVER connection on each accepted socket (TLS with
ALPN h2, or h2c by prior knowledge without a context) and answers each
request with a scripted route that may misbehave on purpose: reset the
stream, send GOAWAY with a low last_stream_id, a header list too large, an
HPACK bomb, an endless CONTINUATION, a PING flood. Routes may answer later
(`peer.later(delay, fn)`), so one connection serves slow and fast streams at
once. Every request is recorded with its stream id and client port.

`H2Nginx` is Debian's nginx (built with http_v2) on 127.0.0.1 with a trustme
certificate; its access log (`$connection $connection_requests
$server_protocol ...`) is the ground truth of which requests shared a
connection. Tests that need it skip, naming the package, when it is missing.
"""

from __future__ import annotations

import heapq
import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hpack
import trustme
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame
from servers import POLL_INTERVAL, Peer, Request, Server, _Stopped, closed_port

NGINX_HINT = "needs nginx built with http_v2 (Debian package: nginx-light)"


@dataclass(frozen=True)
class H2Request(Request):
    """One request as the h2 SERVER peer saw it, with its stream."""

    stream_id: int = 0


H2Route = Callable[["H2Peer", H2Request], None]


class H2Peer:
    """One HTTP/2 connection seen from the server: answer streams now or later, misbehave."""

    def __init__(self, peer: Peer, server: H2Server) -> None:
        self.peer = peer
        self.server = server
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.closed = False
        self.draining = False  # hung up: only reading until the client closes
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._bodies: dict[int, bytearray] = {}
        self._heads: dict[int, list[tuple[bytes, bytes]]] = {}
        self._waiting: dict[int, memoryview] = {}  # response bodies waiting for window
        self.seen: list[int] = []  # streams dispatched on this connection, in order

    # --- what routes call -------------------------------------------------------------

    def respond(
        self,
        stream_id: int,
        body: bytes = b"hello",
        *,
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """A whole response (within the client's windows; bigger bodies wait for them)."""
        fields = [(":status", str(status)), ("content-length", str(len(body))), *(headers or [])]
        self.conn.send_headers(stream_id, fields, end_stream=not body)
        if body:
            self._send_body(stream_id, memoryview(body))
        self.flush()

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Run `action` on this connection's thread after `delay` seconds."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._order), action))

    def reset(self, stream_id: int, code: int = h2.errors.ErrorCodes.INTERNAL_ERROR) -> None:
        self.conn.reset_stream(stream_id, code)
        self.flush()

    def goaway(self, last_stream_id: int, code: int = 0) -> None:
        """GOAWAY, then go on answering the streams up to `last_stream_id`, as nginx does
        (h2's own state machine would refuse to: it is told the connection is still open)."""
        self.conn.close_connection(code, last_stream_id=last_stream_id)
        self.flush()
        self.conn.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN

    def send_raw(self, data: bytes) -> None:
        self.flush()
        self.peer.send(data)

    def hang_up(self) -> None:
        """Close our side (FIN after what was sent), read until the client closes too."""
        self.flush()
        self.draining = True
        try:
            self.peer.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.closed = True

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.peer.send(data):
            self.closed = True

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        self.conn.initiate_connection()
        if self.server.settings:  # right behind the preface; in force once acknowledged
            self.conn.update_settings(dict(self.server.settings))
        self.flush()
        sock = self.peer.sock
        while not self.closed:
            if self.server.stopping.is_set():
                raise _Stopped
            self._run_timers()
            sock.settimeout(self._wait())
            try:
                data = sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                return
            if not data:
                return
            if self.draining:
                continue
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                self.server.protocol_errors.append(str(exc))
                self.flush()
                return
            for event in events:
                self._on_event(event)
            self.flush()

    def _wait(self) -> float:
        if not self._timers:
            return POLL_INTERVAL
        return min(POLL_INTERVAL, max(self._timers[0][0] - time.monotonic(), 0.001))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now and not self.closed:
            _due, _n, action = heapq.heappop(self._timers)
            if self.draining:
                continue
            try:
                action()
            except h2.exceptions.StreamClosedError:
                pass  # the client cancelled that stream meanwhile
            self.flush()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None
            self._heads[event.stream_id] = list(event.headers or [])
            self._bodies[event.stream_id] = bytearray()
            if self.server.opened is not None:
                self.server.opened(self, event.stream_id)
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            self._bodies.setdefault(event.stream_id, bytearray()).extend(event.data or b"")
            self.conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            self._dispatch(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.server.client_resets.append(event.stream_id or 0)
        elif isinstance(event, h2.events.WindowUpdated):
            self._resume_bodies()
        elif isinstance(event, h2.events.PingReceived):
            self.server.pings.append(event.ping_data or b"")
        elif isinstance(event, h2.events.PingAckReceived):
            self.server.ping_acks.append(event.ping_data or b"")
        elif isinstance(event, h2.events.SettingsAcknowledged):
            changed = event.changed_settings or {}
            self.server.settings_acked.append({k: v.new_value for k, v in changed.items()})

    def _dispatch(self, stream_id: int) -> None:
        fields = self._heads.pop(stream_id, [])
        pseudo = {k.decode(): v.decode() for k, v in fields if k.startswith(b":")}
        request = H2Request(
            method=pseudo.get(":method", ""),
            target=pseudo.get(":path", ""),
            http_version="2",
            headers=(
                *((k.decode(), v.decode()) for k, v in fields if not k.startswith(b":")),
                (":authority", pseudo.get(":authority", "")),
            ),
            body=bytes(self._bodies.pop(stream_id, b"")),
            client_port=self.peer.client_port,
            stream_id=stream_id,
        )
        self.server.record(request)
        self.seen.append(stream_id)
        route = self.server.routes.get(request.target.split("?")[0], self.server.default)
        route(self, request)

    # --- bodies larger than the client's window ---------------------------------------

    def _send_body(self, stream_id: int, body: memoryview) -> None:
        conn = self.conn
        while body:
            room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if room <= 0:
                self._waiting[stream_id] = body
                return
            conn.send_data(stream_id, body[:room].tobytes())
            body = body[room:]
        conn.end_stream(stream_id)

    def _resume_bodies(self) -> None:
        waiting = self._waiting
        for stream_id, body in list(waiting.items()):
            del waiting[stream_id]
            try:
                self._send_body(stream_id, body)
            except h2.exceptions.StreamClosedError:
                pass


class H2Server(Server):
    """h2's server side on 127.0.0.1: TLS with ALPN h2 when given a context, else h2c."""

    def __init__(
        self,
        routes: dict[str, H2Route] | None = None,
        *,
        default: H2Route | None = None,
        ssl_context: ssl.SSLContext | None = None,
        settings: dict[int, int] | None = None,
        opened: Callable[[H2Peer, int], None] | None = None,
    ) -> None:
        self.routes: dict[str, H2Route] = dict(routes or {})
        self.settings = dict(settings or {})  # SETTINGS sent right after the preface
        self.opened = opened  # called with each request's stream as its HEADERS arrive
        self.pings: list[bytes] = []  # PINGs the client sent (not its ACKs)
        self.ping_acks: list[bytes] = []  # the client's answers to ours
        self.settings_acked: list[dict[int, int | None]] = []  # our SETTINGS the client took
        self.default = default or answer(b"not found", status=404)
        self.protocol_errors: list[str] = []  # what the client did wrong, as h2 saw it
        self.client_resets: list[int] = []  # streams the client cancelled
        super().__init__(self._serve_h2, ssl_context=ssl_context)

    def _serve_h2(self, peer: Peer) -> None:
        H2Peer(peer, self).run()

    def streams(self) -> list[tuple[int, int, str]]:
        """(client port, stream id, path) of every request so far."""
        with self._cond:
            return [(r.client_port, getattr(r, "stream_id", 0), r.target) for r in self.requests]


def h2_context(ca: trustme.CA, *, alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1/localhost offering `alpn`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    context.set_alpn_protocols(list(alpn))
    return context


# --- routes: each answers one stream (now, later, or by misbehaving) ---


def answer(
    body: bytes = b"hello", *, status: int = 200, headers: list[tuple[str, str]] | None = None
) -> H2Route:
    def route(peer: H2Peer, request: H2Request) -> None:
        peer.respond(request.stream_id, body, status=status, headers=headers)

    return route


def echo() -> H2Route:
    """The request body back, with the request's method in a header."""

    def route(peer: H2Peer, request: H2Request) -> None:
        peer.respond(request.stream_id, request.body, headers=[("x-method", request.method)])

    return route


def slow(body: bytes, delay: float) -> H2Route:
    """Answer after `delay` seconds, while the connection serves other streams."""

    def route(peer: H2Peer, request: H2Request) -> None:
        peer.later(delay, lambda: peer.respond(request.stream_id, body))

    return route


def reset(code: int = h2.errors.ErrorCodes.INTERNAL_ERROR) -> H2Route:
    """RST_STREAM instead of an answer."""

    def route(peer: H2Peer, request: H2Request) -> None:
        peer.reset(request.stream_id, code)

    return route


def goaway_after(count: int, body: bytes = b"hello", *, last_after: float = 0.0) -> H2Route:
    """Answer, but after `count` streams on a connection send GOAWAY(last = the count-th).

    Streams above it are never answered: the client must retry them elsewhere.
    `last_after`: seconds between the GOAWAY and the count-th stream's answer (the client
    reads the GOAWAY while that stream still runs on the connection).
    """

    def route(peer: H2Peer, request: H2Request) -> None:
        seen = peer.seen
        stream_id = request.stream_id
        if len(seen) < count:
            peer.respond(stream_id, body)
        elif len(seen) == count:
            peer.goaway(stream_id)  # before the answer, as nginx does
            if last_after > 0:
                peer.later(last_after, lambda: peer.respond(stream_id, body))
            else:
                peer.respond(stream_id, body)
            peer.later(last_after + 0.2, peer.hang_up)

    return route


def huge_headers(size: int = 150 * 1024) -> H2Route:
    """A header list over the client's limit (in CONTINUATION frames)."""

    def route(peer: H2Peer, request: H2Request) -> None:
        fields = [(":status", "200")] + [(f"x-h{i}", "v" * 1000) for i in range(size // 1000)]
        peer.conn.send_headers(request.stream_id, fields, end_stream=True)
        peer.flush()

    return route


def hpack_bomb(copies: int = 200) -> H2Route:
    """A few hundred bytes that decode to a huge header list (one 4 KB entry, indexed again)."""

    def route(peer: H2Peer, request: H2Request) -> None:
        encoder = hpack.Encoder()
        block = encoder.encode([(b":status", b"200")] + [(b"x-bomb", b"b" * 4000)] * copies)
        frame = HeadersFrame(request.stream_id, block, flags=["END_HEADERS", "END_STREAM"])
        peer.send_raw(frame.serialize())

    return route


def endless_continuation(frames: int = 10_000) -> H2Route:
    """HEADERS without END_HEADERS, then CONTINUATION frames that never end the block."""

    def route(peer: H2Peer, request: H2Request) -> None:
        sid = request.stream_id
        out = [HeadersFrame(sid, hpack.Encoder().encode([(b":status", b"200")])).serialize()]
        out += [ContinuationFrame(sid, b"").serialize()] * frames
        peer.send_raw(b"".join(out))

    return route


def ping_flood(pings: int = 20_000) -> H2Route:
    """Thousands of PINGs and no answer."""

    def route(peer: H2Peer, request: H2Request) -> None:
        frame = PingFrame(0, opaque_data=b"12345678").serialize()
        peer.send_raw(frame * pings)

    return route


# --- Debian's nginx with http_v2 ---


NGINX_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    log_format conns '$connection $connection_requests $server_protocol $status '
                     '$request_uri $body_bytes_sent';
    access_log {prefix}/access.log conns;
    types {{ }}
    default_type application/octet-stream;
    etag off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    ssl_certificate {prefix}/cert.pem;
    ssl_certificate_key {prefix}/key.pem;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        listen 127.0.0.1:{h2c_port} http2;
        root {prefix}/www;
        keepalive_requests 1000;
        location /slow/ {{ limit_rate 65536; }}
        location /trailers/ {{ add_trailer x-checksum "abc123" always; }}
    }}
    server {{
        listen 127.0.0.1:{goaway_port} ssl http2;
        root {prefix}/www;
        keepalive_requests {goaway_after};
    }}
    server {{
        listen 127.0.0.1:{limited_port} ssl http2;
        root {prefix}/www;
        http2_max_concurrent_streams 2;
    }}
}}
"""


@dataclass(frozen=True)
class LogLine:
    connection: int
    connection_requests: int
    protocol: str
    status: int
    uri: str
    bytes_sent: int


class H2Nginx:
    """nginx on four ports: https h2 (`port`), h2c (`h2c_port`), https GOAWAY after N
    (`goaway_port`), https with SETTINGS_MAX_CONCURRENT_STREAMS 2 (`limited_port`)."""

    def __init__(self, ca: trustme.CA, *, goaway_after: int = 10) -> None:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.exe = exe
        self.ca = ca
        self.goaway_after = goaway_after
        self.prefix = Path(tempfile.mkdtemp(prefix="hiperfifo-h2-nginx-"))
        self.port = self.h2c_port = self.goaway_port = self.limited_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(exe, os.X_OK):
            return False
        out = subprocess.run([exe, "-V"], capture_output=True, text=True, check=False)
        return "http_v2_module" in out.stderr

    def url(self, path: str, *, port: int | None = None, scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{port or self.port}{path}"

    def write(self, path: str, body: bytes) -> None:
        target = self.prefix / "www" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        target.chmod(0o644)

    def log(self) -> list[LogLine]:
        """The access log so far (nginx writes each line when the request ends)."""
        path = self.prefix / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        out = []
        for line in lines:
            conn, reqs, proto, status, uri, sent = line.split(" ")
            out.append(LogLine(int(conn), int(reqs), proto, int(status), uri, int(sent)))
        return out

    def wait_log(self, count: int, timeout: float = 10.0) -> list[LogLine]:
        """The log once it has `count` lines (nginx may write the last ones a moment late)."""
        deadline = time.monotonic() + timeout
        lines = self.log()
        while len(lines) < count and time.monotonic() < deadline:
            time.sleep(0.02)
            lines = self.log()
        return lines

    def start(self, attempts: int = 3) -> H2Nginx:
        (self.prefix / "www").mkdir(exist_ok=True)
        (self.prefix / "tmp").mkdir(exist_ok=True)
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.cert_chain_pems[0].write_to_path(str(self.prefix / "cert.pem"))
        cert.private_key_pem.write_to_path(str(self.prefix / "key.pem"))
        for path in (self.prefix, self.prefix / "www"):
            path.chmod(0o755)
        for _ in range(attempts):
            ports = [closed_port() for _ in range(4)]
            self.port, self.h2c_port, self.goaway_port, self.limited_port = ports
            (self.prefix / "nginx.conf").write_text(
                NGINX_CONFIG.format(
                    prefix=self.prefix,
                    port=self.port,
                    h2c_port=self.h2c_port,
                    goaway_port=self.goaway_port,
                    limited_port=self.limited_port,
                    goaway_after=self.goaway_after,
                    user="user root;" if os.geteuid() == 0 else "",
                )
            )
            conf = str(self.prefix / "nginx.conf")
            self.proc = subprocess.Popen(
                [
                    self.exe,
                    "-p",
                    str(self.prefix),
                    "-e",
                    str(self.prefix / "error.log"),
                    "-c",
                    conf,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_listening(10.0):
                return self
            self.stop()
        raise RuntimeError(f"nginx did not start: {self.error_log()}")

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            ready = 0
            ports = (self.port, self.h2c_port, self.goaway_port, self.limited_port)
            for port in ports:
                with socket.socket() as sock:
                    ready += sock.connect_ex(("127.0.0.1", port)) == 0
            if ready == len(ports):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)
