"""The peer benchmark (issue 6): `make bench`, or `python -m bench.run --help`.

Starts a private loopback nginx (bench/nginx.py), runs every contender as its
own process on each workload, `--runs` times (medians reported), checks that
every response arrived whole, prints one table per workload with the issue's
targets, and writes the tables, the machine and the versions into
bench/README.md. Then profiles the engine on the small workload (bench/profile.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import nginx
from bench.nginx import Nginx

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "bench" / "README.md"
PYTHON = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Workload:
    name: str
    path: str  # on the nginx server
    count: int
    concurrency: int
    cap: float  # seconds one contender may take before it is stopped and reported
    what: str


WORKLOADS = {
    "small": Workload("small", "1k", 20_000, 50, 240, "20,000 x 1 KiB, 50 at once"),
    "bulk": Workload("bulk", "64m", 16, 4, 240, "16 x 64 MiB, 4 at once"),
    "scale": Workload(
        "scale", "slow/", 5_000, 5_000, 120, "5,000 x /slow/ (16 KiB, ~10 s) at once"
    ),
}

CONTENDERS = (
    "engine-selector",
    "engine-pyuv",
    "daemon",
    "pycurl-pyuv",
    "aiohttp",
    "httpx",
    "curl",
)
ENGINES = ("engine-selector", "engine-pyuv")
DESCRIBE = {
    "engine-selector": "hiperfifo.engine on SelectorDriver (stdlib selectors)",
    "engine-pyuv": "hiperfifo.engine on hiperfifo.driver.Driver (pyuv)",
    "daemon": "hiperfifo daemon end to end: URLs into the FIFO, until the last transfer.done",
    "pycurl-pyuv": "pycurl CurlMulti + pyuv via socket_action (hiperfifo.c's shape)",
    "aiohttp": "aiohttp ClientSession, TCPConnector(limit=C), C worker tasks",
    "httpx": "httpx AsyncClient, Limits(max_connections=C), C worker tasks",
    "curl": "curl --parallel --parallel-max C -K urls.cfg, -o /dev/null each",
}
# Contenders too slow for the full count here: fewer requests, said so in the table.
# On scale a reduced count is also the concurrency (all at once).
REDUCED = {("httpx", "small"): 2_000, ("httpx", "scale"): 500}


@dataclass
class Sample:
    """One run of one contender on one workload."""

    status: str  # ok | failed | timeout | error | skipped
    count: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    peak_kib: int = 0
    base_kib: int = 0
    ok: int = 0
    failed: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    note: str = ""
    foreign: float = 0.0  # CPU seconds other processes of the machine used meanwhile
    nginx_cpu: float = 0.0

    @property
    def crowded(self) -> float:
        """Cores the rest of the machine kept busy while this ran (0: we had it alone)."""
        return self.foreign / self.wall if self.wall > 0 else 0.0


# -- /proc readings ---------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system seconds of the process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def proc_status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / TICKS


class Watch:
    """Who else used the CPU while a contender ran: the machine minus us, nginx and it."""

    def __init__(self, nginx_pids: Callable[[], list[int]]) -> None:
        self._nginx_pids = nginx_pids
        self._start = (0.0, 0.0, 0.0)
        self.busy = self.nginx = self.parent = 0.0

    def _read(self) -> tuple[float, float, float]:
        nginx_cpu = 0.0
        for pid in self._nginx_pids():
            try:
                nginx_cpu += proc_cpu(pid)
            except OSError:
                pass
        me = resource.getrusage(resource.RUSAGE_SELF)
        return machine_busy(), nginx_cpu, me.ru_utime + me.ru_stime

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        end = self._read()
        self.busy, self.nginx, self.parent = (b - a for a, b in zip(self._start, end, strict=True))

    def settle(self, limit: float, max_wait: float) -> None:
        """Wait (at most max_wait s) for a second in which others use under `limit` cores."""
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            self.start()
            time.sleep(1.0)
            self.stop()
            if self.busy - self.nginx - self.parent < limit:
                return


WATCH = Watch(lambda: [])
CODE = ROOT  # where contenders import hiperfifo from: a snapshot() during a run
CROWDED = 0.15  # cores used by others during a sample above which it is run again
RETRIES = 1


class Lines:
    """Reads a child's stdout line by line with a deadline (never blocks past it)."""

    def __init__(self, stream: Any) -> None:
        self._fd = stream.fileno()
        os.set_blocking(self._fd, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)
        self._buf = b""
        self.eof = False

    def chunk(self, deadline: float) -> bytes | None:
        """The next bytes read, b"" at EOF, None when the deadline passed."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if self._sel.select(left):
                try:
                    data = os.read(self._fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    self.eof = True
                return data

    def line(self, deadline: float) -> str | None:
        while b"\n" not in self._buf:
            data = self.chunk(deadline)
            if not data:
                return None
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        self._sel.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the contender's process group (it was started in a session of its own)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
    proc.wait()


def _reap(proc: subprocess.Popen[bytes], timeout: float = 30) -> resource.struct_rusage | None:
    """wait4 the child: its own CPU times. (Not its ru_maxrss: Linux carries the forking
    parent's high-water mark across exec, so peak RSS is read from /proc VmHWM instead.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        time.sleep(0.01)
    _kill(proc)
    return None


def _judge(sample: Sample, work: Workload, expected_bytes: int) -> Sample:
    sample.status = "ok"
    if sample.ok != sample.count or sample.failed or sample.bytes != expected_bytes:
        sample.status = "failed"
        sample.note = (
            f"{sample.ok}/{sample.count} ok, {sample.failed} failed, "
            f"{sample.bytes} of {expected_bytes} bytes; " + "; ".join(sample.errors[:3])
        )
    return sample


# -- the contenders ---------------------------------------------------------------------


def run_library(name: str, url: str, count: int, work: Workload, size: int) -> Sample:
    """A contender of bench/clients.py: ready -> go -> result -> exit."""
    cmd = [PYTHON, "-m", "bench.clients", name, url, str(count), str(work.concurrency)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd,
            cwd=CODE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        try:
            if lines.line(time.monotonic() + 60) != "ready":
                return Sample("error", count, note="did not start: " + _tail(err))
            base = proc_status_kib(proc.pid, "VmRSS")
            cpu0 = proc_cpu(proc.pid)
            WATCH.start()
            t0 = time.perf_counter()
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            line = lines.line(time.monotonic() + work.cap)
            wall = time.perf_counter() - t0
            WATCH.stop()
            if line is None:
                note = "crashed: " + _tail(err) if lines.eof else f"stopped after {work.cap:.0f} s"
                return Sample("timeout" if not lines.eof else "error", count, note=note)
            cpu = proc_cpu(proc.pid) - cpu0
            peak = proc_status_kib(proc.pid, "VmHWM")
            result = json.loads(line)
            proc.stdin.write(b"exit\n")
            proc.stdin.close()
            _reap(proc)
        finally:
            lines.close()
            _kill(proc)
    sample = Sample("ok", count, wall, cpu, peak, base, result["ok"], result["failed"])
    sample.bytes, sample.errors = result["bytes"], result["errors"]
    return _judge(sample, work, count * size)


def run_daemon(url: str, count: int, work: Workload, size: int) -> Sample:
    """`hiperfifo --fifo X`: all URLs into the FIFO at once, timed to the last transfer.done."""
    tmp = Path(tempfile.mkdtemp(prefix="hiperfifo-bench-daemon-"))
    fifo = tmp / "in.fifo"
    c = str(work.concurrency)
    cmd = [PYTHON, "-m", "hiperfifo", "--fifo", str(fifo), "--max-total-connections", c]
    cmd += ["--max-host-connections", c, "--log-format", "json"]
    err = open(tmp / "stderr", "w+b")  # noqa: SIM115 - closed below with the temp dir
    proc = subprocess.Popen(
        cmd, cwd=CODE, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        import fcntl

        fcntl.fcntl(proc.stdout.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ: logs never wait on us
    except OSError:
        pass
    lines = Lines(proc.stdout)
    chunks: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            line = lines.line(deadline)
            if line is None:
                return Sample("error", count, note="daemon did not start: " + _tail(err))
            if '"daemon.started"' in line:
                break
        base = proc_status_kib(proc.pid, "VmRSS")
        cpu0 = proc_cpu(proc.pid)
        payload = ("\n".join([url] * count) + "\n").encode()
        writer_fd = os.open(fifo, os.O_WRONLY)
        WATCH.start()
        t0 = time.perf_counter()
        writer = threading.Thread(target=_write_all, args=(writer_fd, payload), daemon=True)
        writer.start()
        seen = 0
        deadline = time.monotonic() + work.cap
        while seen < count:
            data = lines.chunk(deadline)
            if not data:
                break
            chunks.append(data)
            seen += data.count(b'"transfer.done"')
        wall = time.perf_counter() - t0
        WATCH.stop()
        if seen < count:
            why = f"stopped after {work.cap:.0f} s" if not lines.eof else "exited: " + _tail(err)
            return Sample("timeout", count, note=f"{seen}/{count} transfer.done; {why}")
        cpu = proc_cpu(proc.pid) - cpu0
        peak = proc_status_kib(proc.pid, "VmHWM")
        writer.join(10)
        os.write(writer_fd, b"stop\n")
        os.close(writer_fd)
        while (data := lines.chunk(time.monotonic() + 30)) and data:
            chunks.append(data)
        _reap(proc)
    finally:
        lines.close()
        _kill(proc)
        err.close()
        shutil.rmtree(tmp, ignore_errors=True)
    sample = Sample("ok", count, wall, cpu, peak, base)
    errors: dict[str, int] = {}
    for raw in b"".join(chunks).splitlines():
        if b'"transfer.done"' not in raw:
            continue
        event = json.loads(raw)
        if event["result"] == 0 and event["status"] == 200:
            sample.ok += 1
        else:
            sample.failed += 1
            key = f"{event['result_name']} status {event['status']} {event['error']}".strip()
            errors[key] = errors.get(key, 0) + 1
        sample.bytes += event["bytes"]
    sample.errors = [f"{n} x {e}" for e, n in sorted(errors.items(), key=lambda kv: -kv[1])]
    return _judge(sample, work, count * size)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def curl_version() -> tuple[str, tuple[int, ...]]:
    exe = shutil.which("curl")
    if exe is None:
        return "not installed", ()
    first = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    line = first.splitlines()[0] if first else ""
    match = re.match(r"curl (\d+)\.(\d+)\.(\d+)", line)
    return line, tuple(int(x) for x in match.groups()) if match else ()


def curl_cannot(work: Workload) -> str | None:
    """Why Debian's curl cannot run this workload as asked, or None."""
    version = curl_version()[1]
    if not version:
        return "curl is not installed (apt-get install curl)"
    if work.concurrency > 300 and version < (8, 16, 0):
        return f"curl {'.'.join(map(str, version))} caps --parallel-max at 300 (65535 from 8.16.0)"
    return None


def run_curl(url: str, count: int, work: Workload, size: int) -> Sample:
    """curl --parallel: wall from exec to exit, CPU and peak RSS from wait4."""
    tmp = Path(tempfile.mkdtemp(prefix="hiperfifo-bench-curl-"))
    config = tmp / "urls.cfg"
    config.write_text(f'url = "{url}"\noutput = "/dev/null"\n' * count)
    cmd = ["curl", "--parallel", "--parallel-max", str(work.concurrency), "-s", "-S"]
    cmd += ["-w", "%{http_code} %{size_download}\\n", "-K", str(config)]
    err = open(tmp / "stderr", "w+b")  # noqa: SIM115 - closed below with the temp dir
    WATCH.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = Lines(proc.stdout)
    chunks: list[bytes] = []
    peak = 0
    try:
        deadline = time.monotonic() + work.cap
        while not lines.eof and time.monotonic() < deadline:
            data = lines.chunk(min(deadline, time.monotonic() + 0.02))
            if data:
                chunks.append(data)
            try:  # VmHWM only grows: the last reading before exit is the peak, near enough
                peak = max(peak, proc_status_kib(proc.pid, "VmHWM"))
            except OSError:
                pass
        if not lines.eof:
            return Sample("timeout", count, note=f"stopped after {work.cap:.0f} s")
        usage = _reap(proc)
        wall = time.perf_counter() - t0
        WATCH.stop()
    finally:
        lines.close()
        _kill(proc)
        err.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if usage is None:
        return Sample("error", count, note="curl did not exit")
    sample = Sample("ok", count, wall, usage.ru_utime + usage.ru_stime, peak, 0)
    errors: dict[str, int] = {}
    for raw in b"".join(chunks).decode().splitlines():
        status, _, got = raw.partition(" ")
        if status == "200":
            sample.ok += 1
        else:
            sample.failed += 1
            errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
        sample.bytes += int(got or 0)
    if proc.returncode:
        errors[f"curl exit {proc.returncode}"] = 1
        sample.failed += count - sample.ok - sample.failed
    sample.errors = [f"{n} x {e}" for e, n in errors.items()]
    return _judge(sample, work, count * size)


def _tail(err: Any) -> str:
    try:
        err.seek(0)
        text: str = err.read().decode(errors="replace")
    except (OSError, ValueError):
        return ""
    return " | ".join(text.strip().splitlines()[-3:])


def run_one(name: str, server: Nginx, work: Workload) -> Sample:
    """One sample, run again (up to RETRIES times) when other processes crowded it."""
    best: Sample | None = None
    for _attempt in range(1 + RETRIES):
        WATCH.settle(CROWDED / 2, max_wait=20)
        sample = _run_one(name, server, work)
        if sample.status != "ok":
            return sample
        sample.nginx_cpu = WATCH.nginx
        sample.foreign = max(0.0, WATCH.busy - WATCH.nginx - WATCH.parent - sample.cpu)
        if best is None or sample.crowded < best.crowded:
            best = sample
        if sample.crowded <= CROWDED:
            break
        print(f"  ({name}: others used {sample.crowded:.2f} cores meanwhile; again)", flush=True)
    assert best is not None
    return best


def _run_one(name: str, server: Nginx, work: Workload) -> Sample:
    url = server.url(work.path)
    count = min(work.count, REDUCED.get((name, work.name), work.count))
    work = replace(work, concurrency=min(work.concurrency, count))
    size = nginx.SIZES[work.path]
    if name == "curl":
        why = curl_cannot(work)
        if why:
            return Sample("skipped", count, note=why)
        return run_curl(url, count, work, size)
    if name == "daemon":
        return run_daemon(url, count, work, size)
    return run_library(name, url, count, work, size)


# -- medians, tables, targets -----------------------------------------------------------


@dataclass
class Row:
    name: str
    samples: list[Sample]

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.status == "ok"]

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.good)

    @property
    def usable(self) -> bool:
        return bool(self.samples) and len(self.good) == len(self.samples)

    def rate(self, work: Workload) -> float:
        """req/s (small, scale) or MB/s (bulk), from the median wall time."""
        count = self.good[0].count
        wall = self.median("wall")
        if work.name == "bulk":
            return count * nginx.SIZES[work.path] / wall / 1e6
        return count / wall

    def per_transfer_kib(self) -> float:
        return statistics.median((s.peak_kib - s.base_kib) / s.count for s in self.good)

    def problem(self) -> str:
        bad = [s for s in self.samples if s.status != "ok"]
        if not bad:
            return ""
        return f"{bad[0].status}: {bad[0].note}" + (
            f" ({len(bad)}/{len(self.samples)} runs)" if len(self.samples) > 1 else ""
        )


def _fmt(value: float, digits: int = 2) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def table(work: Workload, rows: list[Row]) -> list[str]:
    """The markdown table of one workload (rows that failed say why instead of numbers)."""
    engines = {r.name: r for r in rows if r.name in ENGINES and r.usable}
    scale = work.name == "scale"
    unit = "MB/s" if work.name == "bulk" else "req/s"
    head = ["contender", "n", "wall s", "CPU s", "nginx CPU s", "peak RSS MiB"]
    if scale:
        head += ["RSS/transfer KiB", "CPU / engine-sel", "CPU / engine-uv", "RSS/tr / engine-uv"]
    else:
        head += [unit, "/ engine-sel", "/ engine-uv"]
    head.append("others' cores")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if not row.usable:
            cells = [row.name, f"{row.samples[0].count:,}" if row.samples else ""]
            cells += [row.problem()] + [""] * (len(head) - 3)
            out.append("| " + " | ".join(cells) + " |")
            continue
        n = row.good[0].count
        n_text = f"{n:,}" + (" (reduced)" if n != work.count else "")
        cells = [
            row.name,
            n_text,
            _fmt(row.median("wall")),
            _fmt(row.median("cpu")),
            _fmt(row.median("nginx_cpu")),
            _fmt(row.median("peak_kib") / 1024, 1),
        ]
        if scale:
            per = row.per_transfer_kib()
            cells.append(_fmt(per, 1))
            for eng in ENGINES:
                e = engines.get(eng)
                cells.append(f"{row.median('cpu') / e.median('cpu'):.2f}x" if e else "-")
            e = engines.get("engine-pyuv")
            cells.append(f"{per / e.per_transfer_kib():.2f}x" if e else "-")
        else:
            rate = row.rate(work)
            cells.append(_fmt(rate, 1))
            for eng in ENGINES:
                e = engines.get(eng)
                cells.append(f"{rate / e.rate(work):.2f}x" if e else "-")
        cells.append(f"{max(s.crowded for s in row.good):.2f}")
        out.append("| " + " | ".join(cells) + " |")
    return out


def targets(work: Workload, rows: list[Row]) -> list[str]:
    """The issue's targets for this workload: measured ratio, pass or miss."""
    by = {r.name: r for r in rows if r.usable}
    out: list[str] = []

    def check(label: str, value: float | None, ok: Callable[[float], bool], text: str) -> None:
        if value is None:
            out.append(f"- {label}: not measured")
        else:
            out.append(f"- {label}: {text.format(value)} -> **{'pass' if ok(value) else 'miss'}**")

    def ratio(a: str, b: str, f: Callable[[Row], float]) -> float | None:
        return f(by[a]) / f(by[b]) if a in by and b in by else None

    for eng in ENGINES:
        if work.name == "small":
            check(
                f"{eng} req/s >= 1.2x aiohttp's",
                ratio(eng, "aiohttp", lambda r: r.rate(work)),
                lambda v: v >= 1.2,
                "{:.2f}x",
            )
        elif work.name == "bulk":
            check(
                f"{eng} MB/s >= 1.0x pycurl-pyuv's",
                ratio(eng, "pycurl-pyuv", lambda r: r.rate(work)),
                lambda v: v >= 1.0,
                "{:.2f}x",
            )
        else:
            check(
                f"{eng} CPU <= 1.5x pycurl-pyuv's",
                ratio(eng, "pycurl-pyuv", lambda r: r.median("cpu")),
                lambda v: v <= 1.5,
                "{:.2f}x",
            )
            check(
                f"{eng} RSS per transfer <= 10 KiB",
                by[eng].per_transfer_kib() if eng in by else None,
                lambda v: v <= 10,
                "{:.1f} KiB",
            )
    if work.name == "small":
        check(
            "daemon req/s >= 0.85x engine-pyuv's (same loop: logging, FIFO, bookkeeping <= 15%)",
            ratio("daemon", "engine-pyuv", lambda r: r.rate(work)),
            lambda v: v >= 0.85,
            "{:.2f}x",
        )
    return out


# -- machine, versions, README ------------------------------------------------------------


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": model or platform.processor() or "?",
        "kernel": platform.release(),
        "memory": f"{mem:.0f} GiB",
    }


def versions(ref: str | None = None) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist

    def v(name: str) -> str:
        try:
            return dist(name)
        except PackageNotFoundError:
            return "not installed"

    out = {"python": platform.python_version(), "hiperfifo": f"{v('hiperfifo')} ({_commit(ref)})"}
    out["h11"] = v("h11")
    out["structlog"] = v("structlog")
    try:
        import pyuv

        out["pyuv"] = f"{pyuv.__version__} (libuv {pyuv.LIBUV_VERSION})"
    except ImportError:
        out["pyuv"] = "not installed"
    try:
        import pycurl

        parts = dict(p.split("/", 1) for p in pycurl.version.split() if "/" in p)
        out["pycurl"] = f"{parts.get('PycURL', '?')} (libcurl {parts.get('libcurl', '?')})"
    except ImportError:
        out["pycurl"] = "not installed"
    out["aiohttp"] = v("aiohttp")
    out["httpx"] = f"{v('httpx')} (httpcore {v('httpcore')})"
    out["curl"] = ".".join(map(str, curl_version()[1])) or "not installed"
    out["nginx"] = nginx.version()
    return out


def _commit(ref: str | None = None) -> str:
    """The commit measured, and whether hiperfifo/ differs from it."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return out.stdout.strip()

    commit = git("rev-parse", "--short", ref or "HEAD") or "?"
    if ref is not None:
        return commit
    return commit + (" + local changes" if git("status", "--porcelain", "--", "hiperfifo") else "")


def snapshot(ref: str | None) -> Path:
    """A frozen copy of hiperfifo/ (the work tree's, or git REF's) and bench/, to run from.

    Contenders import hiperfifo from it (they start with it as their working
    directory), so edits and commits made while the benchmark runs do not
    change what is measured half-way.
    """
    snap = Path(tempfile.mkdtemp(prefix="hiperfifo-bench-code-"))
    if ref is None:
        shutil.copytree(ROOT / "hiperfifo", snap / "hiperfifo")
    else:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "hiperfifo"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive.stdout, check=True)
    (snap / "bench").mkdir()
    for name in ("__init__.py", "clients.py", "nginx.py", "profile.py", "run.py"):
        shutil.copy2(ROOT / "bench" / name, snap / "bench" / name)
    return snap


def replace_block(text: str, name: str, body: str) -> str:
    """Put `body` between <!-- name --> and <!-- /name --> (appended when absent)."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def write_readme(blocks: dict[str, str]) -> None:
    text = README.read_text() if README.exists() else "# Benchmark\n"
    for name, body in blocks.items():
        text = replace_block(text, name, body)
    README.write_text(text)


# -- main ---------------------------------------------------------------------------------


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--runs", type=int, default=3, help="runs per contender (median; default 3)")
    p.add_argument(
        "--workload",
        action="append",
        choices=sorted(WORKLOADS),
        help="only this workload (repeatable; default all)",
    )
    p.add_argument(
        "--contender",
        action="append",
        choices=CONTENDERS,
        help="only this contender (repeatable; default all)",
    )
    p.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="scale every request count by this (quick looks; implies --no-write)",
    )
    p.add_argument("--no-write", action="store_true", help="print only, leave README.md alone")
    p.add_argument("--no-profile", action="store_true", help="skip the engine profile")
    p.add_argument(
        "--commit",
        metavar="REF",
        help="measure hiperfifo/ as committed at REF (default: the work tree as it is at start)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    global CODE
    args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop nginx and contenders too
    if nginx.binary() is None:
        print(nginx.INSTALL_HINT, file=sys.stderr)
        return 2
    if shutil.which("curl") is None:
        print("curl is not installed: sudo apt-get install -y curl", file=sys.stderr)
    nofile = raise_nofile()
    workloads = [WORKLOADS[w] for w in (args.workload or list(WORKLOADS))]
    if args.fraction != 1.0:
        args.no_write = True
        workloads = [replace(w, count=max(1, round(w.count * args.fraction))) for w in workloads]
    if nofile < 2 * WORKLOADS["scale"].concurrency + 100 and WORKLOADS["scale"] in workloads:
        print(f"RLIMIT_NOFILE hard limit {nofile} is too low for scale", file=sys.stderr)
    if args.commit:  # one commit for the snapshot and the text, whatever lands meanwhile
        args.commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", args.commit + "^{commit}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    info = machine()
    vers = versions(args.commit)
    print("machine:", ", ".join(f"{k} {v}" for k, v in info.items()))
    print("versions:", ", ".join(f"{k} {v}" for k, v in vers.items()), flush=True)
    CODE = snapshot(args.commit)
    try:
        started = time.monotonic()
        blocks = measure(workloads, args.contender or list(CONTENDERS), args.runs)
        elapsed = time.monotonic() - started
        print(f"benchmark took {elapsed:.0f} s")
        blocks["bench:machine"] = "\n".join(
            ["| | |", "|---|---|"]
            + [f"| {k} | {v} |" for k, v in info.items()]
            + [f"| {k} | {v} |" for k, v in vers.items()]
            + [f"| measured | {time.strftime('%Y-%m-%d')}, {args.runs} run(s), {elapsed:.0f} s |"]
        )
        if not args.no_write:
            write_readme(blocks)
            print(f"wrote {README.relative_to(ROOT)}")
        if args.no_profile:
            return 0
        from bench import profile

        flags = ["--code", str(CODE), "--version", vers["hiperfifo"]]
        return profile.main(flags + (["--no-write"] if args.no_write else []))
    finally:
        shutil.rmtree(CODE, ignore_errors=True)


def measure(workloads: list[Workload], contenders: list[str], runs: int) -> dict[str, str]:
    """Every workload, `runs` rounds of every contender; the README blocks of the tables."""
    global WATCH
    blocks: dict[str, str] = {}
    with Nginx() as server:
        WATCH = Watch(server.worker_pids)
        for work in workloads:
            rows = {name: Row(name, []) for name in contenders}
            print(f"\n== {work.name}: {work.what}, {runs} run(s)", flush=True)
            for run in range(runs):
                for name in contenders:
                    sample = run_one(name, server, work)
                    rows[name].samples.append(sample)
                    print(f"  run {run + 1} {name:16} {_line(sample, work)}", flush=True)
                    time.sleep(1 if work.name == "scale" else 0.2)
            lines = table(work, list(rows.values()))
            goals = targets(work, list(rows.values()))
            print("\n" + "\n".join(lines) + "\n\nTargets (issue 6):\n" + "\n".join(goals))
            print(flush=True)
            blocks[f"bench:{work.name}"] = _section(work, runs, lines, goals)
    return blocks


def _section(work: Workload, runs: int, lines: list[str], goals: list[str]) -> str:
    median = f"median of {runs} runs" if runs > 1 else "1 run"
    head = f"### {work.name}: {work.what} ({median})"
    return "\n".join([head, "", *lines, "", "Targets (issue 6):", "", *goals])


def _line(sample: Sample, work: Workload) -> str:
    if sample.status != "ok":
        return f"{sample.status.upper()}: {sample.note}"
    rate = (
        f"{sample.bytes / sample.wall / 1e6:,.0f} MB/s"
        if work.name == "bulk"
        else f"{sample.count / sample.wall:,.0f} req/s"
    )
    per = (sample.peak_kib - sample.base_kib) / sample.count
    peak = sample.peak_kib / 1024
    return (
        f"wall {sample.wall:7.2f} s  cpu {sample.cpu:6.2f} s  peak {peak:6.1f} MiB  {rate}"
        + (f"  {per:.1f} KiB/transfer" if work.name == "scale" else "")
        + f"  (nginx {sample.nginx_cpu:.2f} s, others {sample.crowded:.2f} cores)"
    )


if __name__ == "__main__":
    sys.exit(main())
