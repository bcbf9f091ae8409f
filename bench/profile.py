"""Profile the engine on the small workload: `python -m bench.profile` (run by `make bench`).

Two views of engine-selector fetching 20,000 x /1k, 50 at once, from the
benchmark's nginx:
- py-spy (sampling, on-CPU samples only, no overhead on the measured code):
  inclusive and self share of the samples taken inside the workload (imports
  left out), and a flame graph of the whole process (bench/flame-small.svg);
- cProfile (deterministic, inflates tiny calls): calls per transfer and own time.
Writes both tables into bench/README.md between <!-- bench:profile --> marks.
"""

from __future__ import annotations

import argparse
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench import harness, report, workspace
from bench.nginx import Nginx

ROOT = workspace.ROOT
FLAME = ROOT / "bench" / "flame-small.svg"
PY_SPY = Path(sys.executable).parent / "py-spy"
SKIP_FRAMES = ("(<frozen runpy>)", "(bench/clients.py)")
WORKLOAD_FRAME = "engine_selector (bench/clients.py)"


def short(frame: str) -> str:
    """`Multi.run (hiperfifo/engine/multi.py)` -> `Multi.run (engine/multi.py)`."""
    name, _, where = frame.rpartition(" (")
    where = where.rstrip(")")
    for prefix in ("hiperfifo/", "site-packages/"):
        if prefix in where:
            where = where.split(prefix, 1)[1]
    if "/lib/python3" in where:
        where = "stdlib/" + where.rsplit("/", 1)[-1]
    return f"{name} ({where})"


def _client(url: str, count: int, concurrency: int) -> list[str]:
    return ["-m", "bench.clients", "engine-selector", url, str(count), str(concurrency), "now"]


def py_spy(
    code: Path, url: str, count: int, concurrency: int, rate: int, flame: Path | None
) -> tuple[list[str], int]:
    """Sample a run (and draw `flame`, unless None); returns table lines and the samples."""
    cmd = [sys.executable, *_client(url, count, concurrency)]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "stacks.txt"
        spy = [str(PY_SPY), "record", "-r", str(rate), "--nolineno"]
        subprocess.run([*spy, "-f", "raw", "-o", str(raw), "--", *cmd], cwd=code, check=True,
                       capture_output=True)  # fmt: skip
        if flame is not None:
            subprocess.run([*spy, "-f", "flamegraph", "-o", str(flame), "--", *cmd], cwd=code,
                           check=True, capture_output=True)  # fmt: skip
        stacks = raw.read_text().splitlines()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in stacks:
        stack, _, n = line.rpartition(" ")
        if WORKLOAD_FRAME not in stack:
            continue  # interpreter start and imports: not the engine's work
        samples = int(n)
        frames = [short(f) for f in stack.split(";") if not f.endswith(SKIP_FRAMES)]
        total += samples
        for frame in set(frames):
            inclusive[frame] += samples
        if frames:
            own[frames[-1]] += samples
    out = ["| function | inclusive % | self % |", "|---|---|---|"]
    for frame, n in inclusive.most_common(30):
        out.append(f"| `{frame}` | {100 * n / total:.1f} | {100 * own[frame] / total:.1f} |")
    out += ["", "Top self time:", "", "| function | self % |", "|---|---|"]
    for frame, n in own.most_common(15):
        out.append(f"| `{frame}` | {100 * n / total:.1f} |")
    return out, total


def c_profile(code: Path, url: str, count: int, concurrency: int) -> tuple[list[str], float]:
    """cProfile around a run; returns table lines and the profiled seconds of the workload."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.pstats"
        cmd = [sys.executable, "-m", "cProfile", "-o", str(out), *_client(url, count, concurrency)]
        done = subprocess.run(cmd, cwd=code, check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["ok"] != count:
            raise SystemExit(f"profiled run failed: {result}")
        raw = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    total = next(ct for (_p, _l, name), (*_, ct, _c) in raw.items() if name == "engine_selector")
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:25]
    out_lines = [
        "| function | calls / transfer | own % | cumulative % |",
        "|---|---|---|---|",
    ]
    for (path, line, name), (_cc, ncalls, tt, ct, _callers) in rows:
        where = short(f"{name} ({path}:{line})").replace(":", " line ", 1)
        shares = f"{100 * tt / total:.1f} | {100 * ct / total:.1f}"
        out_lines.append(f"| `{where}` | {ncalls / count:.2f} | {shares} |")
    return out_lines, total


# What nginx answers to GET /1k, byte for byte but the dates.
NGINX_1K = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 01:41:45 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
    b"Last-Modified: Sun, 22 Nov 2026 01:41:45 GMT\r\nConnection: keep-alive\r\n"
    b"Accept-Ranges: bytes\r\n\r\n" + b"k" * 1024
)


def h11_alone(count: int = 20_000) -> float:
    """Microseconds per request/response cycle in h11 alone (no sockets, no engine)."""
    import h11

    conn = h11.Connection(h11.CLIENT)
    headers = [("Host", "127.0.0.1:8080"), ("Accept", "*/*")]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            conn.send(h11.Request(method="GET", target="/1k", headers=headers))
            conn.send(h11.EndOfMessage())
            conn.receive_data(NGINX_1K)
            while type(conn.next_event()) is not h11.EndOfMessage:
                pass
            conn.start_next_cycle()
        best = min(best, (time.perf_counter() - start) / count * 1e6)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--count", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--code", type=Path, help="a workspace.snapshot() to run from")
    p.add_argument("--version", help="what --code holds, for the text")
    p.add_argument("--commit", metavar="REF", help="profile hiperfifo/ as committed at REF")
    args = p.parse_args(argv)
    harness.raise_nofile()
    commit = workspace.resolve(args.commit) if args.commit else None
    code = args.code or workspace.snapshot(commit)
    version = args.version or report.versions(commit)["hiperfifo"]
    try:
        return _profile(args, code, version)
    finally:
        if args.code is None:
            shutil.rmtree(code, ignore_errors=True)


def _profile(args: argparse.Namespace, code: Path, version: str) -> int:
    blocks: list[str] = [
        f"Workload: engine-selector, {args.count:,} x /1k, {args.concurrency} at once "
        f"(hiperfifo {version}).",
        "",
    ]
    with Nginx() as server:
        url = server.url("1k")
        if PY_SPY.exists():
            print("profiling with py-spy ...", flush=True)
            flame = None if args.no_write else FLAME
            lines, samples = py_spy(code, url, args.count, args.concurrency, args.rate, flame)
            blocks += [
                f"py-spy, {samples:,} on-CPU samples at {args.rate}/s "
                f"(flame graph: [flame-small.svg](flame-small.svg)):",
                "",
                *lines,
                "",
            ]
        else:
            blocks += ["py-spy is not installed (`pip install py-spy`): sampling skipped.", ""]
        print("profiling with cProfile ...", flush=True)
        lines, seconds = c_profile(code, url, args.count, args.concurrency)
        blocks += [
            f"cProfile ({seconds:.1f} s under the profiler), top 25 by own time:",
            "",
            *lines,
        ]
    micro = h11_alone()
    blocks += [
        "",
        f"h11 alone, one request/response cycle of `/1k` as nginx sends it (send Request + "
        f"EndOfMessage, receive_data, next_event until EndOfMessage, start_next_cycle; no "
        f"socket, no engine): **{micro:.0f} us**, a ceiling of {1e6 / micro:,.0f} responses/s "
        f"on one core.",
    ]
    text = "\n".join(blocks)
    print(text)
    if not args.no_write:
        report.write_readme({"bench:profile": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
