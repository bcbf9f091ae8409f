"""Idle kept-alive connections expire after max_idle_age (libcurl's CURLOPT_MAXAGE_CONN)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from servers import HTTPServer, respond

from hiperfifo.engine import Code, Easy
from hiperfifo.engine.testing import FakeClock


def test_idle_connection_reused_before_max_age_and_replaced_after(
    make_driver: Callable[..., Any], serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Reused at 100 s idle; at 119 s idle it is closed and a new connection is made."""
    server = serve(HTTPServer({"/": respond(b"hi")}))
    clock = FakeClock()
    drv = make_driver(clock=clock, max_idle_age=118.0)
    easies = []
    for idle in (0.0, 100.0, 119.0):
        clock.advance(idle)
        easy = Easy(server.url("/"))
        drv.perform(easy)
        easies.append(easy)
    assert [e.result for e in easies] == [Code.OK] * 3
    assert [e.num_connects for e in easies] == [1, 0, 1]
    assert server.accepted == 2
