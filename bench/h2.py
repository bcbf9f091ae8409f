"""HTTP/2 over TLS, side by side: `python -m bench.h2 [--count N] [--inflight K] [--runs R]`.

One private nginx (Debian's, http_v2, one worker, TLS with a throw-away
trustme CA, keepalive_requests 10^9) serves /1k; each contender fetches it
COUNT times, at most INFLIGHT at once, in its own process, and throws the
bodies away through a callback that counts them:

  engine-h2    hiperfifo's engine on its pyuv driver, Easy(http_version="2") (the
               default): one connection (max_host_connections=1), INFLIGHT streams;
               as pycurl-h2, INFLIGHT easy handles, each added again as it finishes
  engine-h1    the same engine forced to HTTP/1.1 (http_version="1.1"): INFLIGHT connections
  pycurl-h2    pycurl's CurlMulti on pyuv through socket_action (hiperfifo.c's shape),
               libcurl + nghttp2, PIPEWAIT, a pool of INFLIGHT easy handles
  aiohttp      HTTP/1.1 only: one ClientSession, TCPConnector(limit=INFLIGHT)
  httpx-h2     AsyncClient(http2=True), INFLIGHT worker tasks

--shape says how the engine and pycurl contenders feed their multi handle
(both the same way, so that they compare):

  reuse    (default) INFLIGHT handles, each added again as it finishes
  fresh    a new handle for each request, added as one finishes (the daemon's way:
           one Easy per URL), at most INFLIGHT at once
  upfront  all COUNT handles made and added at the start; the multi holds the rest
           back (one connection: max_host_connections=1 for both), as an application
           that adds everything it has at once

Clock and CPU (utime + stime of the child, all threads, from /proc) are read
after the child has imported everything and said "ready", and again when it
reports. Every response must be 200 with all its bytes, or the run counts as
failed. Not part of `make test`; self-contained (imports nothing from the
rest of bench/). Numbers on a shared machine are noisy: ratios within one
run only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Result = dict[str, Any]
SHAPES = ("reuse", "fresh", "upfront")
SHAPE_ENV = "HIPERFIFO_BENCH_SHAPE"  # the parent's --shape, to its children


def shape() -> str:
    return os.environ.get(SHAPE_ENV, "reuse")


CONTENDERS = ("engine-h2", "engine-h1", "pycurl-h2", "aiohttp", "httpx-h2")
COMPILED = " compiled"  # --compiled: an engine contender on the mypyc venv's interpreter
NGINX_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    types {{ }}
    default_type application/octet-stream;
    etag off;
    keepalive_timeout 300s;
    keepalive_requests 1000000000;
    client_body_temp_path {prefix}/tmp;
    ssl_certificate {prefix}/cert.pem;
    ssl_certificate_key {prefix}/key.pem;
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        http2_max_concurrent_streams 128;
        root {prefix}/www;
    }}
}}
"""


# --- the contenders (run in the child) ---------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.ok = self.bytes = self.failed = 0
        self.errors: dict[str, int] = {}
        self.protocols: dict[str, int] = {}

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def done(self, status: int, error: str = "", protocol: str = "") -> None:
        self.protocols[protocol] = self.protocols.get(protocol, 0) + 1
        if status == 200 and not error:
            self.ok += 1
        else:
            self.failed += 1
            key = error or f"HTTP {status}"
            self.errors[key] = self.errors.get(key, 0) + 1

    def result(self) -> Result:
        top = sorted(self.errors.items(), key=lambda kv: -kv[1])[:3]
        return {
            "ok": self.ok,
            "bytes": self.bytes,
            "failed": self.failed,
            "errors": [f"{n} x {e}" for e, n in top],
            "protocols": self.protocols,
        }


def engine(url: str, count: int, inflight: int, ca_file: str, version: str) -> Result:
    from hiperfifo.driver import Driver
    from hiperfifo.engine import Code, Easy, Message, Multi

    tally = Tally()
    # At most `inflight` at once, in pycurl-h2's shape: INFLIGHT handles added at the start,
    # each added again as it finishes until COUNT are done (nothing waits in the engine's
    # pending queue, no handle made per request). HTTP/1.1 on as many connections; HTTP/2
    # on one (100 streams, libcurl's default; more connections would be opened once one
    # is full).
    limit = (
        {"max_total_connections": inflight} if version == "1.1" else {"max_host_connections": 1}
    )
    multi = Multi(**limit, max_concurrent_streams=inflight)
    finished = 0
    left = count
    fed = shape()

    def new() -> Easy:
        return Easy(url, write_function=tally.write, ca_file=ca_file, http_version=version)

    def add(easy: Easy) -> None:
        nonlocal left
        left -= 1
        multi.add_handle(easy)

    def on_done(messages: list[Message]) -> None:
        nonlocal finished
        for message in messages:
            easy = message.easy
            multi.remove_handle(easy)
            error = "" if message.result == Code.OK else f"{message.result.name}: {easy.error}"
            tally.done(easy.response_code, error, easy.http_version)
            if left:
                add(easy if fed == "reuse" else new())
        finished += len(messages)
        if finished == count:
            driver.stop()

    driver = Driver(multi, on_done)
    for _ in range(count if fed == "upfront" else min(inflight, count)):
        add(new())
    driver.run()
    multi.close()
    driver.close()
    return tally.result()


