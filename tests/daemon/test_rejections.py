"""rejections.py: the first rejections one by one, then one summary line a second (pure)."""

from __future__ import annotations

from hiperfifo.rejections import MAX_REASONS, OTHER, RejectionReport, Summary


def run(report: RejectionReport, events: list[tuple[float, str]]) -> list[object]:
    """Feed (time, reason) rejections, calling due() before each as the daemon does; the
    lines it would log: a reason for a line of its own, a Summary for a sum."""
    lines: list[object] = []
    for now, reason in events:
        if (summary := report.due(now)) is not None:
            lines.append(summary)
        if report.add(reason, now):
            lines.append(reason)
    return lines


def test_a_few_rejections_are_each_shown() -> None:
    """Up to the burst within a second: every one on its own line, nothing summed."""
    report = RejectionReport(burst=10)
    lines = run(report, [(i * 0.05, f"r{i}") for i in range(10)])
    assert lines == [f"r{i}" for i in range(10)]
    assert report.due(5.0) is None


def test_a_flood_is_ten_lines_then_one_summary_a_second() -> None:
    """100,000 rejections over 5 s: 10 lines of their own, then one summary per second whose
    counts add up to the rest, with each reason counted."""
    report = RejectionReport(burst=10)
    events = [(i * 0.00005, "not UTF-8" if i % 3 else "NUL byte in token") for i in range(100_000)]
    lines = run(report, events)
    final = report.due(10.0)
    assert final is not None
    lines.append(final)
    shown = [line for line in lines if isinstance(line, str)]
    sums = [line for line in lines if isinstance(line, Summary)]
    assert len(shown) == 10
    assert all(isinstance(line, str) for line in lines[:10])
    assert 5 <= len(sums) <= 6
    assert sum(s.count for s in sums) == 100_000 - 10
    assert sum(s.reasons.get("NUL byte in token", 0) for s in sums) == 33_334 - 4
    assert all(s.count == sum(s.reasons.values()) for s in sums)


def test_after_a_quiet_second_rejections_are_shown_again() -> None:
    """The flood ends with its last summary; a rejection after a quiet window has its line."""
    report = RejectionReport(burst=2)
    lines = run(report, [(0.0, "a"), (0.1, "a"), (0.2, "a"), (0.3, "a")])
    assert lines == ["a", "a"]
    assert report.due(1.0) == Summary(2, {"a": 2})
    assert report.due(3.0) is None
    assert run(report, [(3.5, "b")]) == ["b"]


def test_distinct_reasons_are_bounded() -> None:
    """Junk with ever new reasons (schemes) cannot grow the counts without bound."""
    report = RejectionReport(burst=0)
    run(report, [(0.0, f"unsupported scheme 'x{i}'") for i in range(10_000)])
    summary = report.due(1.0)
    assert summary is not None
    assert len(summary.reasons) == MAX_REASONS + 1
    assert summary.reasons[OTHER] == 10_000 - MAX_REASONS
    assert summary.count == 10_000


def test_remaining_says_when_the_window_ends() -> None:
    """An alarm that fires a little early learns how long is left (None: no window open)."""
    report = RejectionReport(burst=1, window=1.0)
    assert report.remaining(0.0) is None
    report.add("a", 10.0)
    assert report.remaining(10.25) == 0.75
    assert report.remaining(11.5) == 0.0
