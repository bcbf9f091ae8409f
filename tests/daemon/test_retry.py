"""--retry: the policy in pure code, then the real daemon against a server that fails."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hf_support import Daemon
from servers import HTTPServer, Peer, Request, respond

from hiperfifo.engine import Code
from hiperfifo.engine.testing import FakeClock
from hiperfifo.retry import (
    TIMER_SLACK,
    RetryAfter,
    RetryPolicy,
    RetryPolicyError,
    RetryWaits,
    parse_retry_after,
)

# -- the policy ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "status", "transient"),
    [
        (Code.COULDNT_CONNECT, None, True),
        (Code.OPERATION_TIMEDOUT, None, True),
        (Code.GOT_NOTHING, None, True),
        (Code.SEND_ERROR, None, True),
        (Code.RECV_ERROR, None, True),
        (Code.OK, 503, True),
        (Code.HTTP_RETURNED_ERROR, 429, True),
        (Code.OK, 408, True),
        (Code.OK, 404, False),
        (Code.HTTP_RETURNED_ERROR, 404, False),
        (Code.OK, 200, False),
        (Code.COULDNT_RESOLVE_HOST, None, False),
        (Code.PEER_FAILED_VERIFICATION, None, False),
        (Code.PARTIAL_FILE, None, False),
    ],
)
def test_transient_results(result: Code, status: int | None, transient: bool) -> None:
    """Only curl's transient failures are retried: timeouts, resets, 408/429/5xx gateways."""
    assert RetryPolicy(retries=1).is_transient(result, status) is transient


