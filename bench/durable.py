"""What --state-dir costs: the daemon's throughput with and without its durable queue.

Runs `python -m hiperfifo` against a private loopback nginx (bench/nginx.py),
writes COUNT URLs of /1k and `stop` into its FIFO, and times from the first
byte written to the exit, ROUNDS times each way, alternating; prints the
medians and the ratios of wall time and of the daemon's CPU time (user+sys,
the steadier number on a shared machine). Usage:
python -m bench.durable [COUNT] [ROUNDS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.nginx import Nginx


def run_once(url: str, count: int, state: bool) -> tuple[float, float, int]:
    """Wall seconds from the first URL written to exit 0, CPU seconds, peak RSS in KiB."""
    with tempfile.TemporaryDirectory(prefix="hiperfifo-durable-") as tmp:
        fifo = Path(tmp) / "in.fifo"
        args = [sys.executable, "-m", "hiperfifo", "--fifo", str(fifo)]
        args += ["--log-file", str(Path(tmp) / "log"), "--log-format", "json"]
        if state:
            args += ["--state-dir", str(Path(tmp) / "state")]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        while not fifo.exists():
            time.sleep(0.01)
        time.sleep(0.3)
        payload = "".join(f"{url}?n={i}\n" for i in range(count)).encode() + b"stop\n"
        started = time.monotonic()
        fd = os.open(fifo, os.O_WRONLY)
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.close(fd)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"daemon exited {proc.returncode}")
        done = (Path(tmp) / "log").read_text().count('"event": "transfer.done"')
        if done != count:
            raise SystemExit(f"{done} transfer.done lines, expected {count}")
        return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    rss: dict[bool, list[int]] = {False: [], True: []}
    with Nginx() as server:
        url = server.url("1k")
        for _ in range(rounds):
            for state in (False, True):
                elapsed, used, peak = run_once(url, count, state)
                times[state].append(elapsed)
                cpu[state].append(used)
                rss[state].append(peak)
    for state in (False, True):
        median = statistics.median(times[state])
        label = "with --state-dir" if state else "without state   "
        print(
            f"{label}: {count} URLs in {median:.2f} s median ({count / median:,.0f} URLs/s; "
            f"runs {', '.join(f'{t:.2f}' for t in times[state])}), "
            f"CPU {statistics.median(cpu[state]):.2f} s, "
            f"peak RSS {max(rss[state]) / 1024:.0f} MiB"
        )
    wall = statistics.median(times[True]) / statistics.median(times[False])
    used = statistics.median(cpu[True]) / statistics.median(cpu[False])
    print(
        f"cost of --state-dir: {100 * (wall - 1):+.1f} % wall time, {100 * (used - 1):+.1f} % CPU"
    )


if __name__ == "__main__":
    main()
