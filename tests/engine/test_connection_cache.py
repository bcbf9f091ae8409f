"""The keep-alive cache: sized as libcurl sizes it, and a freed connection serving a queued
transfer of its own origin before anything is evicted (within a fairness bound)."""

from __future__ import annotations

import selectors
import threading
import time
from collections.abc import Callable
from typing import Any

from servers import HELLO, HTTPServer, Peer, QuickServer, Server, in_rounds, respond

from hiperfifo.engine import (
    CSELECT_IN,
    CSELECT_OUT,
    POLL_REMOVE,
    SOCKET_TIMEOUT,
    Code,
    Easy,
    InfoType,
    Multi,
)
from hiperfifo.engine.pending import FAIRNESS, MOVE_COST
from hiperfifo.engine.testing import SELECTOR_EVENTS


def selectors_loop(multi: Multi, urls: list[str], keep: int) -> list[Easy]:
    """A plain application loop: one selectors registration per announced socket, every
    ready socket handled (socket_action each) before info_read; finished handles removed
    and replaced so that `keep` stay in the multi."""
    sel = selectors.DefaultSelector()
    timer: list[float | None] = [None]

    def on_socket(_easy: Any, fd: int, what: int, _socketp: Any) -> None:
        watched = fd in sel.get_map()
        if what == POLL_REMOVE:
            sel.unregister(fd)
        elif watched:
            sel.modify(fd, SELECTOR_EVENTS[what])
        else:
            sel.register(fd, SELECTOR_EVENTS[what])

    def on_timer(ms: int) -> None:
        timer[0] = None if ms < 0 else ms / 1000

    multi.socket_function = on_socket
    multi.timer_function = on_timer
    todo = list(reversed(urls))
    done: list[Easy] = []
    for _ in range(min(keep, len(todo))):
        multi.add_handle(Easy(todo.pop(), write_function=len))
    multi.socket_action(SOCKET_TIMEOUT)
    while len(done) < len(urls):
        ready = sel.select(timer[0] if timer[0] is not None else 1.0)
        for key, mask in ready:
            bits = (CSELECT_IN if mask & selectors.EVENT_READ else 0) | (
                CSELECT_OUT if mask & selectors.EVENT_WRITE else 0
            )
            multi.socket_action(key.fd, bits)
        if not ready:
            multi.socket_action(SOCKET_TIMEOUT)
        while (message := multi.info_read()) is not None:
            multi.remove_handle(message.easy)
            done.append(message.easy)
            if todo:
                multi.add_handle(Easy(todo.pop(), write_function=len))
    sel.close()
    return done


def test_selectors_loop_keeps_its_connections(serve: Callable[[Server], Server]) -> None:
    """50 handles kept in the multi, 1,000 URLs, answers arriving 50 at a time and handled
    all before info_read: the idle cache holds 4 x the handles added and not removed
    (libcurl's num_easy * 4, finished ones included), so the 50 connections opened first
    serve every URL (was: idle ones evicted whenever the running count dipped)."""
    server = serve(Server(in_rounds(50)))
    with Multi(max_total_connections=0) as multi:
        done = selectors_loop(multi, [server.url(f"/?i={i}") for i in range(1000)], keep=50)
    assert [e.result for e in done] == [Code.OK] * 1000
    assert server.accepted == 50


def started_in_order(driver: Any, urls: list[str]) -> list[int]:
    """Run `urls` (all added up front) and return their indexes in the order they started:
    took a connection or a slot (debug STATE 'CONNECT -> ...' other than to PENDING) or
    left the queue ('PENDING -> ...'), whichever came first."""
    started: dict[int, None] = {}

    def debug_for(index: int) -> Callable[[InfoType, str], None]:
        def debug(kind: InfoType, text: str) -> None:
            if kind is InfoType.STATE and (
                text.startswith("PENDING ->")
                or (text.startswith("CONNECT ->") and not text.endswith("PENDING"))
            ):
                started.setdefault(index)

        return debug

    easies = [
        Easy(url, write_function=len, debug_function=debug_for(i)) for i, url in enumerate(urls)
    ]
    driver.perform(*easies, timeout=60)
    assert [e.result for e in easies] == [Code.OK] * len(urls)
    return list(started)