def pycurl_h2(url: str, count: int, inflight: int, ca_file: str) -> Result:
    return PycurlH2(url, count, inflight, ca_file).run()


class PycurlH2:
    """hiperfifo.c in Python on libcurl + nghttp2: one Poll per socket, one Timer."""

    def __init__(self, url: str, count: int, inflight: int, ca_file: str) -> None:
        import pycurl
        import pyuv

        self.pycurl, self.pyuv = pycurl, pyuv
        self.url, self.left, self.inflight, self.ca_file = url, count, inflight, ca_file
        self.running = 0
        self.tally = Tally()
        self.loop = pyuv.Loop()
        self.timer = pyuv.Timer(self.loop)
        self.polls: dict[int, Any] = {}
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, inflight)
        self.fed = shape()
        if self.fed == "upfront":  # one connection, as engine-h2's max_host_connections=1
            self.multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self.socket_function)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self.timer_function)
        self.uv = {
            pycurl.POLL_IN: pyuv.UV_READABLE,
            pycurl.POLL_OUT: pyuv.UV_WRITABLE,
            pycurl.POLL_INOUT: pyuv.UV_READABLE | pyuv.UV_WRITABLE,
        }
        self.versions = {pycurl.CURL_HTTP_VERSION_2_0: "2", pycurl.CURL_HTTP_VERSION_1_1: "1.1"}

    def run(self) -> Result:
        first = self.left if self.fed == "upfront" else min(self.inflight, self.left)
        for _ in range(first):
            self.start(self.new())
        self.loop.run()
        self.multi.close()
        return self.tally.result()

    def new(self) -> Any:
        pycurl = self.pycurl
        handle = pycurl.Curl()
        handle.setopt(pycurl.WRITEFUNCTION, self.tally.write)
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.CAINFO, self.ca_file)
        handle.setopt(pycurl.PIPEWAIT, 1)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
        return handle

    def start(self, handle: Any) -> None:
        self.left -= 1
        self.running += 1
        handle.setopt(self.pycurl.URL, self.url)
        self.multi.add_handle(handle)

    def recycle(self, handle: Any, error: str) -> None:
        pycurl = self.pycurl
        version = self.versions.get(handle.getinfo(pycurl.INFO_HTTP_VERSION), "?")
        self.tally.done(handle.getinfo(pycurl.RESPONSE_CODE), error, version)
        self.multi.remove_handle(handle)
        self.running -= 1
        if self.left and self.fed == "reuse":
            self.start(handle)
        else:
            handle.close()
            if self.left:
                self.start(self.new())

    def check(self) -> None:
        while True:
            _queued, ok_list, err_list = self.multi.info_read()
            for handle in ok_list:
                self.recycle(handle, "")
            for handle, errno, message in err_list:
                self.recycle(handle, f"curl {errno}: {message}")
            if not ok_list and not err_list:
                break
        if self.running == 0:
            self.timer.stop()
            for poll in self.polls.values():
                poll.close()
            self.polls.clear()

    def on_poll(self, poll: Any, events: int, error: int | None) -> None:
        pycurl, pyuv = self.pycurl, self.pyuv
        flags = pycurl.CSELECT_ERR if error is not None else 0
        if events & pyuv.UV_READABLE:
            flags |= pycurl.CSELECT_IN
        if events & pyuv.UV_WRITABLE:
            flags |= pycurl.CSELECT_OUT
        self.multi.socket_action(poll.fileno(), flags)
        self.check()

    def on_timeout(self, _timer: Any) -> None:
        self.multi.socket_action(self.pycurl.SOCKET_TIMEOUT, 0)
        self.check()

    def socket_function(self, what: int, fd: int, _multi: Any, _socketp: Any) -> None:
        if what == self.pycurl.POLL_REMOVE:
            poll = self.polls.pop(fd, None)
            if poll is not None:
                poll.stop()
                poll.close()
            return
        poll = self.polls.get(fd)
        if poll is None:
            poll = self.polls[fd] = self.pyuv.Poll(self.loop, fd)
        poll.start(self.uv[what], self.on_poll)

    def timer_function(self, ms: int) -> None:
        if ms < 0:
            self.timer.stop()
        else:
            self.timer.start(self.on_timeout, ms / 1000.0, 0.0)


