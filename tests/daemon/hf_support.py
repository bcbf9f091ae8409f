"""Helpers for the daemon tests: a real HTTP/1.1 keep-alive server and the real daemon.

`Server` is a threaded stdlib server on 127.0.0.1 that counts connections;
`Daemon` wraps `python -m hiperfifo` run as a subprocess with its JSON log
lines in a file. (A module with its own name, so that tests import it rather
than `conftest`, which may exist in other test directories too.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from servers import report_unexpected

WAIT = 20.0  # seconds: the bound on any single wait in these tests


def body_for(path: str, size: int) -> bytes:
    """The deterministic body the server sends for `path`."""
    seed = (path.encode() + b"|") * (size // (len(path) + 1) + 1)
    return seed[:size]


class Handler(BaseHTTPRequestHandler):
    """GET /size/N → N bytes; /hang → never answers; /slow/S → answers after S seconds;
    /drip/N → N KiB, one every 0.25 s; /redirect/N → 302 chain ending at /size/10;
    /status/C → status C; /gate → 16 bytes once server.gate is open; else 16 bytes."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.opened()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.closed()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.note_request(self.path)
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        kind, arg = [*parts, "", ""][:2]
        if kind == "hang":
            self.server.stopping.wait(WAIT * 3)
            self.close_connection = True
            return
        if kind == "drip":
            self._drip(int(arg))
            return
        if kind == "slow":
            self.server.stopping.wait(float(arg))
        if kind == "gate":
            self.server.wait_for_gate()
        if kind == "redirect" and int(arg) > 0:
            self._send(302, b"", [("Location", f"/redirect/{int(arg) - 1}")])
            return
        status = int(arg) if kind == "status" else 200
        size = int(arg) if kind == "size" else 10 if kind == "redirect" else 16
        self._send(status, body_for(self.path, size))

    def _drip(self, chunks: int) -> None:
        """1 KiB every 0.25 s, `chunks` times, with a Content-Length."""
        self.send_response(200)
        self.send_header("Content-Length", str(1024 * chunks))
        self.end_headers()
        for _ in range(chunks):
            self.wfile.write(b"d" * 1024)
            self.wfile.flush()
            if self.server.stopping.wait(0.25):
                return

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def report_errors(server: object, expected: tuple[type[BaseException], ...]) -> None:
    """For socketserver's handle_error: an exception not in `expected` fails the test
    (tests/conftest.py reads what servers.report_unexpected recorded)."""
    exc = sys.exc_info()[1]
    if exc is not None and not isinstance(exc, expected):
        report_unexpected(server, exc)


class Server(ThreadingHTTPServer):
    """The test server: counts connections open at once (and the peak) and requests."""

    daemon_threads = True
    # clients that hang up early (timeouts, aborts) are expected; anything else fails the test
    expected_errors: tuple[type[BaseException], ...] = (ConnectionError,)
    request_queue_size = 1024

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.stopping = threading.Event()
        self.gate = threading.Event()  # /gate requests wait until it is set
        self.gate.set()
        self._lock = threading.Lock()
        self.open_now = 0
        self.peak = 0
        self.connections = 0
        self.requests: list[str] = []

    def opened(self) -> None:
        with self._lock:
            self.open_now += 1
            self.connections += 1
            self.peak = max(self.peak, self.open_now)

    def closed(self) -> None:
        with self._lock:
            self.open_now -= 1

    def wait_for_gate(self) -> None:
        while not self.gate.wait(0.05) and not self.stopping.is_set():
            pass

    def note_request(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)

    def handle_error(self, request: Any, client_address: Any) -> None:
        report_errors(self, self.expected_errors)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class Daemon:
    """A running `python -m hiperfifo` with its FIFO and its JSON log lines."""

    def __init__(self, proc: subprocess.Popen[bytes], fifo: Path, log: Path) -> None:
        self.proc = proc
        self.fifo = fifo
        self.log = log

    def lines(self) -> list[str]:
        """Complete log lines so far (a line still being written is left out)."""
        if not self.log.exists():
            return []
        text = self.log.read_text(encoding="utf-8")
        return text[: text.rfind("\n") + 1].splitlines()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every complete log line parsed as JSON (only those of `name` if given)."""
        found = []
        for line in self.lines():
            event = json.loads(line)
            if name is None or event["event"] == name:
                found.append(event)
        return found

    def wait_for(self, name: str, count: int = 1, timeout: float = WAIT) -> list[dict[str, Any]]:
        """Wait until `count` `name` events are logged; fail with the log tail if not."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            found = self.events(name)
            if len(found) >= count:
                return found
            if exited or time.monotonic() > deadline:
                tail = "\n".join(self.lines()[-10:])
                raise AssertionError(f"{len(found)}/{count} {name} after {timeout}s:\n{tail}")
            time.sleep(0.02)

    def wait_for_match(self, name: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        """Wait until a `name` event with these field values is logged; return the first."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            for event in self.events(name):
                if all(event.get(k) == v for k, v in fields.items()):
                    return event
            if exited or time.monotonic() > deadline:
                tail = "\n".join(self.lines()[-10:])
                raise AssertionError(f"no {name} with {fields} after {timeout}s:\n{tail}")
            time.sleep(0.02)

    def write(self, data: bytes) -> None:
        """One writer: open the FIFO, write everything, close."""
        fd = os.open(self.fifo, os.O_WRONLY)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> int:
        """The exit status, within `timeout` seconds."""
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode()


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without any HIPERFIFO_* of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIPERFIFO_")}
    env.update(extra or {})
    return env


def spawn(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hiperfifo", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=daemon_env(env),
        cwd=cwd,
    )


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of `size` mounted at `path` (root only; the test is skipped otherwise)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the filesystem is full."""
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)


def url_list(server: Any, path: str, count: int, first: int = 0) -> list[str]:
    """`count` distinct URLs of `path` on `server` (?n=first, ?n=first+1, ...)."""
    return [server.url(f"{path}?n={i}") for i in range(first, first + count)]


def lines(urls: list[str]) -> bytes:
    """URLs as FIFO input, one a line."""
    return "".join(f"{url}\n" for url in urls).encode()


def url_lines(server: Any, path: str, count: int, first: int = 0) -> bytes:
    """url_list() as FIFO input."""
    return lines(url_list(server, path, count, first))


def status_kib(pid: int, field: str) -> int:
    """A /proc/PID/status size in KiB: "VmHWM" (peak RSS), "VmRSS"..."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


SD_ACTIVATE = 'export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=urls; exec "$@"'


def activated(fd: int, args: list[str]) -> subprocess.Popen[bytes]:
    """`python -m hiperfifo args` with `fd` as its fd 3 and LISTEN_PID/LISTEN_FDS set, as
    systemd's socket activation does (bash moves the fd: dash allows fds 0-9 only)."""
    move = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "
    return subprocess.Popen(
        ["bash", "-c", move + SD_ACTIVATE, "bash", sys.executable, "-m", "hiperfifo", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=daemon_env(),
        pass_fds=(fd,),
    )
