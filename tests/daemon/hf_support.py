"""Helpers for the daemon tests: a real HTTP/1.1 keep-alive server and the real daemon.

`Server` is the daemon tests' HTTP/1.1 keep-alive server (on tests/servers.py's core);
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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from servers import HTTPServer, Peer, Request, report_unexpected, response_head

WAIT = 20.0  # seconds: the bound on any single wait in these tests


def body_for(path: str, size: int) -> bytes:
    """The deterministic body the server sends for `path`."""
    seed = (path.encode() + b"|") * (size // (len(path) + 1) + 1)
    return seed[:size]


def report_errors(server: object, expected: tuple[type[BaseException], ...]) -> None:
    """For a stdlib socketserver's handle_error: an exception not in `expected` fails the
    test (tests/conftest.py reads what servers.report_unexpected recorded)."""
    exc = sys.exc_info()[1]
    if exc is not None and not isinstance(exc, expected):
        report_unexpected(server, exc)


class Server(HTTPServer):
    """The daemon tests' server, on the one server core (tests/servers.py): keep-alive
    HTTP/1.1 on 127.0.0.1, every request recorded, connections counted (`peak`).

    GET /size/N -> N bytes; /hang -> never answers; /slow/S -> answers after S seconds;
    /drip/N -> N KiB, one every 0.25 s; /redirect/N -> 302 chain ending at /size/10;
    /status/C -> status C; /gate -> 16 bytes once `gate` is open; else 16 bytes. Bodies
    are body_for(target, size).
    """

    def __init__(self, **kw: Any) -> None:
        self.gate = threading.Event()  # /gate requests wait until it is set
        self.gate.set()
        super().__init__(default=self._answer, **kw)

    def close(self) -> None:
        self.gate.set()  # held requests end now, not at their next look
        super().close()

    @property
    def server_address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return self.accepted

    @property
    def open_now(self) -> int:
        """Connections open now (closed ones count as closed as soon as their FIN is in)."""
        return self.gauge.active

    def _answer(self, request: Request, peer: Peer) -> bool:
        parts = [p for p in urlsplit(request.target).path.split("/") if p]
        kind, arg = [*parts, "", ""][:2]
        if kind == "hang":
            peer.hold()
            return False
        if kind == "drip":
            return self._drip(peer, int(arg))
        if kind == "slow":
            peer.sleep(float(arg))
        if kind == "gate":
            # one look a second per held request, not twenty: 500 held requests each
            # waking every 50 ms starved the test's own thread of the GIL at load 25-40
            # (a 14-minute stall, pytest-timeout's handler could not run either)
            while not self.gate.wait(1.0):
                peer.sleep(0)  # gives up when the server stops
        if kind == "redirect" and int(arg) > 0:
            return _send(peer, 302, b"", [("Location", f"/redirect/{int(arg) - 1}")])
        status = int(arg) if kind == "status" else 200
        size = int(arg) if kind == "size" else 10 if kind == "redirect" else 16
        return _send(peer, status, body_for(request.target, size))

    @staticmethod
    def _drip(peer: Peer, chunks: int) -> bool:
        """1 KiB every 0.25 s, `chunks` times, with a Content-Length."""
        if not peer.send(response_head(200, "OK", [("Content-Length", str(1024 * chunks))])):
            return False
        for _ in range(chunks):
            if not peer.send(b"d" * 1024):
                return False
            peer.sleep(0.25)
        return True

    # the stdlib server's calls, for tests written against it: the server runs from the start
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.stopping.wait()

    def shutdown(self) -> None:
        self.close()

    def server_close(self) -> None:
        self.close()


def _send(peer: Peer, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> bool:  # type: ignore[assignment]
    reason = {200: "OK", 302: "Found"}.get(status, "Whatever")
    head = response_head(status, reason, [*headers, ("Content-Length", str(len(body)))])
    return peer.send(head + body)


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

    def reap(self) -> None:
        """Teardown: kill the daemon if it still runs, wait for it and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


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
