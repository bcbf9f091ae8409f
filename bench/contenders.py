"""The workloads and the contenders: how each is launched, and what its output says.

A contender is a kind (what runs: `bench/clients.py`'s in-process clients, the
daemon, curl) and the code it runs from (a snapshot of hiperfifo/: the one
measured, or a baseline commit's). `run()` launches one through
`harness.run_process()` and turns what it printed into a checked `Sample`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import harness, nginx
from bench.harness import Launch, Measured, Watch

PYTHON = sys.executable


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

# In this order in every run (reversed every other run): the daemon right after engine-pyuv,
# so the two samples issue 15.3's ratio compares are adjacent in time (bench/README.md).
KINDS = (
    "engine-selector",
    "engine-pyuv",
    "daemon",
    "engine-c-shape",
    "engine-c-shape-reuse",
    "pycurl-pyuv",
    "pycurl-pyuv-fresh",
    "aiohttp",
    "httpx",
    "curl",
)
# Kinds that run hiperfifo's code (the ones a baseline commit adds a second time).
OURS = ("engine-selector", "engine-pyuv", "engine-c-shape", "engine-c-shape-reuse", "daemon")
DESCRIBE = {
    "engine-selector": "hiperfifo.engine on SelectorDriver (stdlib selectors), all added up front",
    "engine-pyuv": "hiperfifo.engine on hiperfifo.driver.Driver (pyuv), all added up front",
    "engine-c-shape": "hiperfifo.engine under a plain pyuv loop over the public Multi API "
    "(hiperfifo.c's shape): a new Easy per URL as one finishes, unique URLs",
    "engine-c-shape-reuse": "engine-c-shape's loop with C Easy handles made once, each added "
    "again with the next URL (pycurl-pyuv's way of feeding)",
    "daemon": "hiperfifo daemon end to end: URLs into the FIFO, until the last transfer.done",
    "pycurl-pyuv": "pycurl CurlMulti + pyuv via socket_action (engine-c-shape's loop), a pool "
    "of C Curl handles each added again with the next URL, unique URLs",
    "pycurl-pyuv-fresh": "pycurl-pyuv's loop with a new Curl per URL, closed when done "
    "(hiperfifo.c's own shape: curl_easy_init per URL, curl_easy_cleanup when done)",
    "aiohttp": "aiohttp ClientSession, TCPConnector(limit=C), C worker tasks",
    "httpx": "httpx AsyncClient, Limits(max_connections=C), C worker tasks",
    "curl": "curl --parallel --parallel-max C -K urls.cfg, -o /dev/null each",
}
# Contenders too slow for the full count here: fewer requests, said so in the table.
# On scale a reduced count is also the concurrency (all at once).
REDUCED = {("httpx", "small"): 2_000, ("httpx", "scale"): 500}


@dataclass(frozen=True)
class Contender:
    """What runs (`kind`), from which code, under which name in the tables."""

    kind: str
    code: Path  # a workspace.snapshot(): hiperfifo/ and bench/
    label: str = ""  # "" for the code measured; the baseline's short commit otherwise

    @property
    def name(self) -> str:
        return f"{self.kind} @{self.label}" if self.label else self.kind


@dataclass
class Sample:
    """One run of one contender on one workload."""

    status: str  # ok | failed | timeout | error | skipped
    count: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    cold_wall: float = 0.0  # from exec: interpreter start and imports included
    cold_cpu: float = 0.0
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


def _sample(m: Measured, count: int) -> Sample:
    if m.status != "ok":
        return Sample(m.status, count, note=m.note)
    return Sample(
        "ok", count, m.wall, m.cpu, m.cold_wall, m.cold_cpu, m.peak_kib, m.base_kib,
        foreign=m.others, nginx_cpu=m.server_cpu,
    )  # fmt: skip


def _judge(sample: Sample, expected_bytes: int, errors: Counter[str]) -> Sample:
    sample.errors = sample.errors or [f"{n} x {e}" for e, n in errors.most_common(5)]
    if sample.ok != sample.count or sample.failed or sample.bytes != expected_bytes:
        sample.status = "failed"
        sample.note = (
            f"{sample.ok}/{sample.count} ok, {sample.failed} failed, "
            f"{sample.bytes} of {expected_bytes} bytes; " + "; ".join(sample.errors[:3])
        )
    return sample


def run(contender: Contender, server: nginx.Nginx, work: Workload, watch: Watch) -> Sample:
    """One run of one contender on one workload, checked: every response whole."""
    kind = contender.kind
    count = min(work.count, REDUCED.get((kind, work.name), work.count))
    work = replace(work, concurrency=min(work.concurrency, count))
    url = server.url(work.path)
    expected = count * nginx.SIZES[work.path]
    if kind == "curl":
        why = curl_cannot(work)
        if why:
            return Sample("skipped", count, note=why)
        return run_curl(url, count, work, watch, expected)
    if kind == "daemon":
        return run_daemon(contender.code, url, count, work, watch, expected)
    return run_library(contender, url, count, work, watch, expected)


# -- bench/clients.py: ready -> go -> result -> exit ----------------------------------------


def run_library(
    contender: Contender, url: str, count: int, work: Workload, watch: Watch, expected: int
) -> Sample:
    cmd = [PYTHON, "-m", "bench.clients", contender.kind, url, str(count), str(work.concurrency)]

    def go(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()

    def end(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(b"exit\n")
        proc.stdin.close()

    launch = Launch(
        cmd, cwd=contender.code, cap=work.cap, stdin=True, ready=lambda line: line == "ready",
        go=go, finished=lambda chunk: b"\n" in chunk, end=end,
    )  # fmt: skip
    m = harness.run_process(launch, watch)
    sample = _sample(m, count)
    if m.status != "ok":
        return sample
    result = json.loads(m.output.splitlines()[0])
    sample.ok, sample.failed = result["ok"], result["failed"]
    sample.bytes, sample.errors = result["bytes"], result["errors"]
    return _judge(sample, expected, Counter())


# -- the daemon: `hiperfifo --fifo X`, every URL written at once, until the last transfer.done


class _DaemonFeed:
    """Writes the URLs into the daemon's FIFO and counts the transfer.done lines it logs."""

    def __init__(self, fifo: Path, payload: bytes, count: int) -> None:
        self.fifo, self.payload, self.count = fifo, payload, count
        self.seen = 0
        self._partial = b""
        self._fd = -1
        self._writer: threading.Thread | None = None

    def go(self, _proc: subprocess.Popen[bytes]) -> None:
        self._fd = os.open(self.fifo, os.O_WRONLY)
        self._writer = threading.Thread(target=_write_all, args=(self._fd, self.payload))
        self._writer.daemon = True
        self._writer.start()

    def finished(self, chunk: bytes) -> bool:
        data = self._partial + chunk
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        self.seen += data.count(b'"transfer.done"', 0, cut)
        return self.seen >= self.count

    def end(self, _proc: subprocess.Popen[bytes]) -> None:
        if self._writer is not None:
            self._writer.join(10)
        os.write(self._fd, b"stop\n")
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass  # the daemon went away: the run reports it


