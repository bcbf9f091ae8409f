"""Instructions per request under callgrind, several runs a side: `python -m bench.callgrind`.

    python -m bench.callgrind [--runs 3] [--count 2400] [--base 400] [--compiled PYTHON]
        CONTENDER...

Each CONTENDER (a bench.clients name) runs under `valgrind --tool=callgrind` as `python -m
bench.clients NAME URL N 50 now` against one private nginx, once with N = --count and once
with N = --base: (instructions at count - instructions at base) / (count - base) cancels
interpreter start-up and imports. The engine contenders run on .venv's Python (pure) and,
with --compiled, on a mypyc venv's too (PYTHONSAFEPATH=1, as make bench-compiled); the
others on .venv's. Runs are interleaved; every run is printed, then the median per side.

Why several runs: callgrind counts the client's own user-space instructions, but how many
transfers the engine finishes per socket_action depends on timing, and so do its loop
iterations and callbacks per request: one build measured 146k to 194k instructions per
request in engine-c-shape over five runs, where pycurl's count repeats to the thousand
(bench/README.md, "Same driver, same shapes"). Compare medians. Needs Debian's valgrind
and nginx-light.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.clients import CONTENDERS
from bench.nginx import Nginx

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 50


def totals(text: str) -> int:
    """The instruction count of a callgrind output file (its `totals:` line, else `summary:`)."""
    found = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("totals", "summary") and rest.split():
            found[key] = int(rest.split()[0])
    if not found:
        raise ValueError("no totals: or summary: line in the callgrind output")
    return found["totals"] if "totals" in found else found["summary"]


def per_request(at_count: int, at_base: int, count: int, base: int) -> float:
    """Instructions per request, start-up cancelled out."""
    return (at_count - at_base) / (count - base)


def instructions(python: Path, env: dict[str, str], name: str, url: str, n: int) -> int:
    with tempfile.TemporaryDirectory(prefix="hiperfifo-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(python)]
        cmd += ["-m", "bench.clients", name, url, str(n), str(CONCURRENCY), "now"]
        done = subprocess.run(
            cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
        )
        if done.returncode != 0 or f'"ok": {n},' not in done.stdout:
            raise RuntimeError(f"{name} on {python}: {done.stdout.strip()} {done.stderr[-500:]}")
        return totals(out.read_text())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.callgrind", description=__doc__)
    parser.add_argument("contenders", nargs="+", choices=sorted(CONTENDERS), metavar="CONTENDER")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=2400)
    parser.add_argument("--base", type=int, default=400)
    parser.add_argument("--pure", type=Path, default=ROOT / ".venv" / "bin" / "python")
    parser.add_argument("--compiled", type=Path, help="a mypyc venv's python (make compiled)")
    args = parser.parse_args(argv)
    if args.count <= args.base:
        parser.error("--count must be above --base")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: sudo apt-get install -y valgrind", file=sys.stderr)
        return 2
    sides: list[tuple[str, str, Path, dict[str, str]]] = []
    for name in args.contenders:
        sides.append((name, "pure", args.pure, {}))
        if args.compiled is not None and name.startswith("engine"):
            sides.append((name, "compiled", args.compiled, {"PYTHONSAFEPATH": "1"}))
    measured: dict[tuple[str, str], list[float]] = {(n, b): [] for n, b, _, _ in sides}
    with Nginx() as server:
        url = server.url("1k")
        for run in range(args.runs):
            for name, build, python, env in sides:
                at_count = instructions(python, env, name, url, args.count)
                at_base = instructions(python, env, name, url, args.base)
                value = per_request(at_count, at_base, args.count, args.base)
                measured[(name, build)].append(value)
                print(f"run {run + 1}: {name} {build}: {value / 1000:,.0f}k", flush=True)
    what = f"{args.count:,} - {args.base:,} requests, {CONCURRENCY} at once"
    print(f"\ninstructions per request ({what})")
    print("| contender | build | runs | median |\n|---|---|---|---|")
    for (name, build), values in measured.items():
        runs = ", ".join(f"{v / 1000:,.0f}k" for v in values)
        print(f"| {name} | {build} | {runs} | {statistics.median(values) / 1000:,.0f}k |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