def aiohttp_h1(url: str, count: int, inflight: int, ca_file: str) -> Result:
    import asyncio
    import ssl

    import aiohttp

    tally = Tally()
    context = ssl.create_default_context(cafile=ca_file)

    async def worker(session: aiohttp.ClientSession, todo: list[int]) -> None:
        while todo:
            todo.pop()
            try:
                async with session.get(url, ssl=context) as response:
                    async for chunk in response.content.iter_any():
                        tally.write(chunk)
                    tally.done(response.status, "", f"{response.version.major}.1")
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                tally.done(0, f"{type(exc).__name__}: {exc}")

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=inflight, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            todo = list(range(count))
            await asyncio.gather(*(worker(session, todo) for _ in range(inflight)))

    asyncio.run(main())
    return tally.result()


def httpx_h2(url: str, count: int, inflight: int, ca_file: str) -> Result:
    import asyncio
    import ssl

    import httpx

    tally = Tally()
    context = ssl.create_default_context(cafile=ca_file)

    async def worker(client: httpx.AsyncClient, todo: list[int]) -> None:
        while todo:
            todo.pop()
            try:
                async with client.stream("GET", url) as response:
                    async for chunk in response.aiter_raw():
                        tally.write(chunk)
                    version = response.http_version.removeprefix("HTTP/")
                    tally.done(response.status_code, "", version)
            except (httpx.HTTPError, OSError) as exc:
                tally.done(0, f"{type(exc).__name__}: {exc}")

    async def main() -> None:
        limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
        async with httpx.AsyncClient(
            http2=True, verify=context, limits=limits, timeout=None
        ) as client:
            todo = list(range(count))
            await asyncio.gather(*(worker(client, todo) for _ in range(inflight)))

    asyncio.run(main())
    return tally.result()


RUNNERS: dict[str, Callable[[str, int, int, str], Result]] = {
    "engine-h2": lambda u, n, k, ca: engine(u, n, k, ca, "2"),
    "engine-h1": lambda u, n, k, ca: engine(u, n, k, ca, "1.1"),
    "pycurl-h2": pycurl_h2,
    "aiohttp": aiohttp_h1,
    "httpx-h2": httpx_h2,
}
IMPORTS = {
    "engine-h2": ("hiperfifo.engine", "hiperfifo.driver"),
    "engine-h1": ("hiperfifo.engine", "hiperfifo.driver"),
    "pycurl-h2": ("pycurl", "pyuv"),
    "aiohttp": ("asyncio", "ssl", "aiohttp"),
    "httpx-h2": ("asyncio", "ssl", "httpx", "h2"),
}


def child(name: str, url: str, count: int, inflight: int, ca_file: str) -> int:
    import importlib

    for module in IMPORTS[name]:
        importlib.import_module(module)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    result = RUNNERS[name](url, count, inflight, ca_file)
    print(json.dumps(result), flush=True)
    sys.stdin.readline()  # "exit": the parent has read our CPU time
    return 0


