"""10 MB of random bytes into the FIFO: a bounded number of log lines that still account for
every rejection, and memory that stays flat (issue 12: 228,727 lines, 59 MB of log in 4 s)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from hf_support import WAIT, Daemon, status_kib

from hiperfifo.sources.base import singles
from hiperfifo.sources.fifo import Rejected, Tokenizer, Url

SIZE = 10 * 1024 * 1024


def test_ten_megabytes_of_junk_is_a_bounded_number_of_lines(
    run_daemon: Callable[..., Daemon],
) -> None:
    """At most 10 lines of their own, then one summary (count, reasons) a second; the counts
    add up to every rejected token; peak RSS grows by less than 32 MiB."""
    junk = random.Random(12).randbytes(SIZE)
    tokenizer = Tokenizer(8192)
    items = singles(tokenizer.feed(junk) + tokenizer.feed(b"\n"))
    assert not any(isinstance(item, Url) for item in items)
    expected = sum(isinstance(item, Rejected) for item in items)
    assert expected > 100_000
    daemon = run_daemon("--token-timeout", "0")
    before = status_kib(daemon.proc.pid, "VmHWM")
    started = time.monotonic()
    writer = threading.Thread(target=daemon.write, args=(junk + b"\n",))
    writer.start()
    writer.join(WAIT * 6)
    assert not writer.is_alive()

    def counted() -> int:
        lines = daemon.events("input.rejected")
        return sum(e.get("count", 1) for e in lines)

    deadline = time.monotonic() + WAIT * 3
    while counted() < expected:
        assert time.monotonic() < deadline, f"{counted()} of {expected} rejections reported"
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    peak = status_kib(daemon.proc.pid, "VmHWM")
    daemon.write(b"stop\n")
    assert daemon.wait() == 0
    lines = daemon.events("input.rejected")
    assert counted() == expected
    single = [e for e in lines if "token" in e]
    summaries = [e for e in lines if "count" in e]
    assert len(single) == 10
    assert len(summaries) <= elapsed + 2
    for summary in summaries:
        assert summary["count"] == sum(summary["reasons"].values())
        assert summary["level"] == "warning"
    assert peak - before < 32 * 1024, f"peak RSS {before} -> {peak} KiB"
