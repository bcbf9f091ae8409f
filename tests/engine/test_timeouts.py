"""Timeouts: connect_timeout_ms, timeout_ms and low_speed_limit/low_speed_time end in
OPERATION_TIMEDOUT (28), on time, and leave the multi ready for the next transfer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from servers import HELLO, Blackhole, HTTPServer, Server, never_answers, respond, trickle

from hiperfifo.engine import SOCKET_TIMEOUT, Code, Easy, Multi
from hiperfifo.engine.testing import FakeClock

Fetch = Callable[..., tuple[Any, bytes]]


def test_connect_timeout_ms_gives_28(
    fetch: Fetch, http_server: HTTPServer, serve: Callable[[Blackhole], Blackhole]
) -> None:
    """A connect that never completes ends with 28 after connect_timeout_ms (300 ms)."""
    hole = serve(Blackhole())
    easy, _ = fetch(hole.url(), connect_timeout_ms=300)
    assert easy.result == Code.OPERATION_TIMEDOUT
    assert 0.28 <= easy.total_time < 1.5
    assert easy.response_code == 0
    after, body = fetch(http_server.url())
    assert (after.result, body) == (Code.OK, HELLO)


def test_connect_timeout_ms_0_means_the_default_300_s(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """connect_timeout_ms=0 is libcurl's default (300 s), not a deadline at once."""
    assert Easy("http://127.0.0.1/", connect_timeout_ms=0).connect_timeout_ms == 300_000
    easy, body = fetch(http_server.url(), connect_timeout_ms=0)
    assert (easy.result, body) == (Code.OK, HELLO)


def test_connect_timeout_does_not_limit_a_slow_answer(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """connect_timeout_ms covers connecting only: a 0.5 s answer with 200 ms is fine."""
    slow = serve(HTTPServer(default=respond(HELLO, delay=0.5)))
    easy, body = fetch(slow.url(), connect_timeout_ms=200)
    assert (easy.result, body) == (Code.OK, HELLO)


def test_timeout_ms_gives_28_when_the_server_never_answers(
    fetch: Fetch, serve: Callable[[Server], Server]
) -> None:
    """A server that accepts and stays silent: 28 after timeout_ms (400 ms), connection dropped."""
    silent = serve(never_answers())
    easy, _ = fetch(silent.url(), timeout_ms=400)
    assert easy.result == Code.OPERATION_TIMEDOUT
    assert 0.38 <= easy.total_time < 1.5
    assert "time" in easy.error.lower()
    assert silent.wait_for(lambda: silent.active == 0, 2), "the timed-out connection is closed"


def test_timeout_ms_covers_the_whole_transfer(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """A body dribbling in for longer than timeout_ms ends with 28 though bytes keep coming."""
    dribble = serve(HTTPServer(default=trickle(b"x" * 100, interval=0.05)))
    easy, body = fetch(dribble.url(), timeout_ms=500)
    assert easy.result == Code.OPERATION_TIMEDOUT
    assert 0 < len(body) < 100
    assert easy.size_download == len(body)
    assert 0.48 <= easy.total_time < 1.5


def test_timeout_ms_counts_while_queued(
    make_driver: Callable[..., Any],
    serve: Callable[[Server], Server],
) -> None:
    """A transfer queued behind max_total_connections=1 still times out at its timeout_ms."""
    silent = serve(never_answers())
    drv = make_driver(max_total_connections=1)
    blocker = Easy(silent.url(), timeout_ms=3000)
    queued = Easy(silent.url(), timeout_ms=300)
    drv.multi.add_handle(blocker)
    drv.multi.add_handle(queued)
    try:
        for _ in range(100):
            if drv.messages:
                break
            drv.step(0.05)
    finally:
        drv.multi.remove_handle(blocker)
        drv.multi.remove_handle(queued)
    assert [(m.easy, m.result) for m in drv.messages] == [(queued, Code.OPERATION_TIMEDOUT)]
    assert 0.28 <= queued.total_time < 1.5
    assert silent.accepted == 1, "the queued transfer never had a connection"


def test_low_speed_limit_gives_28(fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]) -> None:
    """One byte every 0.3 s is below 100 B/s for low_speed_time (1 s): 28 after about 1 s."""
    loris = serve(HTTPServer(default=trickle(b"y" * 50, interval=0.3)))
    easy, body = fetch(loris.url(), low_speed_limit=100, low_speed_time=1)
    assert easy.result == Code.OPERATION_TIMEDOUT
    assert 0.9 <= easy.total_time < 3.0
    assert 0 < len(body) < 50


def test_low_speed_limit_also_covers_a_silent_server(
    fetch: Fetch, serve: Callable[[Server], Server]
) -> None:
    """A server that sends nothing at all is below any speed: 28 after low_speed_time."""
    silent = serve(never_answers())
    easy, _ = fetch(silent.url(), low_speed_limit=1, low_speed_time=1)
    assert easy.result == Code.OPERATION_TIMEDOUT
    assert 0.9 <= easy.total_time < 3.0


def test_fast_enough_transfer_is_not_cut_by_low_speed(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """About 100 B/s for 1.2 s stays above a 20 B/s limit: OK."""
    steady = serve(HTTPServer(default=trickle(b"z" * 120, interval=0.01)))
    easy, body = fetch(steady.url(), low_speed_limit=20, low_speed_time=1)
    assert (easy.result, body) == (Code.OK, b"z" * 120)


def test_timeout_follows_the_injected_clock(serve: Callable[[Server], Server]) -> None:
    """With a fake clock, timeout_ms expires when the clock says so, not the wall clock."""
    silent = serve(never_answers())
    clock = FakeClock()
    with Multi(clock=clock) as multi:
        easy = Easy(silent.url(), timeout_ms=60_000)
        multi.add_handle(easy)
        assert multi.socket_action(SOCKET_TIMEOUT) == 1
        assert 59_000 <= multi.timeout() <= 60_000
        clock.advance(59.9)
        assert multi.socket_action(SOCKET_TIMEOUT) == 1
        clock.advance(0.2)
        assert multi.socket_action(SOCKET_TIMEOUT) == 0
        message = multi.info_read()
        assert message is not None
        assert (message.easy, message.result) == (easy, Code.OPERATION_TIMEDOUT)
        assert 60.0 <= easy.total_time < 60.2
        multi.remove_handle(easy)
