"""Medians, tables, targets, the machine and the versions, and bench/README.md's blocks."""

from __future__ import annotations

import os
import platform
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import nginx, workspace
from bench.contenders import Contender, Sample, Workload, curl_version

ENGINES = ("engine-selector", "engine-pyuv")


@dataclass
class Row:
    contender: Contender
    samples: list[Sample]

    @property
    def name(self) -> str:
        return self.contender.name

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.status == "ok"]

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(s, attr) for s in self.good))

    @property
    def usable(self) -> bool:
        return bool(self.samples) and len(self.good) == len(self.samples)

    @property
    def count(self) -> int:
        return self.good[0].count

    def rate(self, work: Workload, cold: bool = False) -> float:
        """req/s (small, scale) or MB/s (bulk), from the median wall time (or cold wall)."""
        wall = self.median("cold_wall" if cold else "wall")
        if work.name == "bulk":
            return self.count * nginx.SIZES[work.path] / wall / 1e6
        return self.count / wall

    def cpu_per_request_us(self) -> float:
        return self.median("cpu") / self.count * 1e6

    def per_transfer_kib(self) -> float:
        return statistics.median((s.peak_kib - s.base_kib) / s.count for s in self.good)

    def problem(self) -> str:
        bad = [s for s in self.samples if s.status != "ok"]
        if not bad:
            return ""
        return f"{bad[0].status}: {bad[0].note}" + (
            f" ({len(bad)}/{len(self.samples)} runs)" if len(self.samples) > 1 else ""
        )


def fmt(value: float, digits: int = 2) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def _markdown(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(cells) + " |" for cells in rows]


def table(work: Workload, rows: list[Row]) -> list[str]:
    """The markdown table of one workload (rows that failed say why instead of numbers)."""
    engines = {r.name: r for r in rows if r.name in ENGINES and r.usable}
    scale = work.name == "scale"
    unit = "MB/s" if work.name == "bulk" else "req/s"
    head = ["contender", "n", "wall s", "CPU s", "CPU us/req", "nginx CPU s", "peak RSS MiB"]
    if scale:
        head += ["RSS/transfer KiB", "CPU / engine-sel", "CPU / engine-uv", "RSS/tr / engine-uv"]
    else:
        head += [unit, "/ engine-sel", "/ engine-uv"]
    head += ["cold wall s", "cold CPU s"] + ([] if scale else [f"cold {unit}"])
    head.append("others' cores")
    cells_of: list[list[str]] = []
    for row in rows:
        if not row.usable:
            cells = [row.name, f"{row.samples[0].count:,}" if row.samples else ""]
            cells_of.append(cells + [row.problem()] + [""] * (len(head) - 3))
            continue
        n = row.count
        cells = [
            row.name,
            f"{n:,}" + (" (reduced)" if n != work.count else ""),
            fmt(row.median("wall")),
            fmt(row.median("cpu")),
            fmt(row.cpu_per_request_us(), 1),
            fmt(row.median("nginx_cpu")),
            fmt(row.median("peak_kib") / 1024, 1),
        ]
        if scale:
            per = row.per_transfer_kib()
            cells.append(fmt(per, 1))
            for eng in ENGINES:
                e = engines.get(eng)
                cells.append(f"{row.median('cpu') / e.median('cpu'):.2f}x" if e else "-")
            e = engines.get("engine-pyuv")
            cells.append(f"{per / e.per_transfer_kib():.2f}x" if e else "-")
        else:
            rate = row.rate(work)
            cells.append(fmt(rate, 1))
            for eng in ENGINES:
                e = engines.get(eng)
                cells.append(f"{rate / e.rate(work):.2f}x" if e else "-")
        cells += [fmt(row.median("cold_wall")), fmt(row.median("cold_cpu"))]
        if not scale:
            cells.append(fmt(row.rate(work, cold=True), 1))
        cells.append(f"{max(s.crowded for s in row.good):.2f}")
        cells_of.append(cells)
    return _markdown(head, cells_of)


