"""make bench's ratio targets (issue 15.3): runs alternate their order (ABBA), and a ratio
between two contenders is judged on the median of its per-run ratios, the ratio of the rows'
medians printed beside it (and both in the before/after table)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_runs_alternate_order_and_ratio_targets_use_per_run_ratios() -> None:
    """In a process of its own, as `make bench` imports bench.run (from the repository)."""
    script = """if True:
        from pathlib import Path
        from bench import report, run
        from bench.contenders import WORKLOADS, Contender, Sample

        small = WORKLOADS["small"]
        rows = [report.Row(Contender(k, Path(".")), []) for k in ("engine-pyuv", "daemon")]
        assert [r.name for r in run.in_order(rows, 0)] == ["engine-pyuv", "daemon"]
        assert [r.name for r in run.in_order(rows, 1)] == ["daemon", "engine-pyuv"]
        assert [r.name for r in run.in_order(rows, 2)] == ["engine-pyuv", "daemon"]

        # Wall seconds per run: the machine's speed drifts (both contenders alike) and one
        # daemon run is slow. Per run, daemon req/s / engine-pyuv's: 0.9 0.9 0.9 0.9 0.5,
        # median 0.90; the rows' medians (2.0 s and 3.33 s) give 0.60.
        engine = [1.0, 3.0, 3.0, 1.0, 2.0]
        daemon = [e / r for e, r in zip(engine, [0.9, 0.9, 0.9, 0.9, 0.5])]
        for row, walls in zip(rows, (engine, daemon)):
            row.samples = [
                Sample("ok", 20_000, wall=w, cpu=w, cold_wall=w, cold_cpu=w) for w in walls
            ]
        lines = report.targets(small, rows)
        line = next(t for t in lines if t.startswith("- daemon req/s >= 0.85x"))
        assert "0.90x (median of 5 per-run ratios (0.50-0.90); ratio of medians 0.60x)" in line
        assert line.endswith("-> **pass**"), line
        assert "(15.3" in line

        # Before/after (--baseline): the same rows as "now" and "@abc1234", per run as well.
        before = report.Row(Contender("daemon", Path("."), "abc1234"), rows[0].samples)
        table = report.compare(small, [rows[1], before])
        cells = [c.strip() for c in table[2].strip("|").split("|")]
        assert cells[0] == "daemon (@abc1234 -> now)", cells
        assert cells[3:5] == ["0.60x", "0.90x"], cells  # ratio of medians, median per run

        assert run.Settings(None, 0, 0).runs_of(small) == run.RUNS["small"] > 3
        assert run.Settings(None, 0, 0).runs_of(WORKLOADS["scale"]) == 3
        assert run.Settings(2, 0, 0).runs_of(small) == 2
        print("ok")
    """
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=99
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