def test_backoff_doubles_from_one_second_with_at_most_25_percent_jitter() -> None:
    """1, 2, 4, 8 s... (x1.00 to x1.25), capped at 10 minutes; --retry-delay fixes it."""
    policy = RetryPolicy(retries=20)
    assert [policy.backoff(n, 0.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.backoff(3, 0.999) == pytest.approx(4.0 * 1.24975)
    assert policy.backoff(15, 0.0) == 600.0
    assert RetryPolicy(retries=2, delay=0.3).backoff(5, 0.9) == 0.3


def test_next_delay_honours_retry_after_and_the_max_time_and_count() -> None:
    """Retry-After wins when longer; no retry past --retry or past --retry-max-time."""
    policy = RetryPolicy(retries=2, max_time=10.0)
    assert policy.next_delay(1, 0.0, None, 0.0) == 1.0
    assert policy.next_delay(1, 0.0, 7.0, 0.0) == 7.0
    assert policy.next_delay(2, 0.0, 0.5, 0.0) == 2.0
    assert policy.next_delay(3, 0.0, None, 0.0) is None
    assert policy.next_delay(1, 4.0, 7.0, 0.0) is None  # would start at 11 s > 10 s
    assert RetryPolicy(retries=0).next_delay(1, 0.0, None, 0.0) is None
    with pytest.raises(RetryPolicyError, match="--retry-max-time"):
        RetryPolicy(retries=1, max_time=float("nan"))


def test_retry_after_seconds_http_date_and_garbage() -> None:
    """Retry-After: delta-seconds, or an HTTP-date counted from now; junk is ignored."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=9), usegmt=True), now) == 9
    assert parse_retry_after("Fri, 02 Jan 2026 03:04:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None


def test_retry_after_header_function_forgets_it_at_each_new_response() -> None:
    """The header_function keeps the last response's Retry-After; a redirect's is dropped."""
    catcher = RetryAfter()
    for line in (b"HTTP/1.1 302 Found\r\n", b"Retry-After: 5\r\n", b"HTTP/1.1 503 No\r\n"):
        catcher(line)
    assert catcher.seconds is None
    catcher(b"retry-after:  3\r\n")
    assert catcher.seconds == 3.0


class FakeAlarm:
    """driver.Alarm's interface: remembers when it was last set to go off."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.at: float | None = None

    def set(self, seconds: float) -> None:
        self.at = self.clock() + seconds

    def cancel(self) -> None:
        self.at = None


def test_retry_waits_pop_due_ids_in_order_with_the_alarm_at_the_earliest() -> None:
    """Earliest first; the alarm always points at the earliest wait; ids due within the
    timer slack count as due; pop_later takes out the ones due after an instant."""
    clock = FakeClock(100.0)
    alarm = FakeAlarm(clock)
    waits = RetryWaits(alarm, clock)
    waits.wait(1, 5.0)
    waits.wait(2, 3.0)
    waits.wait(3, 4.0)
    assert alarm.at == 103.0
    assert waits.pop_later(104.5) == [1]
    assert alarm.at == 103.0
    clock.advance(4.0 - TIMER_SLACK / 2)
    assert waits.pop_due() == [2, 3]
    assert (len(waits), alarm.at) == (0, None)
    waits.wait(4, 1.0)
    assert 4 in waits
    assert alarm.at == clock() + 1.0
    assert waits.pop_due() == []


# -- a server that fails the first N requests of each key ----------------------


class FlakyServer(HTTPServer):
    """GET /KEY?fail=N&code=C&ra=R: the first N requests to KEY answer C (Retry-After: R;
    ra=date+S: an HTTP date S seconds from the answer), then 200. With how=hang,
    how=nothing or how=garbage instead, the first N requests get no answer until the client
    gives up (28 with --timeout), a close without a byte (52), or a broken chunked body (56).
    `hits` has the time of each request, per path."""

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        super().__init__(default=self._answer)

    def _answer(self, request: Request, peer: Peer) -> bool:
        parts = urlsplit(request.target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        count = self.note(parts.path)
        how = query.get("how", "status")
        failing = count <= int(query.get("fail", "0"))
        if failing and how == "hang":  # until the client times out and closes
            peer.hold()
            return False
        if failing and how == "nothing":
            return False
        if failing and how == "garbage":
            peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n")
            return False
        status, body = (
            (int(query.get("code", "503")), b"try again\n") if failing else (200, b"finally ok\n")
        )
        headers = []
        if status != 200 and "ra" in query:
            retry_after = query["ra"]
            if retry_after.startswith("date+"):
                later = datetime.now(UTC) + timedelta(seconds=float(retry_after[5:]))
                retry_after = format_datetime(later, usegmt=True)
            headers.append(("Retry-After", retry_after))
        return respond(body, status=status, reason="Whatever", headers=headers)(request, peer)

    def note(self, key: str) -> int:
        with self._lock:
            self.hits.setdefault(key, []).append(time.monotonic())
            return len(self.hits[key])

    def url(self, key: str, **query: object) -> str:  # type: ignore[override]
        args = "&".join(f"{k}={quote(str(v))}" for k, v in query.items())
        return f"http://{self.netloc}/{key}?{args}"

    def gaps(self, key: str) -> list[float]:
        with self._lock:
            times = list(self.hits.get("/" + key, []))
        return [b - a for a, b in itertools.pairwise(times)]


@pytest.fixture
def flaky(serve: Callable[[FlakyServer], FlakyServer]) -> FlakyServer:
    return serve(FlakyServer())


# -- the daemon ------------------------------------------------------------------


def test_503_twice_then_success_backs_off_one_then_two_seconds(
    run_daemon: Callable[..., Daemon], flaky: FlakyServer, tmp_path: Path
) -> None:
    """--retry 3: 503, 503, 200 → two transfer.retry lines, 1 s then 2 s apart, one done line."""
    out = tmp_path / "out"
    daemon = run_daemon("--retry", "3", "--output", str(out))
    daemon.write(f"{flaky.url('a', fail=2)}\n".encode())
    done = daemon.wait_for("transfer.done", timeout=10)[0]
    retries = daemon.events("transfer.retry")
    assert [(r["attempt"], r["result"], r["status"]) for r in retries] == [
        (1, 0, 503),
        (2, 0, 503),
    ]
    assert 1.0 <= retries[0]["delay"] <= 1.25
    assert 2.0 <= retries[1]["delay"] <= 2.5
    first, second = flaky.gaps("a")
    assert 0.95 <= first <= 1.25 + 0.3
    assert 1.95 <= second <= 2.5 + 0.3
    assert (done["result"], done["status"], done["attempts"]) == (0, 200, 3)
    assert done["elapsed"] >= 3.0
    assert (out / "a").read_bytes() == b"finally ok\n"
    assert sorted(p.name for p in out.iterdir()) == ["a"]  # no .part of the failed attempts
    daemon.write(b"stop\n")
    assert daemon.wait() == 0
    assert len(daemon.events("transfer.done")) == 1


def test_retry_after_is_honoured_when_longer_than_the_backoff(
    run_daemon: Callable[..., Daemon], flaky: FlakyServer
) -> None:
    """429 with Retry-After: 2 and --retry-delay 0.1: the next attempt comes 2 s later."""
    daemon = run_daemon("--retry", "2", "--retry-delay", "0.1")
    daemon.write(f"{flaky.url('b', fail=1, code=429, ra=2)}\n".encode())
    done = daemon.wait_for("transfer.done", timeout=10)[0]
    (retry,) = daemon.events("transfer.retry")
    assert (retry["status"], retry["retry_after"], retry["delay"]) == (429, 2.0, 2.0)
    assert 1.95 <= flaky.gaps("b")[0] <= 2.5
    assert (done["status"], done["attempts"]) == (200, 2)


def test_non_transient_404_is_not_retried(
    run_daemon: Callable[..., Daemon], flaky: FlakyServer
) -> None:
    """--retry 3 --fail: a 404 ends at once with 22, one request, no transfer.retry."""
    daemon = run_daemon("--retry", "3", "--fail")
    daemon.write(f"{flaky.url('c', fail=5, code=404)}\nstop\n".encode())
    assert daemon.wait() == 0
    (done,) = daemon.events("transfer.done")
    assert (done["result"], done["status"], done["attempts"]) == (22, 404, 1)
    assert daemon.events("transfer.retry") == []
    assert len(flaky.hits["/c"]) == 1


def test_retry_max_time_bounds_the_series(
    run_daemon: Callable[..., Daemon], flaky: FlakyServer
) -> None:
    """Always 503, --retry 10 --retry-delay 0.4 --retry-max-time 1: attempts due at 0, 0.4,
    0.8 s; the next (1.2 s) would start past the bound, so none is scheduled."""
    daemon = run_daemon("--retry", "10", "--retry-delay", "0.4", "--retry-max-time", "1")
    daemon.write(f"{flaky.url('d', fail=99)}\nstop\n".encode())
    assert daemon.wait() == 0
    (done,) = daemon.events("transfer.done")
    assert (done["result"], done["status"], done["attempts"]) == (0, 503, 3)
    assert len(flaky.hits["/d"]) == 3
    assert [r["delay"] for r in daemon.events("transfer.retry")] == [0.4, 0.4]
    assert all(gap >= 0.39 for gap in flaky.gaps("d")), flaky.gaps("d")  # waits, not sooner


def test_connection_refused_is_retried_and_ends_with_7(
    run_daemon: Callable[..., Daemon], dead_port: int
) -> None:
    """Nothing listening, --retry 2 --retry-delay 0.2: two retries, then result 7 once."""
    daemon = run_daemon("--retry", "2", "--retry-delay", "0.2")
    daemon.write(f"http://127.0.0.1:{dead_port}/x\nstop\n".encode())
    assert daemon.wait() == 0
    assert [r["result"] for r in daemon.events("transfer.retry")] == [7, 7]
    (done,) = daemon.events("transfer.done")
    assert (done["result"], done["attempts"]) == (7, 3)


def test_stop_ends_a_retry_due_after_the_drain_bound_with_its_last_result(
    run_daemon: Callable[..., Daemon], flaky: FlakyServer
) -> None:
    """stop while a retry waits 60 s (Retry-After) > --shutdown-timeout: done at once, 503."""
    daemon = run_daemon("--retry", "5", "--shutdown-timeout", "5")
    daemon.write(f"{flaky.url('e', fail=99, ra=60)}\n".encode())
    daemon.wait_for("transfer.retry")
    stopped = time.monotonic()
    daemon.write(b"stop\n")
    assert daemon.wait() == 0
    assert time.monotonic() - stopped < 3
    (done,) = daemon.events("transfer.done")
    assert (done["result"], done["status"], done["attempts"]) == (0, 503, 1)
    assert len(flaky.hits["/e"]) == 1


def test_retries_within_the_drain_bound_still_happen_after_stop(
    run_daemon: Callable[..., Daemon], flaky: FlakyServer
) -> None:
    """URL then stop in one write (a batch): 503, then 200 after 0.3 s; SIGINT then aborts."""
    daemon = run_daemon("--retry", "3", "--retry-delay", "0.3", "--shutdown-timeout", "5")
    daemon.write(f"{flaky.url('f', fail=1)}\n{flaky.url('g', fail=99, ra=2)}\nstop\n".encode())
    (first,) = daemon.wait_for("transfer.done")
    assert "/f?" in first["url"]
    assert (first["result"], first["status"], first["attempts"]) == (0, 200, 2)
    daemon.wait_for("transfer.retry", 2)
    daemon.signal(signal.SIGINT)  # the first SIGINT while stopping: abort at once
    assert daemon.wait() == 130
    late = daemon.events("transfer.done")[1]
    assert (late["result"], late["status"]) == (0, 503)  # waiting, not running: not 42


@pytest.mark.parametrize("code", [500, 502, 504, 408])
def test_each_transient_status_is_retried_by_the_daemon(
    run_daemon: Callable[..., Daemon], flaky: FlakyServer, code: int
) -> None:
    """--retry 2 --retry-delay 0.1: 500, 502, 504 (and 408) once, then 200: one
    transfer.retry naming the status, done OK after 2 attempts."""
    daemon = run_daemon("--retry", "2", "--retry-delay", "0.1")
    daemon.write(f"{flaky.url('s', fail=1, code=code)}\nstop\n".encode())
    assert daemon.wait() == 0
    (retry,) = daemon.events("transfer.retry")
    assert (retry["attempt"], retry["result"], retry["status"]) == (1, 0, code)
    (done,) = daemon.events("transfer.done")
    assert (done["result"], done["status"], done["attempts"]) == (0, 200, 2)
    assert len(flaky.hits["/s"]) == 2


@pytest.mark.parametrize(
    ("how", "result"), [("hang", 28), ("nothing", 52), ("garbage", 56)], ids=str
)
def test_each_transient_result_is_retried_by_the_daemon(
    run_daemon: Callable[..., Daemon], flaky: FlakyServer, how: str, result: int
) -> None:
    """--retry 2 --retry-delay 0.1 --timeout 1: a timeout (28), an empty reply (52) and a
    broken body (56) on the first attempt are retried; the second attempt is OK."""
    daemon = run_daemon("--retry", "2", "--retry-delay", "0.1", "--timeout", "1")
    daemon.write(f"{flaky.url('t', fail=1, how=how)}\nstop\n".encode())
    assert daemon.wait() == 0
    (retry,) = daemon.events("transfer.retry")
    assert (retry["attempt"], retry["result"]) == (1, result), retry
    (done,) = daemon.events("transfer.done")
    assert (done["result"], done["status"], done["attempts"]) == (0, 200, 2)
    assert len(flaky.hits["/t"]) == 2


def test_retry_after_as_an_http_date_is_honoured_end_to_end(
    run_daemon: Callable[..., Daemon], flaky: FlakyServer
) -> None:
    """503 with `Retry-After: <HTTP date 5 s ahead>` (made as the answer is sent) and
    --retry-delay 0.1: the second attempt waits for that date, not 0.1 s. The date has whole
    seconds and a loaded machine takes a while to read it, so the wait is between 1 s (3 s
    of latency tolerated) and 5 s, and the server sees the retry no sooner."""
    daemon = run_daemon("--retry", "2", "--retry-delay", "0.1")
    daemon.write(f"{flaky.url('h', fail=1, ra='date+5')}\n".encode())
    (done,) = daemon.wait_for("transfer.done", timeout=20)
    (retry,) = daemon.events("transfer.retry")
    assert retry["status"] == 503
    assert 1.0 <= retry["retry_after"] <= 5.05, retry
    assert retry["delay"] == pytest.approx(retry["retry_after"], abs=0.01)
    (gap,) = flaky.gaps("h")
    assert gap >= retry["retry_after"] - 0.05, (gap, retry)
    assert (done["result"], done["status"], done["attempts"]) == (0, 200, 2)
    daemon.write(b"stop\n")
    assert daemon.wait() == 0
