"""Real HTTP proxies for the tests: proxy.py (installed by pip with the dev extra) and
Debian's tinyproxy where it is installed, behind one interface.

Both forward plain HTTP (absolute-URI requests) and tunnel CONNECT, listen on
127.0.0.1 on a port of their own choosing, and keep a log in which every
request line they received appears as sent (`GET http://host:port/path
HTTP/1.1`, `CONNECT host:port HTTP/1.1`). `PROXY_KINDS` parametrizes a fixture
over both; tinyproxy's parameter is skipped, naming its Debian package, where
it is not installed. Each proxy is a child process: `stop()` ends it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

import pytest

TESTS = Path(__file__).resolve().parent
START_WAIT = 20.0  # seconds a proxy may take to listen on a loaded machine


class RealProxy(Protocol):
    """What the tests use of a proxy, whichever it is."""

    name: str
    port: int

    @property
    def url(self) -> str: ...

    def log(self) -> str: ...

    def stop(self) -> None: ...


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class ProxyPy:
    """proxy.py (pip `proxy.py` 2.4) in its own process, one worker, ephemeral port.

    Its request lines come from tests/proxy_log_plugin.py, loaded as a plugin.
    """

    name = "proxy.py"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "requests.log"
        self.log_path.touch()
        port_file = workdir / "port"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
        env["HIPERFIFO_TEST_PROXY_LOG"] = str(self.log_path)
        for name in ("http_proxy", "https_proxy", "all_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            env.pop(name, None)  # the proxy itself goes direct
        with open(workdir / "proxy.py.out", "wb") as out:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [
                    sys.executable, "-m", "proxy",
                    "--hostname", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
                    "--num-workers", "1", "--num-acceptors", "1",
                    "--plugins", "proxy_log_plugin.RequestLog",
                    "--log-level", "WARNING", "--timeout", "30",
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=workdir,
            )  # fmt: skip
        self.port = 0
        deadline = time.monotonic() + START_WAIT
        while True:
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text.isdigit() and _listening(int(text)):
                self.port = int(text)
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                output = (workdir / "proxy.py.out").read_text(errors="replace")
                raise RuntimeError(f"proxy.py did not start:\n{output}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        _stop(proc)


TINYPROXY_CONFIG = (
    "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\n"
    "DisableViaHeader Yes\nLogLevel Info\n"
)


def tinyproxy_binary() -> str | None:
    """Debian's tinyproxy, if installed (on PATH: /usr/bin)."""
    return shutil.which("tinyproxy")


class TinyProxy:
    """Debian's tinyproxy on 127.0.0.1 with a private config; it logs each request line."""

    name = "tinyproxy"

    def __init__(self, workdir: Path, attempts: int = 3) -> None:
        binary = tinyproxy_binary()
        if binary is None:
            raise RuntimeError("tinyproxy is not installed (Debian package: tinyproxy)")
        self.workdir = workdir
        self.log_path = workdir / "tinyproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        for _ in range(attempts):  # tinyproxy cannot take port 0: pick one, retry if taken
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            config = workdir / "tinyproxy.conf"
            config.write_text(TINYPROXY_CONFIG.format(port=self.port))
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [binary, "-d", "-c", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + START_WAIT
            while self.proc.poll() is None and time.monotonic() < deadline:
                if _listening(self.port):
                    return
                time.sleep(0.02)
            self.stop()
        raise RuntimeError(f"tinyproxy did not start:\n{self.log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        _stop(proc)


PROXY_KINDS = [
    pytest.param("proxy.py", id="proxy.py"),
    pytest.param(
        "tinyproxy",
        id="tinyproxy",
        marks=pytest.mark.skipif(
            tinyproxy_binary() is None,
            reason="tinyproxy is not installed (Debian package: tinyproxy)",
        ),
    ),
]


def start_proxy(kind: str, workdir: Path) -> RealProxy:
    """Start the proxy of that kind ("proxy.py" or "tinyproxy") in `workdir`."""
    if kind == "tinyproxy":
        return TinyProxy(workdir)
    return ProxyPy(workdir)
