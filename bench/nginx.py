"""A private loopback nginx for the benchmark: one worker, keep-alive, no access log.

Serves, from a temporary directory:
  /1k     1 KiB
  /64m    64 MiB
  /slow/  16 KiB at 1,280 bytes/s (limit_rate, from the first byte): ~10 s a transfer
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SIZES = {"1k": 1024, "64m": 64 * 1024 * 1024, "slow/": 16 * 1024}
SLOW_RATE = 1280  # bytes/s; nginx lets the first second through at once: ~10 s a transfer
WORKER_CONNECTIONS = 16384  # scale: 5,000 client sockets + headroom, one fd each
INSTALL_HINT = (
    "nginx is not installed: the benchmark needs Debian's nginx "
    "(sudo apt-get install -y nginx-light curl)"
)

CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{
    worker_connections {connections};
    multi_accept on;
}}

http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 1000000000;
    keepalive_time 24h;
    types {{ }}
    default_type application/octet-stream;
    etag off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    server {{
        listen 127.0.0.1:{port} backlog=8192;
        root {prefix}/www;
        location /slow/ {{
            index index.bin;
            limit_rate {rate};
            limit_rate_after 0;
        }}
    }}
}}
"""


def binary() -> str | None:
    """The nginx executable, or None when it is not installed."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def version() -> str:
    exe = binary()
    if exe is None:
        return "not installed"
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().split("/", 1)[-1]


def _nofile() -> int:
    """As many descriptors as the worker may have: the hard limit, unless root may lift it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 2 * WORKER_CONNECTIONS
    return want if hard == resource.RLIM_INFINITY else min(want, hard)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """Start with `with Nginx() as server:`; `server.url("1k")` is a URL it serves."""

    def __init__(self) -> None:
        exe = binary()
        if exe is None:
            raise SystemExit(INSTALL_HINT)
        self.exe = exe
        self.port = _free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="hiperfifo-bench-nginx-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> Nginx:
        try:
            self._write_files()
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_files(self) -> None:
        www = self.prefix / "www"
        (www / "slow").mkdir(parents=True)
        (self.prefix / "tmp").mkdir()
        (www / "1k").write_bytes(b"k" * SIZES["1k"])
        (www / "slow" / "index.bin").write_bytes(b"s" * SIZES["slow/"])
        block = os.urandom(1 << 20)
        with open(www / "64m", "wb") as f:
            for _ in range(SIZES["64m"] >> 20):
                f.write(block)
        for path in (self.prefix, www, www / "slow"):
            path.chmod(0o755)  # a root master hands requests to an unprivileged worker
        is_root = os.geteuid() == 0
        (self.prefix / "nginx.conf").write_text(
            CONFIG.format(
                prefix=self.prefix,
                port=self.port,
                nofile=_nofile(),
                connections=WORKER_CONNECTIONS,
                rate=SLOW_RATE,
                user="user root;" if is_root else "",
            )
        )

    def _start(self) -> None:
        conf = str(self.prefix / "nginx.conf")
        cmd = [self.exe, "-p", str(self.prefix), "-e", str(self.prefix / "error.log"), "-c"]
        check = subprocess.run([*cmd, conf, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise SystemExit(f"nginx rejected its configuration:\n{check.stderr}")
        self.proc = subprocess.Popen(
            [*cmd, conf], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"nginx exited at start: {self.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"nginx did not listen on port {self.port}: {self.error_log()}")

    def error_log(self) -> str:
        try:
            return (self.prefix / "error.log").read_text()[-2000:]
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """The worker processes (children of the master), for CPU accounting."""
        if self.proc is None:
            return []
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)
