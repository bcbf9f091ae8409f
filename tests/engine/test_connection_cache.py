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
    POLL_IN,
    POLL_INOUT,
    POLL_OUT,
    POLL_REMOVE,
    SOCKET_TIMEOUT,
    Code,
    Easy,
    InfoType,
    Multi,
)
from hiperfifo.engine.pending import FAIRNESS

EVENTS = {
    POLL_IN: selectors.EVENT_READ,
    POLL_OUT: selectors.EVENT_WRITE,
    POLL_INOUT: selectors.EVENT_READ | selectors.EVENT_WRITE,
}


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
            sel.modify(fd, EVENTS[what])
        else:
            sel.register(fd, EVENTS[what])

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


def sent_in_order(driver: Any, urls: list[str], **options: Any) -> list[str]:
    """Run `urls` (all added up front) and return the request lines in the order sent."""
    sent: list[str] = []

    def debug(kind: InfoType, text: str) -> None:
        if kind is InfoType.HEADER_OUT:
            sent.append(text.split("\r\n", 1)[0])

    easies = [Easy(url, write_function=len, debug_function=debug, **options) for url in urls]
    driver.perform(*easies, timeout=60)
    assert [e.result for e in easies] == [Code.OK] * len(urls)
    return sent


def test_reuse_before_churn_round_robin_over_four_origins(
    make_driver: Callable[..., Any],
) -> None:
    """1,000 URLs over 4 origins round robin, max_total_connections=16: a freed connection
    serves its own origin's next queued URL instead of being evicted for another origin's,
    so at most 2 x 16 connections are opened (first come, first served alone: 400-500 here),
    every URL is done, and each origin's URLs are sent in the order they were added. The
    server answers 2 ms after each request, as across a network: no answer lands within
    the API call that sent its request."""
    server = QuickServer(ports=4, delay=0.002)
    try:
        urls = [server.url(i % 4, f"/?i={i}") for i in range(1000)]
        sent = sent_in_order(make_driver(max_total_connections=16), urls)
    finally:
        server.close()
    numbers = [int(line.split("=")[1].split()[0]) for line in sent]  # GET /?i=N HTTP/1.1
    for k in range(4):
        assert [n for n in numbers if n % 4 == k] == list(range(k, 1000, 4))
    opened = sum(server.accepted.values())
    assert sum(len(lines) for lines in server.lines.values()) == 1000
    assert opened <= 32, opened


def test_reuse_before_churn_keeps_the_fairness_bound(
    make_driver: Callable[..., Any], serve: Callable[[Server], Server]
) -> None:
    """Both connection slots busy with origin A, then one URL for origin B queued, then many
    more for A: each freed A connection would rather serve A, but B (no connection of its
    own to wait for) is passed by exactly FAIRNESS later arrivals and no more, then gets
    its turn, an idle A connection evicted for it."""
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

    def debug(kind: InfoType, text: str) -> None:
        if kind is InfoType.HEADER_OUT:
            sent.append(text.split("\r\n", 1)[0])

    driver = make_driver(max_total_connections=2)
    easies = [Easy(url, write_function=len, debug_function=debug) for url in urls]
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
    position = sent.index("GET /?i=2 HTTP/1.1")
    assert position - 2 == FAIRNESS, sent[: position + 1]  # A URLs sent after B was queued
    assert b.accepted == 1