def compare(work: Workload, rows: list[Row]) -> list[str]:
    """Baseline rows beside the rows they are the baseline of: after / before, per contender."""
    now = {r.contender.kind: r for r in rows if not r.contender.label and r.usable}
    pairs = [(r, now[r.contender.kind]) for r in rows if r.contender.label and r.usable]
    pairs = [(before, after) for before, after in pairs if after.usable]
    if not pairs:
        return []
    unit = "MB/s" if work.name == "bulk" else "req/s"
    head = ["contender", f"{unit} before", f"{unit} after", "after / before"]
    head += ["after / before, median per run"]
    head += ["CPU us/req before", "CPU us/req after", "CPU after / before"]
    head += [f"cold {unit} after / before", "cold CPU after / before"]
    cells_of = []
    for before, after in pairs:
        cells_of.append(
            [
                after.contender.kind + f" (@{before.contender.label} -> now)",
                fmt(before.rate(work), 1),
                fmt(after.rate(work), 1),
                f"{after.rate(work) / before.rate(work):.2f}x",
                f"{statistics.median(per_run(after, before, sample_rate)):.2f}x",
                fmt(before.cpu_per_request_us(), 1),
                fmt(after.cpu_per_request_us(), 1),
                f"{after.median('cpu') / before.median('cpu'):.2f}x",
                f"{after.rate(work, cold=True) / before.rate(work, cold=True):.2f}x",
                f"{after.median('cold_cpu') / before.median('cold_cpu'):.2f}x",
            ]
        )
    return _markdown(head, cells_of)


def sample_rate(s: Sample) -> float:
    """Requests (bulk: transfers) per second of one sample: ratios of rows of one workload."""
    return s.count / s.wall


def per_run(a: Row, b: Row, f: Callable[[Sample], float]) -> list[float]:
    """f(a's sample) / f(b's sample) of each run: the two were measured seconds apart (in
    alternating order), so the machine's slower drift cancels in each ratio."""
    return [f(x) / f(y) for x, y in zip(a.samples, b.samples, strict=True)]


def targets(work: Workload, rows: list[Row]) -> list[str]:
    """The issues' targets for this workload: measured ratio, pass or miss.

    A ratio between two contenders is judged on the median of its per-run ratios; the ratio
    of the two rows' medians (what the table's columns divide) is printed beside it."""
    by = {r.name: r for r in rows if r.usable}
    out: list[str] = []

    def check(label: str, value: float | None, ok: Callable[[float], bool], text: str) -> None:
        if value is None:
            out.append(f"- {label}: not measured")
        else:
            out.append(f"- {label}: {text.format(value)} -> **{'pass' if ok(value) else 'miss'}**")

    def check_ratio(
        label: str, a: str, b: str, f: Callable[[Sample], float], ok: Callable[[float], bool]
    ) -> None:
        if a not in by or b not in by:
            out.append(f"- {label}: not measured")
            return
        runs = per_run(by[a], by[b], f)
        verdict = "pass" if ok(statistics.median(runs)) else "miss"
        of_medians = statistics.median(f(s) for s in by[a].good) / statistics.median(
            f(s) for s in by[b].good
        )
        how = (
            f"median of {len(runs)} per-run ratios ({min(runs):.2f}-{max(runs):.2f}); "
            f"ratio of medians {of_medians:.2f}x"
            if len(runs) > 1
            else "1 run"
        )
        out.append(f"- {label}: {statistics.median(runs):.2f}x ({how}) -> **{verdict}**")

    def cpu(s: Sample) -> float:
        return s.cpu

    for eng in ENGINES:
        if work.name == "small":
            check_ratio(f"{eng} req/s >= 1.2x aiohttp's (6)", eng, "aiohttp", sample_rate,
                        lambda v: v >= 1.2)  # fmt: skip
        elif work.name == "bulk":
            check_ratio(f"{eng} MB/s >= 1.0x pycurl-pyuv's (6)", eng, "pycurl-pyuv", sample_rate,
                        lambda v: v >= 1.0)  # fmt: skip
        else:
            check_ratio(f"{eng} CPU <= 1.5x pycurl-pyuv's (6)", eng, "pycurl-pyuv", cpu,
                        lambda v: v <= 1.5)  # fmt: skip
            check(
                f"{eng} RSS per transfer <= 10 KiB (6)",
                by[eng].per_transfer_kib() if eng in by else None,
                lambda v: v <= 10,
                "{:.1f} KiB",
            )
    if work.name == "small":
        check_ratio(
            "daemon req/s >= 0.85x engine-pyuv's (15.3: logging, FIFO, bookkeeping <= 15%)",
            "daemon", "engine-pyuv", sample_rate, lambda v: v >= 0.85,
        )  # fmt: skip
    if work.name == "scale":
        check_ratio("daemon CPU <= 1.5x engine-pyuv's (15.3)", "daemon", "engine-pyuv", cpu,
                    lambda v: v <= 1.5)  # fmt: skip
    return out


