"""bench.clients feeds the engine in both shapes of bench/README.md ("Same driver, same
shapes"), and bench.compiled compares each row with pycurl fed the same way.

The clients run as `make bench` runs them: `python -m bench.clients NAME URL COUNT C now`,
a process of their own started from the repository (bench/ is not installed). pycurl is
the `bench` extra, not installed by `make test`: its two shapes are run by the benchmarks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from servers import HELLO, HTTPServer

ROOT = Path(__file__).resolve().parent.parent


def _client(name: str, url: str, count: int, concurrency: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.clients", name, url, str(count), str(concurrency), "now"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=99,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("name", "handles"), [("engine-c-shape", 40), ("engine-c-shape-reuse", 4)]
)
def test_engine_c_shape_fresh_and_reused_fetch_every_unique_url(
    http_server: HTTPServer, name: str, handles: int
) -> None:
    result = _client(name, http_server.url("/"), 40, 4)
    assert result == {
        "ok": 40,
        "bytes": 40 * len(HELLO),
        "failed": 0,
        "errors": [],
        "handles": handles,  # fresh: an Easy per URL; reuse: 4 Easy handles added again
    }
    assert sorted(http_server.paths()) == sorted(f"/?i={i}" for i in range(40))
    assert http_server.accepted <= 4  # max_total_connections=C, kept alive


def test_compiled_table_compares_each_shape_with_pycurl_fed_the_same_way() -> None:
    """In a process of its own, as `make bench-compiled` imports bench.compiled."""
    script = """if True:
        from pathlib import Path
        from bench import compiled
        field = compiled.sides(Path("p"), Path("c"), None, ["fresh", "reuse"])
        labels = [side.label for side in field]
        assert labels == [
            "engine-c-shape pure", "engine-c-shape compiled", "pycurl-pyuv-fresh",
            "engine-c-shape-reuse pure", "engine-c-shape-reuse compiled", "pycurl-pyuv",
            "aiohttp",
        ], labels
        # (wall, cpu) per run; 1,000 requests
        cost = {
            "engine-c-shape pure": (4.0, 4.0), "engine-c-shape compiled": (2.0, 2.0),
            "pycurl-pyuv-fresh": (1.6, 1.6), "engine-c-shape-reuse pure": (3.0, 3.0),
            "engine-c-shape-reuse compiled": (1.5, 1.5), "pycurl-pyuv": (1.0, 1.0),
            "aiohttp": (5.0, 5.0),
        }
        measured = {label: [cost[label]] for label in labels}
        rows = compiled.table(measured, 1000, field)
        cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]
        row = {c[0]: c for c in cells}
        # engine fresh against pycurl fresh: 1.6 / 2.0 = 0.80x its req/s, 1.25x its CPU
        assert row["engine-c-shape compiled"][-2:] == ["0.80x", "1.25x"], row
        assert row["engine-c-shape-reuse compiled"][-2:] == ["0.67x", "1.50x"], row
        assert row["aiohttp"][-2:] == ["-", "-"], row
        lines = compiled.targets(measured, "small")
        assert any("[fresh] req/s >= 0.6x" in t and "0.80x -> **pass**" in t for t in lines)
        assert any("[reuse] req/s >= 0.6x" in t and "0.67x -> **pass**" in t for t in lines)
        assert any("[fresh] req/s >= 1.5x aiohttp" in t and "2.50x" in t for t in lines)
        assert any("across shapes" in t and "req/s 0.50x" in t for t in lines), lines
        scale = compiled.targets(measured, "scale")
        assert any("[fresh] CPU <= 1.2x" in t and "1.25x -> **miss**" in t for t in scale)
        print("ok")
    """
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=99
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_callgrind_counts_per_request_from_the_totals_line() -> None:
    """bench.callgrind reads a callgrind file's totals and cancels start-up out."""
    script = """if True:
        from bench import callgrind
        text = "events: Ir\\nsummary: 900\\nfn=(1) main\\n0 5\\ntotals: 1000\\n"
        assert callgrind.totals(text) == 1000
        assert callgrind.totals("events: Ir\\nsummary: 77\\n") == 77
        try:
            callgrind.totals("events: Ir\\n")
        except ValueError:
            pass
        else:
            raise AssertionError("no totals accepted")
        # 400 requests: 2.0M; 2,400 requests: 6.0M -> 2,000 instructions a request
        assert callgrind.per_request(6_000_000, 2_000_000, 2400, 400) == 2000.0
        print("ok")
    """
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=99
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