def run_daemon(
    code: Path, url: str, count: int, work: Workload, watch: Watch, expected: int
) -> Sample:
    tmp = Path(tempfile.mkdtemp(prefix="hiperfifo-bench-daemon-"))
    fifo = tmp / "in.fifo"
    c = str(work.concurrency)
    cmd = [PYTHON, "-m", "hiperfifo", "--fifo", str(fifo), "--max-total-connections", c]
    cmd += ["--max-host-connections", c, "--log-format", "json"]
    feed = _DaemonFeed(fifo, ("\n".join([url] * count) + "\n").encode(), count)
    launch = Launch(
        cmd, cwd=code, cap=work.cap, ready=lambda line: '"daemon.started"' in line,
        go=feed.go, finished=feed.finished, end=feed.end, pipe_size=1 << 20,
    )  # fmt: skip
    try:
        m = harness.run_process(launch, watch)
    finally:
        feed.close()
        shutil.rmtree(tmp, ignore_errors=True)
    sample = _sample(m, count)
    if m.status != "ok":
        sample.note = f"{feed.seen}/{count} transfer.done; {m.note}"
        return sample
    errors: Counter[str] = Counter()
    for raw in (m.output + m.rest).splitlines():
        if b'"transfer.done"' not in raw:
            continue
        event = json.loads(raw)
        if event["result"] == 0 and event["status"] == 200:
            sample.ok += 1
        else:
            sample.failed += 1
            why = f"{event['result_name']} status {event['status']} {event['error']}"
            errors[why.strip()] += 1
        sample.bytes += event["bytes"]
    return _judge(sample, expected, errors)


# -- curl --parallel: wall from exec to exit, CPU from wait4 -----------------------------


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


def run_curl(url: str, count: int, work: Workload, watch: Watch, expected: int) -> Sample:
    with tempfile.TemporaryDirectory(prefix="hiperfifo-bench-curl-") as tmp:
        config = Path(tmp) / "urls.cfg"
        config.write_text(f'url = "{url}"\noutput = "/dev/null"\n' * count)
        cmd = ["curl", "--parallel", "--parallel-max", str(work.concurrency), "-s", "-S"]
        cmd += ["-w", "%{http_code} %{size_download}\\n", "-K", str(config)]
        m = harness.run_process(Launch(cmd, cap=work.cap), watch)
    sample = _sample(m, count)
    if m.status != "ok":
        return sample
    errors: Counter[str] = Counter()
    for raw in m.output.decode().splitlines():
        status, _, got = raw.partition(" ")
        if status == "200":
            sample.ok += 1
        else:
            sample.failed += 1
            errors[f"HTTP {status}"] += 1
        sample.bytes += int(got or 0)
    if m.returncode:
        errors[f"curl exit {m.returncode}"] += 1
        sample.failed += count - sample.ok - sample.failed
    return _judge(sample, expected, errors)