def round_robin(driver: Any, delay: float) -> int:
    """1,000 URLs over 4 origins round robin, all added up front, on `driver`: checks every
    URL was done once and each origin's URLs started in the order added (a request on a
    connection still being opened may reach the server after a later one of its origin on
    a connection that freed up meanwhile); returns the connections the server accepted."""
    server = QuickServer(ports=4, delay=delay)
    try:
        urls = [server.url(i % 4, f"/?i={i}") for i in range(1000)]
        started = started_in_order(driver, urls)
    finally:
        server.close()
    assert sorted(started) == list(range(1000))
    for k in range(4):
        assert [n for n in started if n % 4 == k] == list(range(k, 1000, 4))
    assert sum(len(lines) for lines in server.lines.values()) == 1000
    return sum(server.accepted.values())


def test_reuse_before_churn_round_robin_over_four_origins(
    make_driver: Callable[..., Any],
) -> None:
    """1,000 URLs over 4 origins round robin, max_total_connections=16: a freed connection
    serves its own origin's next queued URL instead of being evicted for another origin's,
    so at most 2 x 16 connections are opened (first come, first served alone: 400-500 here),
    every URL is done, and each origin's URLs start in the order they were added. The
    server answers 2 ms after each request, as across a network: no answer lands within
    the API call that sent its request."""
    opened = round_robin(make_driver(max_total_connections=16), delay=0.002)
    assert opened <= 32, opened


def test_reuse_before_churn_with_a_server_answering_at_once(
    make_driver: Callable[..., Any],
) -> None:
    """The same against a server that answers at once (a thread in this process): answers
    land within the API call that sent the request, so a connection's transfers could
    follow one another in one call while the other origins' sockets wait, one origin
    running dry long before the others, its connections then moving (was 19-36 connections
    opened). A transfer taking over the connection of one that left the queue in the same
    call runs at the next call, an idle connection moves to the origin with the most queued
    per connection, only when one more connection pays for its handshake, and within the
    move budget: 8 moves at once, then one per MOVE_COST x 16 transfers finished, so at
    most 16 + 8 + 999 // 128 = 31 <= 2 x 16 in every run by construction (docs/engine.md;
    4 when every answer came within the first call, one connection per origin doing it
    all)."""
    assert 16 + 16 // 2 + 999 // (MOVE_COST * 16) <= 32
    runs = [round_robin(make_driver(max_total_connections=16), delay=0.0) for _ in range(5)]
    assert max(runs) <= 32, runs


def test_slot_moves_keep_to_the_budget_and_the_fairness_bound(
    make_driver: Callable[..., Any],
) -> None:
    """16 connection slots: origin B's first URL and 15 other origins' one URL each take
    them, then 600 more B URLs queue, one URL for a 17th origin C among them (at 100); the
    server answers 2 ms after each request. As the 15 finish, B's queue pays for moving
    every one of their idle connections to B (32 opened without the budget, every run).
    The move budget lets half a pool of moves (8) go at once, then one per MOVE_COST x 16
    transfers finished: at most 16 + 8 + 616 // 128 = 28 connections, plus C's one (a move
    to an origin with no connection that will free up is never refused by the budget). C
    still leaves the queue before more than FAIRNESS URLs added after it did; B's URLs
    start in the order added; every URL is done."""
    server = QuickServer(ports=17, delay=0.002)
    b_urls = [server.url(0, f"/?i={i}") for i in range(16, 616)]
    urls = [server.url(0, "/?i=0")] + [server.url(k, f"/?i={k}") for k in range(1, 16)]
    urls += [*b_urls[:84], server.url(16, "/?i=c"), *b_urls[84:]]
    try:
        started = started_in_order(make_driver(max_total_connections=16), urls)
    finally:
        server.close()
    b_order = [0, *range(16, 100), *range(101, len(urls))]
    assert [n for n in started if n == 0 or (n >= 16 and n != 100)] == b_order
    passed = sum(1 for n in started[: started.index(100)] if n > 100)  # added after C
    assert passed <= FAIRNESS, passed
    assert server.accepted[server.ports[16]] == 1
    opened = sum(server.accepted.values())
    assert opened <= 16 + 16 // 2 + (len(urls) - 1) // (MOVE_COST * 16) + 1, opened
    assert opened >= 16 + 1 + 1, opened  # C's, and the budget let one slot move at least


def recorder(url: str, sent: list[str], left: list[str]) -> Callable[[InfoType, str], None]:
    """A debug function: request lines into `sent`, the URL's i=N into `left` as it leaves
    the pending queue."""

    def debug(kind: InfoType, text: str) -> None:
        if kind is InfoType.HEADER_OUT:
            sent.append(text.split("\r\n", 1)[0])
        elif kind is InfoType.STATE and text.startswith("PENDING ->"):
            left.append(url.rsplit("=", 1)[1])

    return debug


