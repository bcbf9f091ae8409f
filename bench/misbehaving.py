"""Small local HTTP servers for the soak: one good, and one per way of misbehaving.

Each `Server` listens on 127.0.0.1, port 0, and runs one thread per
connection: it reads a request head, then lets its behaviour answer (exact
bytes, a reset, silence, a trickle ...); the behaviour says whether to read
the next request on the same connection. `close()` stops everything without
waiting on a client. Self-contained (the test suite has its own servers).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable

Behaviour = Callable[["Peer"], bool]  # answers one request; True: keep the connection


class Peer:
    """One accepted connection, seen from a behaviour."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def sleep(self, seconds: float) -> bool:
        """Wait; False when the server is closing."""
        return not self.stop.wait(seconds)

    def hold(self) -> None:
        """Say nothing more until the client goes away or the server closes."""
        self.sock.settimeout(0.5)
        while not self.stop.is_set():
            try:
                if not self.sock.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def reset(self) -> None:
        """Close with an RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class Server:
    """`Server(behaviour)`; `.url("/x")` is a URL it answers; `.close()` when done."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = self.listener.getsockname()[1]
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        peer = Peer(conn, self.stop)
        buf = b""
        try:
            while not self.stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf.partition(b"\r\n\r\n")[2]  # GET only: no request body
                if not self.behaviour(peer):
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def head(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def respond(
    body: bytes,
    *,
    status: int = 200,
    reason: str = "OK",
    extra: list[tuple[str, str]] | None = None,
    then: str = "keep",
) -> Behaviour:
    """A Content-Length answer; then "keep" the connection or "hangup" (close, unannounced)."""
    data = head(status, reason, [("Content-Length", str(len(body))), *(extra or [])]) + body
    return lambda peer: peer.send(data) and then == "keep"


def raw(data: bytes, *, then: str = "keep", delay: float = 0.0) -> Behaviour:
    """Exact bytes; then "keep", "close" (FIN), "reset" (RST) or "hold" (say nothing more)."""

    def behave(peer: Peer) -> bool:
        peer.send(data)
        if delay:
            peer.sleep(delay)
        if then == "reset":
            peer.reset()
        elif then == "hold":
            peer.hold()
        return then == "keep"

    return behave


def silent(peer: Peer) -> bool:
    """Reads the request and never says a word."""
    peer.hold()
    return False


def huge_headers(total: int = 1_000_000, line: int = 1000) -> Behaviour:
    pad = "x" * (line - 20)
    fields = [(f"X-Pad-{i:06d}", pad) for i in range(total // line)]
    return raw(head(200, "OK", [("Content-Length", "2"), *fields]) + b"ok", then="hold")


def trickle(body: bytes, interval: float) -> Behaviour:
    """Headers at once, then the body one byte every `interval` seconds (slow loris)."""

    def behave(peer: Peer) -> bool:
        if not peer.send(head(200, "OK", [("Content-Length", str(len(body)))])):
            return False
        return all(peer.sleep(interval) and peer.send(body[i : i + 1]) for i in range(len(body)))

    return behave


def good() -> Server:
    return Server(respond(b"k" * 1024))


def bad() -> list[tuple[str, Server]]:
    """(name, server) of every misbehaviour, each a fresh local server."""
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    reset = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    return [
        ("reset", Server(raw(reset, then="reset", delay=0.05))),
        ("truncated", Server(raw(truncated, then="close"))),
        ("silent", Server(silent)),
        ("garbage", Server(raw(b"HTXP/9 abc\r\n\r\n", then="close"))),
        ("headers", Server(huge_headers())),
        ("loop", Server(respond(b"", status=302, reason="Found", extra=[("Location", "/loop")]))),
        ("extra", Server(raw(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcXX"))),
        ("chunks", Server(raw(chunked, then="close"))),
        ("stale", Server(respond(b"first", then="hangup"))),
        ("trickle", Server(trickle(b"x" * 50, interval=1.0))),
    ]
