"""The engine compiled with mypyc against the pure one (issue 15.5): `make bench-compiled`.

The application's own pyuv loop over the public multi API (bench.clients), the engine run
by .venv's Python (pure, editable) and by the mypyc venv's (`make compiled`), pycurl on the
same loop, and aiohttp; all interleaved run by run against one private nginx; medians.
Both libraries are fed in both shapes (--shape), in the same run:

  fresh  a new handle per URL, as hiperfifo.c itself (new_conn: curl_easy_init;
         check_multi_info: curl_easy_cleanup): engine-c-shape, pycurl-pyuv-fresh
  reuse  C handles made once, each added again with the next URL:
         engine-c-shape-reuse, pycurl-pyuv (the pool pycurl-pyuv always used)

Each row's ratios are against aiohttp and against pycurl in the same shape; issue 15.5's
targets follow the table, per shape. On scale every handle runs once (5,000 at once), so
the shapes are one: fresh only. Each child says "ready" once imported and is timed from
"go" to its result (bench.clients' protocol): wall time and its own CPU time (utime +
stime from /proc).

    python -m bench.compiled [--runs 3] [--workload small|scale] [--shape fresh|reuse|both]
        [--count N] [--only LABEL,...]
        [--baseline-tree DIR --baseline-compiled PYTHON --baseline-name REV]

A baseline (a before/after table): DIR is a checkout of an older revision (`git archive
REV | tar -x -C DIR`), run by .venv's Python with DIR first on its import path (PYTHONPATH), and
PYTHON the Python of a mypyc venv built from that revision (`make compiled
MYPYC_VENV=.venv-mypyc-REV` on it); both interleaved with the others, in the fresh shape
only (an older bench.clients may lack engine-c-shape-reuse).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import proc_cpu, raise_nofile
from bench.nginx import Nginx

ROOT = Path(__file__).resolve().parent.parent
# name: (path on nginx, count, concurrency)
WORKLOADS = {"small": ("1k", 20_000, 50), "scale": ("slow/", 5_000, 5_000)}
# How each multi is fed (bench.clients.SHAPES): a new handle per URL, hiperfifo.c's own way
# (new_conn: curl_easy_init; check_multi_info: curl_easy_cleanup), or `concurrency` handles
# each added again with the next URL. Both libraries in both shapes, in the same run.
SHAPES = {
    "fresh": ("engine-c-shape", "pycurl-pyuv-fresh"),
    "reuse": ("engine-c-shape-reuse", "pycurl-pyuv"),
}
SHOWN = {"fresh": "fresh: new handle per URL", "reuse": "reuse: C handles re-added", "": "-"}


@dataclass(frozen=True)
class Side:
    label: str
    python: Path
    client: str
    env: tuple[tuple[str, str], ...] = ()
    shape: str = ""  # fresh | reuse ("" for aiohttp: its own tasks over one session)
    pycurl: bool = False  # the pycurl row of its shape: what the others in it compare to


def sides(
    pure: Path, compiled: Path, baseline: tuple[Path, Path, str] | None, shapes: list[str]
) -> list[Side]:
    # PYTHONSAFEPATH: the compiled venv must not import the tree's hiperfifo/ from the cwd;
    # it finds bench/ through its hiperfifo-repository.pth (appended after site-packages).
    safe = ("PYTHONSAFEPATH", "1")
    out: list[Side] = []
    for shape in shapes:
        engine, pycurl = SHAPES[shape]
        if baseline is not None and shape == "fresh":  # an older tree's bench.clients has it
            tree, python, name = baseline
            old = (safe, ("PYTHONPATH", str(tree)))
            out += [
                Side(f"{engine} pure {name}", pure, engine, old, shape),
                Side(f"{engine} compiled {name}", python, engine, (safe,), shape),
            ]
        out += [
            Side(f"{engine} pure", pure, engine, (), shape),
            Side(f"{engine} compiled", compiled, engine, (safe,), shape),
            Side(pycurl, pure, pycurl, (), shape, pycurl=True),
        ]
    return [*out, Side("aiohttp", pure, "aiohttp")]


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


Medians = dict[str, tuple[float, float]]  # label: (wall s, CPU s)


def medians(measured: dict[str, list[tuple[float, float]]]) -> Medians:
    return {
        label: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        for label, runs in measured.items()
    }


def table(
    measured: dict[str, list[tuple[float, float]]], count: int, field: list[Side]
) -> list[str]:
    """Markdown rows: medians, the range of wall times, each row against aiohttp and against
    pycurl fed the same way (its shape)."""
    median = medians(measured)
    aiohttp = median.get("aiohttp")
    pycurl = {side.shape: median[side.label] for side in field if side.pycurl}
    rows = [
        "| contender | shape | wall s (range) | CPU s | req/s | CPU us/req | req/s / aiohttp "
        "| req/s / pycurl, same shape | CPU / pycurl, same shape |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for side in field:
        wall, cpu = median[side.label]
        walls = [w for w, _ in measured[side.label]]
        same = pycurl.get(side.shape)
        cells = [
            side.label,
            SHOWN[side.shape],
            f"{wall:.2f} ({min(walls):.2f}-{max(walls):.2f})",
            f"{cpu:.2f}",
            f"{count / wall:,.0f}",
            f"{cpu / count * 1e6:.0f}",
            f"{aiohttp[0] / wall:.2f}x" if aiohttp else "-",
            f"{same[0] / wall:.2f}x" if same else "-",
            f"{cpu / same[1]:.2f}x" if same else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def targets(measured: dict[str, list[tuple[float, float]]], workload: str) -> list[str]:
    """Issue 15.5's targets for the compiled engine, in each shape measured (wall medians for
    req/s, CPU medians for CPU): hiperfifo.c's shape is `fresh`."""
    median = medians(measured)
    out: list[str] = []

    def line(text: str, a: str, b: str, rate: bool, ok: Callable[[float], bool]) -> None:
        if a not in median or b not in median:
            return
        value = median[b][0] / median[a][0] if rate else median[a][1] / median[b][1]
        out.append(f"- {text} {a} / {b}: {value:.2f}x -> **{'pass' if ok(value) else 'miss'}**")

    for shape, (engine, pycurl) in SHAPES.items():
        us = f"{engine} compiled"
        if workload == "small":
            line(f"[{shape}] req/s >= 0.6x pycurl's:", us, pycurl, True, lambda v: v >= 0.6)
            line(f"[{shape}] req/s >= 1.5x aiohttp's:", us, "aiohttp", True, lambda v: v >= 1.5)
        else:
            line(f"[{shape}] CPU <= 1.2x pycurl's:", us, pycurl, False, lambda v: v <= 1.2)
    fresh, reuse = SHAPES["fresh"][0] + " compiled", SHAPES["reuse"][1]
    if workload == "small" and fresh in median and reuse in median:
        out.append(
            f"- across shapes (the comparison made before both shapes were measured): "
            f"{fresh} / {reuse} req/s {median[reuse][0] / median[fresh][0]:.2f}x, "
            f"CPU {median[fresh][1] / median[reuse][1]:.2f}x"
        )
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compiled", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--pure", type=Path, default=ROOT / ".venv" / "bin" / "python")
    parser.add_argument("--compiled", type=Path, default=ROOT / ".venv-mypyc" / "bin" / "python")
    parser.add_argument("--baseline-tree", type=Path, help="a checkout of the older revision")
    parser.add_argument("--baseline-compiled", type=Path, help="its mypyc venv's python")
    parser.add_argument("--baseline-name", default="before")
    parser.add_argument(
        "--shape",
        choices=[*SHAPES, "both"],
        default="both",
        help="how the engine and pycurl feed their multi (default both; scale: fresh only)",
    )
    parser.add_argument("--count", type=int, help="requests per run (small; a quick look)")
    parser.add_argument(
        "--only",
        help="comma-separated row labels to run (e.g. 'engine-c-shape compiled,pycurl-pyuv-fresh'"
        " for more runs of what a change is about); default all",
    )
    args = parser.parse_args(argv)
    baseline = None
    if args.baseline_tree or args.baseline_compiled:
        if not (args.baseline_tree and args.baseline_compiled):
            parser.error("--baseline-tree and --baseline-compiled go together")
        baseline = (args.baseline_tree.resolve(), args.baseline_compiled, args.baseline_name)
    if not args.compiled.exists():
        parser.error(f"{args.compiled} is missing: run `make compiled` first")
    path, count, concurrency = WORKLOADS[args.workload]
    if args.count:
        count = args.count
        concurrency = min(concurrency, count)
    shapes = list(SHAPES) if args.shape == "both" else [args.shape]
    once = ""
    if count <= concurrency and len(shapes) > 1:
        # Every handle runs once: a fresh and a reused pool are the same thing.
        once = f"all {count:,} at once, each handle runs once: the shapes are one (fresh only)"
        print(f"{args.workload}: {once}")
        shapes = ["fresh"]
    raise_nofile()
    contenders = sides(args.pure, args.compiled, baseline, shapes)
    if args.only:
        wanted = [label.strip() for label in args.only.split(",")]
        unknown = sorted(set(wanted) - {side.label for side in contenders})
        if unknown:
            parser.error(f"--only: no row {unknown}; rows: {[s.label for s in contenders]}")
        contenders = [side for side in contenders if side.label in wanted]
    measured: dict[str, list[tuple[float, float]]] = {side.label: [] for side in contenders}
    with Nginx() as server:
        for run in range(args.runs):
            for side in contenders:
                wall, cpu = run_once(side, server.url(path), count, concurrency)
                measured[side.label].append((wall, cpu))
                print(f"run {run + 1}: {side.label}: {wall:.2f} s, CPU {cpu:.2f} s", flush=True)
    print(f"\n{args.workload}: {count:,} x /{path}, {concurrency} at once, {args.runs} runs")
    print("\n".join(table(measured, count, contenders)))
    if once:
        print(f"({once})")
    print("\nTargets (issue 15.5, the compiled engine; hiperfifo.c's shape is fresh):\n")
    print("\n".join(targets(measured, args.workload)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
