"""docs/daemon.md says what the daemon logs: every key a line carries is in its event's row,
daemon.started's keys are exactly those documented, and every option has its row."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

from hf_support import Daemon, Server, spawn

from hiperfifo.config import OPTIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "daemon.md"
ALWAYS = {"timestamp", "level", "event"}


def documented_events() -> dict[str, str]:
    """event name -> the keys column of its row in the Log events table."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Log events") :]
    section = section[: section.index("\n## ", 4)]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `([a-z_.]+)` \| [^|]+ \| (.+) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def named(column: str) -> set[str]:
    """The words of a keys column that can be keys (lower case, maybe with underscores)."""
    return set(re.findall(r"\b[a-z][a-z_]*\b", re.sub(r"`[^`]*`", "", column)))


def test_daemon_started_keys_are_exactly_the_documented_ones(
    run_daemon: Callable[..., Daemon],
) -> None:
    """The row lists fifo, created_fifo, pid, version and the settings: no more, no fewer."""
    column = documented_events()["daemon.started"]
    head, _, settings = column.partition("the settings:")
    keys = {part.strip() for part in head.split(",") if part.strip() and part.strip() != "and"}
    keys |= {re.sub(r"\(.*?\)", "", part).strip() for part in settings.split(",")}
    daemon = run_daemon()
    (started,) = daemon.events("daemon.started")
    daemon.write(b"stop\n")
    assert daemon.wait() == 0
    assert set(started) - ALWAYS == keys


def test_every_logged_key_is_in_its_events_row(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """A run with a fetch, junk, a drain, an abort and debug lines, and a failed start: each
    event is documented and each of its keys named in its row."""
    daemon = run_daemon("--log-level", "debug", "--max-host-connections", "1")
    daemon.write(
        f"{http_server.url('/size/10')} gopher://x\n{http_server.url('/hang')}\n".encode()
    )
    daemon.wait_for("transfer.done")
    daemon.wait_for("transfer.added", 2)
    daemon.signal(signal.SIGINT)
    daemon.wait_for("daemon.stopping")
    daemon.signal(signal.SIGINT)
    assert daemon.wait() == 130
    taken = tmp_path / "taken"
    taken.mkdir()
    log = tmp_path / "failed.log"
    proc = spawn(["--fifo", str(taken), "--log-file", str(log)])
    proc.communicate(timeout=20)
    assert proc.returncode == 2
    events = daemon.events() + Daemon(proc, taken, log).events()
    rows = documented_events()
    seen = {event["event"] for event in events}
    assert {"daemon.aborting", "daemon.failed", "transfer.debug", "input.rejected"} <= seen
    for event in events:
        assert event["event"] in rows, f"{event['event']} is not in docs/daemon.md"
        missing = set(event) - ALWAYS - named(rows[event["event"]])
        assert not missing, f"{event['event']}: {missing} not in its row"


def test_every_option_has_its_row() -> None:
    """Each option of config.OPTIONS appears in docs/daemon.md (whose tables say that each
    also reads HIPERFIFO_<NAME>)."""
    text = DOC.read_text(encoding="utf-8")
    assert "HIPERFIFO_<NAME>" in text
    for option in OPTIONS:
        assert f"`{option.flag}" in text, option.flag