def test_reuse_before_churn_keeps_the_fairness_bound(
    make_driver: Callable[..., Any], serve: Callable[[Server], Server]
) -> None:
    """Both connection slots busy with origin A, then one URL for origin B queued, then many
    more for A: each freed A connection would rather serve A, but B (no connection of its
    own to wait for) is passed by exactly FAIRNESS later arrivals and no more, then gets
    its turn, an idle A connection evicted for it. Passing is leaving the queue (the debug
    STATE line 'PENDING -> ...'). On the wire it is within one request per connection (2
    here) either way: an A that left the queue just before B may be sent at the next call
    (it took over the connection of one that left it in the same call), and B's request
    waits for its new connection while each A connection may carry one more A."""
    release = threading.Event()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n" + HELLO

    def held_at_first(peer: Peer) -> None:
        while (request := peer.read_request()) is not None:
            if request.target in ("/?i=0", "/?i=1"):
                release.wait(10)  # until everything else is queued
            if not peer.send(answer):
                return

    a = serve(Server(held_at_first))
    b = serve(HTTPServer(default=respond(HELLO)))
    urls = [a.url("/?i=0"), a.url("/?i=1"), b.url("/?i=2")]
    urls += [a.url(f"/?i={i}") for i in range(3, FAIRNESS + 40)]
    sent: list[str] = []
    left: list[str] = []  # the queue left, in order: the URL's i=N
    driver = make_driver(max_total_connections=2)
    easies = [
        Easy(url, write_function=len, debug_function=recorder(url, sent, left)) for url in urls
    ]
    for easy in easies[:2]:
        driver.multi.add_handle(easy)
    deadline = time.monotonic() + 10
    while len(a.requests) < 2 and time.monotonic() < deadline:
        driver.step(0.1)
    assert len(a.requests) == 2  # both A connections busy, their answers held
    for easy in easies[2:]:
        driver.multi.add_handle(easy)
    driver.multi.socket_action(SOCKET_TIMEOUT)  # every other URL starts and is queued
    assert f"pending={len(urls) - 2}" in repr(driver.multi)
    release.set()
    driver.run(timeout=60)
    for easy in easies:
        driver.multi.remove_handle(easy)
    assert [e.result for e in easies] == [Code.OK] * len(urls)
    assert left.index("2") == FAIRNESS, left  # A URLs that left the queue before B
    assert sorted(left) == sorted(str(i) for i in range(2, len(urls)))  # each left once
    position = sent.index("GET /?i=2 HTTP/1.1") - 2  # A URLs sent after B was queued
    assert FAIRNESS - 2 <= position <= FAIRNESS + 2, sent[: position + 3]
    assert b.accepted == 1


def test_a_queued_transfer_that_times_out_leaves_the_queue(
    make_driver: Callable[..., Any], serve: Callable[[Server], Server]
) -> None:
    """One connection slot, busy; B (timeout_ms) and C queued behind it: B's total timeout
    expires while it waits, it ends with 28 and leaves the queue, and the connection, once
    free, is handed to C (not to B, which would keep it forever: a slot lost)."""
    release = threading.Event()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n" + HELLO

    def held_at_first(peer: Peer) -> None:
        while (request := peer.read_request()) is not None:
            if request.target == "/a":
                release.wait(10)  # until B has timed out
            if not peer.send(answer):
                return

    server = serve(Server(held_at_first))
    driver = make_driver(max_total_connections=1)
    a = Easy(server.url("/a"), write_function=len)
    b = Easy(server.url("/b"), write_function=len, timeout_ms=200)
    c = Easy(server.url("/c"), write_function=len)
    for easy in (a, b, c):
        driver.multi.add_handle(easy)
    deadline = time.monotonic() + 10
    while not any(m.easy is b for m in driver.messages) and time.monotonic() < deadline:
        driver.step(0.1)
    assert b.result == Code.OPERATION_TIMEDOUT
    assert "pending=1" in repr(driver.multi)  # C only
    release.set()
    driver.run(timeout=20)
    assert (a.result, c.result) == (Code.OK, Code.OK)
    assert [r.target for r in server.requests] == ["/a", "/c"]
    assert server.accepted == 1