def section(work: Workload, runs: int, rows: list[Row]) -> str:
    """The tables and targets of one workload: printed, and the README block."""
    lines, goals, versus = table(work, rows), targets(work, rows), compare(work, rows)
    median = f"median of {runs} runs" if runs > 1 else "1 run"
    parts = [f"### {work.name}: {work.what} ({median})", "", *lines, "", "Targets:", "", *goals]
    if versus:
        parts += ["", "Before (baseline commit) and after, in this run:", "", *versus]
    return "\n".join(parts)


def one_line(sample: Sample, work: Workload) -> str:
    """A sample as printed while the benchmark runs."""
    if sample.status != "ok":
        return f"{sample.status.upper()}: {sample.note}"
    rate = (
        f"{sample.bytes / sample.wall / 1e6:,.0f} MB/s"
        if work.name == "bulk"
        else f"{sample.count / sample.wall:,.0f} req/s"
    )
    per = (sample.peak_kib - sample.base_kib) / sample.count
    peak = sample.peak_kib / 1024
    return (
        f"wall {sample.wall:7.2f} s  cpu {sample.cpu:6.2f} s  peak {peak:6.1f} MiB  {rate}"
        + (f"  {per:.1f} KiB/transfer" if work.name == "scale" else "")
        + f"  cold {sample.cold_wall:.2f} s"
        + f"  (nginx {sample.nginx_cpu:.2f} s, others {sample.crowded:.2f} cores)"
    )


# -- machine, versions, README ------------------------------------------------------------


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": model or platform.processor() or "?",
        "kernel": platform.release(),
        "memory": f"{mem:.0f} GiB",
    }


def versions(ref: str | None = None, baseline: str | None = None) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist

    def v(name: str) -> str:
        try:
            return dist(name)
        except PackageNotFoundError:
            return "not installed"

    out = {"python": platform.python_version()}
    out["hiperfifo"] = f"{v('hiperfifo')} ({workspace.describe(ref)})"
    if baseline is not None:
        out["baseline"] = workspace.describe(baseline)
    out["h11"] = v("h11")
    out["structlog"] = v("structlog")
    try:
        import pyuv

        out["pyuv"] = f"{pyuv.__version__} (libuv {pyuv.LIBUV_VERSION})"
    except ImportError:
        out["pyuv"] = "not installed"
    try:
        import pycurl

        parts = dict(p.split("/", 1) for p in pycurl.version.split() if "/" in p)
        out["pycurl"] = f"{parts.get('PycURL', '?')} (libcurl {parts.get('libcurl', '?')})"
    except ImportError:
        out["pycurl"] = "not installed"
    out["aiohttp"] = v("aiohttp")
    out["httpx"] = f"{v('httpx')} (httpcore {v('httpcore')})"
    out["curl"] = ".".join(map(str, curl_version()[1])) or "not installed"
    out["nginx"] = nginx.version()
    return out


def replace_block(text: str, name: str, body: str) -> str:
    """Put `body` between <!-- name --> and <!-- /name --> (appended when absent)."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def write_readme(blocks: dict[str, str], readme: Path = workspace.README) -> None:
    text = readme.read_text() if readme.exists() else "# Benchmark\n"
    for name, body in blocks.items():
        text = replace_block(text, name, body)
    readme.write_text(text)
