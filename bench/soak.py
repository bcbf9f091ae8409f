"""Soak: the daemon under steady load for minutes, half of it against misbehaving servers.

Starts `python -m hiperfifo` (with --state-dir, --timeout, --speed-limit) and
local servers from bench/misbehaving.py: one good, and one each that resets
mid-body, truncates, never answers, sends garbage, 1 MB of headers, a
redirect loop, bytes past Content-Length, broken chunks, closes kept-alive
connections, or trickles one byte a second. A writer puts RATE URLs a
second into the FIFO, alternating good and bad. Every 10 s it records the
daemon's RSS, open descriptors and transfer.done count. At the end it sends
`stop`, checks that every URL got its transfer.done, and judges RSS and
descriptors after the warm-up: flat means the last third's maximum is within
SLACK of the first third's (after warm-up). Descriptors under load are
mostly sockets in flight and move with the moment of the sample, so they are
judged once the load is gone: when every URL has its transfer.done, the
daemon may hold no more descriptors than at the busiest sample of the first
third (a leak would keep them). Exit status 0 when flat and complete, 1
otherwise.

Usage: python -m bench.soak [--minutes 10] [--rate 200] [--every 10] [-- DAEMON-ARGS...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import misbehaving

WARM_UP = 60.0  # seconds before RSS and descriptors are judged
RSS_SLACK_KIB = 8 * 1024  # growth allowed between the first and last third after warm-up
FD_SLACK = 16


@dataclass
class Sample:
    at: float
    rss_kib: int
    fds: int
    done: int


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def quiescent_fds(pid: int, counter: LogCounter, written: int, wait: float = 60.0) -> int | None:
    """Open descriptors once every written URL has its transfer.done (None: never happened)."""
    until = time.monotonic() + wait
    while counter.update() < written:
        if time.monotonic() > until:
            return None
        time.sleep(0.2)
    time.sleep(1.0)  # the last connections go back to the pool or close
    return len(os.listdir(f"/proc/{pid}/fd"))


class LogCounter:
    """Counts transfer.done lines in a growing log file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.done = 0
        self.rest = b""

    def update(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        self.offset += len(data)
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        self.done += data[:cut].count(b'"event": "transfer.done"')
        return self.done


def write_steadily(fifo: Path, urls: itertools.cycle[str], rate: int, until: float) -> int:
    """Write `rate` URLs a second (in 10 batches a second) until `until`; how many written."""
    fd = os.open(fifo, os.O_WRONLY)
    written = 0
    batch = max(1, rate // 10)
    next_at = time.monotonic()
    try:
        while time.monotonic() < until:
            data = "".join(f"{next(urls)}?s={written + i}\n" for i in range(batch)).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            written += batch
            next_at += 0.1
            time.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        os.close(fd)
    return written


def judge(samples: list[Sample], attr: str, slack: int) -> tuple[bool, str]:
    after = [s for s in samples if s.at >= WARM_UP]
    if len(after) < 3:
        return False, f"{attr}: too few samples after the {WARM_UP:.0f} s warm-up"
    third = max(1, len(after) // 3)
    first = max(getattr(s, attr) for s in after[:third])
    last = max(getattr(s, attr) for s in after[-third:])
    ok = last - first <= slack
    return (
        ok,
        f"{attr}: first third max {first}, last third max {last} ({'flat' if ok else 'GROWS'})",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=200, help="URLs written per second")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("daemon_args", nargs="*", help="more daemon options (after --)")
    args = parser.parse_args()

    good = misbehaving.good()
    bad = misbehaving.bad()
    servers = [good, *(server for _, server in bad)]
    plan = []
    for name, server in bad:
        plan += [good.url("/ok"), server.url(f"/{name}")]
    with tempfile.TemporaryDirectory(prefix="hiperfifo-soak-") as tmp:
        fifo, log = Path(tmp) / "in.fifo", Path(tmp) / "daemon.log"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "hiperfifo", "--fifo", str(fifo), "--log-file", str(log),
             "--state-dir", str(Path(tmp) / "state"), "--timeout", "3", "--speed-limit", "100",
             "--speed-time", "2", "--max-redirs", "5", "--shutdown-timeout", "10",
             # 10 bad URLs/s per server: the slow ones (3 s) need ~30 connections each
             "--max-host-connections", "64", "--max-total-connections", "256",
             *args.daemon_args],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        while not fifo.exists():
            time.sleep(0.05)
        counter = LogCounter(log)
        started = time.monotonic()
        until = started + args.minutes * 60
        result: list[int] = []
        writer = threading.Thread(
            target=lambda: result.append(
                write_steadily(fifo, itertools.cycle(plan), args.rate, until)
            )
        )
        writer.start()
        samples: list[Sample] = []
        print(f"daemon options: {' '.join(args.daemon_args) or '(soak defaults)'}")
        print(f"{'t (s)':>7} {'RSS (MiB)':>10} {'fds':>5} {'done':>9}", flush=True)
        while writer.is_alive():
            time.sleep(args.every)
            pid = daemon.pid
            sample = Sample(
                time.monotonic() - started,
                proc_status(pid, "VmRSS"),
                len(os.listdir(f"/proc/{pid}/fd")),
                counter.update(),
            )
            samples.append(sample)
            print(
                f"{sample.at:7.0f} {sample.rss_kib / 1024:10.1f} {sample.fds:5d} {sample.done:9d}",
                flush=True,
            )
        writer.join()
        written = result[0] if result else 0
        quiet_fds = quiescent_fds(daemon.pid, counter, written)
        fd = os.open(fifo, os.O_WRONLY)
        os.write(fd, b"stop\n")
        os.close(fd)
        status = daemon.wait(120)
        done = counter.update()
        peak = max(s.rss_kib for s in samples) / 1024 if samples else 0
    for server in servers:
        server.close()
    rss_ok, rss_text = judge(samples, "rss_kib", RSS_SLACK_KIB)
    _trend_ok, fds_text = judge(samples, "fds", FD_SLACK)
    # Under load the descriptor count is mostly sockets in flight, which moves with the
    # moment of the sample; a leak shows once the load is gone. So descriptors are judged
    # when every URL has its transfer.done: at most what the first third held at its peak.
    first_third = max(s.fds for s in samples[: max(len(samples) // 3, 1)]) if samples else 0
    fds_ok = quiet_fds is not None and quiet_fds <= first_third
    fds_text += f" (under load, informative); when idle: {quiet_fds} <= {first_third}"
    fds_text += " (flat)" if fds_ok else " (LEAK?)"
    print(f"written {written}, transfer.done {done}, exit {status}, peak RSS {peak:.1f} MiB")
    print(rss_text)
    print(fds_text)
    ok = rss_ok and fds_ok and status == 0 and done == written
    print("soak: OK" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
