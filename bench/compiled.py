"""The engine compiled with mypyc against the pure one (issue 15.5): `make bench-compiled`.

hiperfifo.c's shape (bench.clients' engine-c-shape) run by .venv's Python (pure, editable)
and by the mypyc venv's (`make compiled`), with pycurl-pyuv and aiohttp beside them, all
interleaved run by run against one private nginx; medians. Each child says "ready" once
imported and is timed from "go" to its result (bench.clients' protocol): wall time and its
own CPU time (utime + stime from /proc).

    python -m bench.compiled [--runs 3] [--workload small|scale]
        [--baseline-tree DIR --baseline-compiled PYTHON --baseline-name REV]

A baseline (a before/after table): DIR is a checkout of an older revision (`git archive
REV | tar -x -C DIR`), run by .venv's Python with DIR first on its import path (PYTHONPATH), and
PYTHON the Python of a mypyc venv built from that revision (`make compiled
MYPYC_VENV=.venv-mypyc-REV` on it); both interleaved with the others.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import proc_cpu, raise_nofile
from bench.nginx import Nginx

ROOT = Path(__file__).resolve().parent.parent
# name: (path on nginx, count, concurrency)
WORKLOADS = {"small": ("1k", 20_000, 50), "scale": ("slow/", 5_000, 5_000)}


@dataclass(frozen=True)
class Side:
    label: str
    python: Path
    client: str
    env: tuple[tuple[str, str], ...] = ()


def sides(pure: Path, compiled: Path, baseline: tuple[Path, Path, str] | None) -> list[Side]:
    # PYTHONSAFEPATH: the compiled venv must not import the tree's hiperfifo/ from the cwd;
    # it finds bench/ through its hiperfifo-repository.pth (appended after site-packages).
    before: list[Side] = []
    if baseline is not None:
        tree, python, name = baseline
        safe = ("PYTHONSAFEPATH", "1")
        before = [
            Side(
                f"engine-c-shape pure {name}",
                pure,
                "engine-c-shape",
                (safe, ("PYTHONPATH", str(tree))),
            ),
            Side(f"engine-c-shape compiled {name}", python, "engine-c-shape", (safe,)),
        ]
    return [
        *before,
        Side("engine-c-shape pure", pure, "engine-c-shape"),
        Side("engine-c-shape compiled", compiled, "engine-c-shape", (("PYTHONSAFEPATH", "1"),)),
        Side("pycurl-pyuv", pure, "pycurl-pyuv"),
        Side("aiohttp", pure, "aiohttp"),
    ]


def run_once(side: Side, url: str, count: int, concurrency: int) -> tuple[float, float]:
    """One child: (wall s, CPU s) from "go" to its result; fails unless all `count` are OK."""
    args = [str(side.python), "-m", "bench.clients", side.client, url, str(count)]
    child = subprocess.Popen(
        [*args, str(concurrency)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **dict(side.env)},
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{side.label}: no 'ready'")
        cpu, start = proc_cpu(child.pid), time.perf_counter()
        child.stdin.write("go\n")
        child.stdin.flush()
        result = json.loads(child.stdout.readline())
        wall, cpu = time.perf_counter() - start, proc_cpu(child.pid) - cpu
        child.stdin.write("exit\n")
        child.stdin.flush()
    finally:
        child.wait(timeout=60)
    if result["ok"] != count:
        raise RuntimeError(f"{side.label}: {result}")
    return wall, cpu


def table(measured: dict[str, list[tuple[float, float]]], count: int) -> list[str]:
    """Markdown rows: medians, the range of wall times, and the ratios the issue asks for."""
    median = {
        label: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        for label, runs in measured.items()
    }
    aiohttp, pycurl = median["aiohttp"], median["pycurl-pyuv"]
    rows = [
        "| contender | wall s (range) | CPU s | req/s | CPU us/req | req/s / aiohttp "
        "| req/s / pycurl | CPU / pycurl |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, (wall, cpu) in median.items():
        walls = [w for w, _ in measured[label]]
        rows.append(
            f"| {label} | {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {cpu:.2f} "
            f"| {count / wall:,.0f} | {cpu / count * 1e6:.0f} | {aiohttp[0] / wall:.2f}x "
            f"| {pycurl[0] / wall:.2f}x | {cpu / pycurl[1]:.2f}x |"
        )
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compiled", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--pure", type=Path, default=ROOT / ".venv" / "bin" / "python")
    parser.add_argument("--compiled", type=Path, default=ROOT / ".venv-mypyc" / "bin" / "python")
    parser.add_argument("--baseline-tree", type=Path, help="a checkout of the older revision")
    parser.add_argument("--baseline-compiled", type=Path, help="its mypyc venv's python")
    parser.add_argument("--baseline-name", default="before")
    args = parser.parse_args(argv)
    baseline = None
    if args.baseline_tree or args.baseline_compiled:
        if not (args.baseline_tree and args.baseline_compiled):
            parser.error("--baseline-tree and --baseline-compiled go together")
        baseline = (args.baseline_tree.resolve(), args.baseline_compiled, args.baseline_name)
    if not args.compiled.exists():
        parser.error(f"{args.compiled} is missing: run `make compiled` first")
    path, count, concurrency = WORKLOADS[args.workload]
    raise_nofile()
    contenders = sides(args.pure, args.compiled, baseline)
    measured: dict[str, list[tuple[float, float]]] = {side.label: [] for side in contenders}
    with Nginx() as server:
        for run in range(args.runs):
            for side in contenders:
                wall, cpu = run_once(side, server.url(path), count, concurrency)
                measured[side.label].append((wall, cpu))
                print(f"run {run + 1}: {side.label}: {wall:.2f} s, CPU {cpu:.2f} s", flush=True)
    print(f"\n{args.workload}: {count:,} x /{path}, {concurrency} at once, {args.runs} runs")
    print("\n".join(table(measured, count)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