# --- the parent: nginx, the children, the table --------------------------------------------


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Nginx:
    def __init__(self) -> None:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(exe, os.X_OK):
            raise SystemExit("needs nginx built with http_v2 (Debian package: nginx-light)")
        import trustme

        self.exe = exe
        self.prefix = Path(tempfile.mkdtemp(prefix="hiperfifo-bench-h2-"))
        (self.prefix / "www").mkdir()
        (self.prefix / "tmp").mkdir()
        (self.prefix / "www" / "1k").write_bytes(b"k" * 1024)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(self.prefix / "cert.pem"))
        cert.private_key_pem.write_to_path(str(self.prefix / "key.pem"))
        ca.cert_pem.write_to_path(str(self.prefix / "ca.pem"))
        self.ca_file = str(self.prefix / "ca.pem")
        for path in (self.prefix, self.prefix / "www"):
            path.chmod(0o755)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        user = "user root;" if os.geteuid() == 0 else ""
        conf = self.prefix / "nginx.conf"
        conf.write_text(NGINX_CONFIG.format(prefix=self.prefix, port=self.port, user=user))
        self.proc = subprocess.Popen(
            [
                self.exe,
                "-p",
                str(self.prefix),
                "-e",
                str(self.prefix / "error.log"),
                "-c",
                str(conf),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.close()
        raise SystemExit("nginx did not start")

    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/1k"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        shutil.rmtree(self.prefix, ignore_errors=True)


def measure(
    name: str, server: Nginx, count: int, inflight: int, compiled: str = ""
) -> dict[str, Any]:
    """One contender in its own process; `name` ending in COMPILED runs the engine
    contender of that name on the `compiled` interpreter (make compiled's venv)."""
    python, env = sys.executable, dict(os.environ)
    kind = name
    if name.endswith(COMPILED):
        kind, python = name.removesuffix(COMPILED), compiled
        env["PYTHONSAFEPATH"] = "1"  # the compiled modules, not the tree's hiperfifo/ from cwd
    cmd = [python, "-m", "bench.h2", "--child", kind, server.url(), str(count)]
    cmd += [str(inflight), server.ca_file]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "ready":
            return {"name": name, "status": "did not start"}
        cpu0 = proc_cpu(proc.pid)
        t0 = time.perf_counter()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        wall = time.perf_counter() - t0
        cpu = proc_cpu(proc.pid) - cpu0
        proc.stdin.write("exit\n")
        proc.stdin.close()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not line:
        return {"name": name, "status": "crashed"}
    result = json.loads(line)
    good = result["ok"] == count and not result["failed"] and result["bytes"] == count * 1024
    return {
        "name": name,
        "count": count,
        "status": "ok" if good else "failed: " + "; ".join(result["errors"]),
        "wall": wall,
        "cpu": cpu,
        "protocols": result["protocols"],
    }


def table(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    med: dict[str, tuple[float, float, int]] = {}  # wall and CPU per request, count
    for name, samples in rows.items():
        good = [s for s in samples if s["status"] == "ok"]
        if good:
            count = good[0]["count"]
            med[name] = (
                statistics.median(s["wall"] for s in good) / count,
                statistics.median(s["cpu"] for s in good) / count,
                count,
            )
    out = [
        "| contender | protocol | n | wall s | CPU s | req/s | CPU µs/req "
        "| req/s / engine-h1 | CPU/req / pycurl-h2 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base_rate = 1 / med["engine-h1"][0] if "engine-h1" in med else None
    base_cpu = med["pycurl-h2"][1] if "pycurl-h2" in med else None
    for name, samples in rows.items():
        if name not in med:
            out.append(f"| {name} | | | | | | | | {samples[-1]['status']} |")
            continue
        wall, cpu, count = med[name]
        protocols = ", ".join(f"{p or '?'}: {n}" for p, n in samples[-1]["protocols"].items())
        rate = 1 / wall
        vs_h1 = f"{rate / base_rate:.2f}x" if base_rate else ""
        vs_curl = f"{cpu / base_cpu:.2f}x" if base_cpu else ""
        out.append(
            f"| {name} | {protocols} | {count:,} | {wall * count:.2f} | {cpu * count:.2f} | "
            f"{rate:,.0f} | {cpu * 1e6:.0f} | {vs_h1} | {vs_curl} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.h2", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument(
        "--httpx-count", type=int, default=2_000, help="httpx is ~50x slower: fewer, said so"
    )
    parser.add_argument("--inflight", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default="reuse",
        help="how the engine and pycurl contenders feed their multi (see above)",
    )
    parser.add_argument(
        "--compiled",
        default="",
        metavar="PYTHON",
        help="also run engine-h2 and engine-h1 on this interpreter (make compiled: "
        ".venv-mypyc/bin/python), as 'engine-h2 compiled' and 'engine-h1 compiled'",
    )
    parser.add_argument("--child", nargs=5, metavar=("NAME", "URL", "COUNT", "INFLIGHT", "CA"))
    args = parser.parse_args(argv)
    if args.child:
        name, url, count, inflight, ca = args.child
        return child(name, url, int(count), int(inflight), ca)
    names = [n for n in args.only.split(",") if n]
    if args.compiled:
        if not Path(args.compiled).exists():
            parser.error(f"{args.compiled} is missing: run `make compiled` first")
        names += [n + COMPILED for n in ("engine-h2", "engine-h1") if n in names]
    os.environ[SHAPE_ENV] = args.shape  # the children read it
    server = Nginx()
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        for run in range(args.runs):
            for name in names:
                count = args.httpx_count if name == "httpx-h2" else args.count
                sample = measure(name, server, count, args.inflight, args.compiled)
                rows[name].append(sample)
                wall = sample.get("wall", 0.0)
                print(
                    f"run {run + 1} {name}: {sample['status']} wall {wall:.2f} s "
                    f"cpu {sample.get('cpu', 0.0):.2f} s {sample.get('protocols', '')}",
                    file=sys.stderr,
                )
    finally:
        server.close()
    print(
        f"{args.count:,} x 1 KiB over https (nginx, TLS), at most {args.inflight} at once; "
        f"medians of {args.runs}; httpx-h2 does {args.httpx_count:,}; shape {args.shape}"
    )
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
