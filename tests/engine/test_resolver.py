"""Name resolution that never blocks, IPv6, and happy eyeballs, against real loopback servers.

Test names resolve through the `names` fixture, handed to the Multi as `getaddrinfo`."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from names import Names
from servers import HELLO, Blackhole, HTTPServer, closed_port, respond

from hiperfifo.engine import POLL_IN, POLL_REMOVE, Code, Easy

Fetch = Callable[..., tuple[Any, bytes]]


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1 on this machine")


def engine_socket_calls(drv: Any) -> list[tuple[Any, ...]]:
    """Socket callback calls for the engine's own sockets (easy None)."""
    return [c for c in drv.calls if c[0] == "socket" and c[1] is None]


def loopback_system_name() -> str | None:
    """This machine's host name, if it resolves to loopback addresses only."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        return None
    addresses = {info[4][0] for info in infos}
    return name if addresses and addresses <= {"127.0.0.1", "::1"} else None


def test_name_resolves_on_a_thread_that_wakes_the_loop_through_an_announced_socket(
    drv: Any, fetch: Fetch, http_server: HTTPServer, names: Names
) -> None:
    """A looked-up name: the resolver's wake-up socket is announced (easy None, IN), then
    REMOVEd; the transfer succeeds on the resolved address."""
    names["resolver.test"] = ["127.0.0.1"]
    easy, body = fetch(http_server.url(host="resolver.test"))
    assert (easy.result, body) == (Code.OK, HELLO)
    assert easy.primary_ip == "127.0.0.1"
    calls = engine_socket_calls(drv)
    assert [c[3] for c in calls] == [POLL_IN, POLL_REMOVE]
    assert http_server.requests[0].header("host") == f"resolver.test:{http_server.port}"
    assert drv.watched == {}


@pytest.mark.skipif(loopback_system_name() is None, reason="host name is not loopback-only")
def test_system_host_name_resolves_through_the_real_resolver(
    drv: Any, fetch: Fetch, http_server: HTTPServer
) -> None:
    """This machine's own name (from /etc/hosts), resolved for real on a resolver thread."""
    name = loopback_system_name()
    assert name is not None
    easy, body = fetch(http_server.url(host=name))
    assert (easy.result, body) == (Code.OK, HELLO)
    assert [c[3] for c in engine_socket_calls(drv)] == [POLL_IN, POLL_REMOVE]


def test_unresolvable_name_wakes_the_loop_and_fails_6(drv: Any, fetch: Fetch) -> None:
    """A failed lookup also comes back through the wake-up socket: 6, nothing left watched."""
    easy, _ = fetch("http://nonexistent.invalid/")
    assert easy.result == Code.COULDNT_RESOLVE_HOST
    assert [c[3] for c in engine_socket_calls(drv)] == [POLL_IN, POLL_REMOVE]
    assert drv.watched == {}


def test_numeric_addresses_announce_no_resolver_socket(
    drv: Any, fetch: Fetch, http_server: HTTPServer
) -> None:
    """An IPv4 literal needs no lookup: no engine socket is ever announced."""
    for _ in range(3):
        easy, _ = fetch(http_server.url())
        assert easy.result == Code.OK
    assert engine_socket_calls(drv) == []


def test_many_names_share_the_wake_up_socket(
    drv: Any, http_server: HTTPServer, names: Names
) -> None:
    """Ten concurrent lookups share one wake-up socket, REMOVEd when the last one is done."""
    for i in range(10):
        names[f"n{i}.test"] = ["127.0.0.1"]
    easies = [Easy(http_server.url(host=f"n{i}.test")) for i in range(10)]
    drv.perform(*easies)
    assert [e.result for e in easies] == [Code.OK] * 10
    calls = engine_socket_calls(drv)
    assert len({c[2] for c in calls}) == 1
    whats = [c[3] for c in calls]
    assert (whats[0], whats[-1]) == (POLL_IN, POLL_REMOVE)
    assert drv.watched == {}


@needs_ipv6
def test_ipv6_literal(fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]) -> None:
    """http://[::1]:port/ connects over IPv6 and sends Host: [::1]:port."""
    server = serve(HTTPServer(default=respond(HELLO), host="::1"))
    easy, body = fetch(server.url())
    assert (easy.result, body) == (Code.OK, HELLO)
    assert (easy.primary_ip, easy.primary_port) == ("::1", server.port)
    assert server.requests[0].header("host") == f"[::1]:{server.port}"


def test_localhost_served_on_ipv4_only_succeeds(fetch: Fetch, http_server: HTTPServer) -> None:
    """'localhost' reaches a server bound only on 127.0.0.1, even if ::1 is tried first."""
    easy, body = fetch(http_server.url(host="localhost"))
    assert (easy.result, body) == (Code.OK, HELLO)
    assert easy.primary_ip == "127.0.0.1"
    assert easy.total_time < 1.0, "a refused ::1 moves on at once, without waiting 200 ms"


@needs_ipv6
def test_dual_stack_name_falls_back_to_ipv4_when_ipv6_refuses(
    fetch: Fetch, http_server: HTTPServer, names: Names
) -> None:
    """A name with ::1 first and 127.0.0.1 second: ::1 refuses, 127.0.0.1 serves."""
    names["dual.test"] = ["::1", "127.0.0.1"]
    easy, body = fetch(http_server.url(host="dual.test"))
    assert (easy.result, body) == (Code.OK, HELLO)
    assert easy.primary_ip == "127.0.0.1"


def ipv6_blackhole_on(port: int) -> Blackhole | None:
    try:
        return Blackhole("::1", port)
    except OSError:
        return None


@needs_ipv6
def test_happy_eyeballs_starts_ipv4_after_200_ms_when_ipv6_hangs(
    fetch: Fetch, serve: Callable[[Any], Any], names: Names
) -> None:
    """::1 never completes its connect; 127.0.0.1 is tried about 200 ms later and wins."""
    for _ in range(20):
        server = serve(HTTPServer(default=respond(HELLO)))
        hole = ipv6_blackhole_on(server.port)
        if hole is not None:
            break
    else:
        pytest.skip("no port free on both 127.0.0.1 and ::1")
    serve(hole)
    names["eyeballs.test"] = ["::1", "127.0.0.1"]
    start = time.monotonic()
    easy, body = fetch(server.url(host="eyeballs.test"), connect_timeout_ms=5000)
    elapsed = time.monotonic() - start
    assert (easy.result, body) == (Code.OK, HELLO)
    assert easy.primary_ip == "127.0.0.1"
    assert 0.15 <= elapsed < 1.5, f"second family started after {elapsed:.3f} s"


@needs_ipv6
def test_all_addresses_refused_is_couldnt_connect_7(fetch: Fetch, names: Names) -> None:
    """When every address of a name refuses, the result is COULDNT_CONNECT (7)."""
    port = closed_port()
    names["nowhere.test"] = ["::1", "127.0.0.1"]
    easy, _ = fetch(f"http://nowhere.test:{port}/")
    assert easy.result == Code.COULDNT_CONNECT
