"""The numbered rules of docs/engine.md's Multi section, one or more tests each (test_rule_N_...).

These tests drive the Multi with their own small `selectors` loop (`Loop`) so
that every socket and timer callback is recorded with what the rules talk
about: the fd, `what`, the `socketp` passed back, and whether the fd was still
open when REMOVE arrived.
"""

from __future__ import annotations

import itertools
import os
import selectors
import socket
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
from names import Names
from servers import (
    HELLO,
    HoldServer,
    HTTPServer,
    Server,
    never_answers,
    raw,
    respond,
    stale_after_first,
)

from hiperfifo.engine import (
    CSELECT_IN,
    CSELECT_OUT,
    POLL_IN,
    POLL_INOUT,
    POLL_NONE,
    POLL_OUT,
    POLL_REMOVE,
    SOCKET_TIMEOUT,
    Code,
    Easy,
    MCode,
    Message,
    Multi,
    MultiError,
)
from hiperfifo.engine.testing import FakeClock

EVENTS = {
    POLL_IN: selectors.EVENT_READ,
    POLL_OUT: selectors.EVENT_WRITE,
    POLL_INOUT: selectors.EVENT_READ | selectors.EVENT_WRITE,
}


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class Loop:
    """A tiny selectors loop around one Multi that records every callback.

    calls: ("socket", easy, fd, what, socketp, fd_open) and ("timer", ms), in order.
    """

    def __init__(self, multi: Multi | None = None, **multi_kwargs: Any) -> None:
        self.multi = multi if multi is not None else Multi(**multi_kwargs)
        self.multi.socket_function = self.on_socket
        self.multi.timer_function = self.on_timer
        self.selector = selectors.DefaultSelector()
        self.calls: list[tuple[Any, ...]] = []
        self.watched: dict[int, int] = {}  # fd -> what, as the application was last told
        self.timer_at: float | None = None
        self.messages: list[Message] = []
        self.drain = True  # read info_read after each socket_action
        self.hints = True  # pass CSELECT bits (False: always 0)
        self.in_socket: Callable[[Any, int, int, Any], None] | None = None
        self.in_timer: Callable[[int], None] | None = None
        self.assign_on_announce = False

    def close(self) -> None:
        self.multi.close()
        self.selector.close()

    # the application's callbacks

    def on_socket(self, easy: Any, fd: int, what: int, socketp: Any) -> None:
        self.calls.append(("socket", easy, fd, what, socketp, fd_is_open(fd)))
        if self.in_socket is not None:
            self.in_socket(easy, fd, what, socketp)
        if what == POLL_REMOVE:
            if self.watched.pop(fd, None) is not None:
                self.selector.unregister(fd)
            return
        if fd in self.watched:
            self.selector.modify(fd, EVENTS[what])
        else:
            self.selector.register(fd, EVENTS[what])
            if self.assign_on_announce:
                self.multi.assign(fd, ("socketp", fd, len(self.calls)))
        self.watched[fd] = what

    def on_timer(self, ms: int) -> None:
        self.calls.append(("timer", ms))
        if self.in_timer is not None:
            self.in_timer(ms)
        self.timer_at = None if ms < 0 else time.monotonic() + ms / 1000

    # driving

    def action(self, fd: int, bits: int = 0) -> int:
        running = self.multi.socket_action(fd, bits if self.hints else 0)
        if self.drain:
            while (message := self.multi.info_read()) is not None:
                self.messages.append(message)
        return running

    def step(self, max_wait: float = 0.2) -> int | None:
        """One round: ready sockets, then the timer if it is due. None if nothing happened."""
        wait = max_wait
        if self.timer_at is not None:
            wait = max(0.0, min(wait, self.timer_at - time.monotonic()))
        ready = self.selector.select(wait) if self.watched else _sleep(wait)
        running = None
        for key, events in ready:
            if key.fd not in self.watched:
                continue  # removed by an earlier action in this round
            bits = (CSELECT_IN if events & selectors.EVENT_READ else 0) | (
                CSELECT_OUT if events & selectors.EVENT_WRITE else 0
            )
            running = self.action(key.fd, bits)
        if self.timer_at is not None and time.monotonic() >= self.timer_at:
            self.timer_at = None
            running = self.action(SOCKET_TIMEOUT)
        return running

    def run(self, until: Callable[[], bool] | None = None, timeout: float = 10.0) -> int:
        """Kick, then loop until no transfer runs (or `until()` is true after an action)."""
        deadline = time.monotonic() + timeout
        running = self.action(SOCKET_TIMEOUT)
        while running and not (until and until()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still running: {self.multi!r}")
            result = self.step()
            running = running if result is None else result
        return running

    def socket_calls(self, since: int = 0) -> list[tuple[Any, ...]]:
        return [c for c in self.calls[since:] if c[0] == "socket"]

    def timer_calls(self, since: int = 0) -> list[int]:
        return [c[1] for c in self.calls[since:] if c[0] == "timer"]


def _sleep(seconds: float) -> list[Any]:
    time.sleep(seconds)
    return []


@pytest.fixture
def loop(names: Names) -> Iterator[Loop]:
    lp = Loop(getaddrinfo=names)
    yield lp
    lp.close()


@pytest.fixture
def make_loop(names: Names) -> Iterator[Callable[..., Loop]]:
    made: list[Loop] = []

    def make(**multi_kwargs: Any) -> Loop:
        multi_kwargs.setdefault("getaddrinfo", names)
        lp = Loop(**multi_kwargs)
        made.append(lp)
        return lp

    yield make
    for lp in made:
        lp.close()


def check_socket_protocol(calls: list[tuple[Any, ...]]) -> dict[int, int]:
    """Rule 2 over a whole recording; returns what is still announced (fd -> what)."""
    announced: dict[int, int] = {}
    for call in calls:
        if call[0] != "socket":
            continue
        _, _easy, fd, what, _socketp, fd_open = call
        assert what != POLL_NONE, "the engine sends REMOVE, never POLL_NONE"
        if what == POLL_REMOVE:
            assert fd in announced, f"REMOVE of fd {fd} that was not announced: {call}"
            assert fd_open, f"REMOVE of fd {fd} arrived after it was closed"
            del announced[fd]
        else:
            assert what in (POLL_IN, POLL_OUT, POLL_INOUT), call
            assert announced.get(fd) != what, f"fd {fd} announced {what} twice in a row"
            announced[fd] = what
    return announced


def check_timer_protocol(values: list[int]) -> None:
    """Rule 3's shape: the first call is not -1, and -1 never comes twice in a row."""
    if values:
        assert values[0] != -1, "the first timer call must not be -1"
    for a, b in itertools.pairwise(values):
        assert not (a == -1 and b == -1), f"-1 twice in a row in {values}"
    assert all(v >= -1 for v in values)


def add(multi: Multi, *easies: Easy) -> tuple[Easy, ...]:
    for easy in easies:
        multi.add_handle(easy)
    return easies


# --- rule 1 -----------------------------------------------------------------------


def test_rule_1_add_handle_does_no_io_and_arms_timer_zero(
    loop: Loop, http_server: HTTPServer
) -> None:
    """add_handle calls no socket callback, opens no connection, and leaves the timer at 0."""
    for i in range(3):
        loop.multi.add_handle(Easy(http_server.url(f"/{i}")))
        assert loop.calls[-1] == ("timer", 0)
    fds_before = set(os.listdir("/proc/self/fd"))
    for i in range(3, 6):
        loop.multi.add_handle(Easy(http_server.url(f"/{i}")))
    assert set(os.listdir("/proc/self/fd")) == fds_before, "add_handle opened a descriptor"
    assert loop.socket_calls() == []
    assert loop.multi.timeout() == 0
    assert http_server.accepted == 0, "add_handle must not connect"


def test_rule_1_kick_start_socket_action_timeout_starts_the_transfer(
    loop: Loop, http_server: HTTPServer
) -> None:
    """The first socket_action(SOCKET_TIMEOUT) after add_handle starts the transfer."""
    # /slow answers after 0.2 s: a fast answer could finish it inside that first call.
    (easy,) = add(loop.multi, Easy(http_server.url("/slow")))
    assert loop.action(SOCKET_TIMEOUT) == 1
    assert [c[1] for c in loop.socket_calls()] == [easy], "its socket is announced at once"
    loop.run()
    assert [(m.easy, m.result) for m in loop.messages] == [(easy, Code.OK)]


def test_rule_1_add_handle_with_a_pending_timer_arms_zero(
    loop: Loop, serve: Callable[[Server], Server]
) -> None:
    """A second add_handle while a long deadline is pending moves the timer back to 0."""
    silent = serve(never_answers())
    add(loop.multi, Easy(silent.url(), timeout_ms=5000))
    loop.run(until=lambda: bool(silent.requests), timeout=5)
    assert loop.timer_calls()[-1] > 1000
    loop.multi.add_handle(Easy(silent.url()))
    assert loop.calls[-1] == ("timer", 0)


# --- rule 2 -----------------------------------------------------------------------


def test_rule_2_socket_callback_reports_only_changes_and_remove_before_close(
    loop: Loop, http_server: HTTPServer
) -> None:
    """Over keep-alive, chunked, close-delimited and redirected transfers, each fd is announced
    IN/OUT/INOUT first, then only changes, and REMOVEd once while still open."""
    for path in ["/", "/chunked", "/close", "/redirect", "/", "/echo"]:
        (easy,) = add(loop.multi, Easy(http_server.url(path), follow_location=True))
        loop.run()
        loop.multi.remove_handle(easy)
    assert [m.result for m in loop.messages] == [Code.OK] * 6
    assert check_socket_protocol(loop.calls) == {}, "nothing stays announced when idle"
    assert loop.watched == {}


def test_rule_2_pooled_connection_removed_then_announced_again_with_new_easy(
    loop: Loop, http_server: HTTPServer
) -> None:
    """An idle pooled connection is REMOVEd; the transfer that reuses it announces it anew."""
    (first,) = add(loop.multi, Easy(http_server.url("/slow")))
    loop.run()
    loop.multi.remove_handle(first)
    fd = next(c[2] for c in loop.socket_calls() if c[1] is first)
    assert [c[3] for c in loop.socket_calls() if c[2] == fd][-1] == POLL_REMOVE
    assert fd_is_open(fd), "REMOVE does not mean close: the connection is pooled"
    mark = len(loop.calls)
    (second,) = add(loop.multi, Easy(http_server.url("/slow")))  # must wait: announced
    loop.run()
    again = [c for c in loop.socket_calls(mark) if c[2] == fd]
    assert again[0][1] is second, "announced with the easy that now uses it"
    assert again[0][3] in (POLL_IN, POLL_OUT, POLL_INOUT)
    assert again[-1][3] == POLL_REMOVE
    assert http_server.accepted == 1
    check_socket_protocol(loop.calls)


def test_rule_2_easy_is_the_transfer_using_the_socket(loop: Loop, http_server: HTTPServer) -> None:
    """With ten concurrent transfers, every announced fd is reported with its own transfer."""
    easies = add(loop.multi, *(Easy(http_server.url(f"/{i}")) for i in range(10)))
    loop.run()
    assert {m.easy for m in loop.messages} == set(easies)
    owner: dict[int, Any] = {}
    for _, easy, fd, what, _, _ in loop.socket_calls():
        assert easy in easies
        if what == POLL_REMOVE:
            assert owner.pop(fd) is easy
        else:
            assert owner.setdefault(fd, easy) is easy, "one transfer per fd at a time"
    assert owner == {}
    check_socket_protocol(loop.calls)


def test_rule_2_reused_fd_number_is_announced_as_new(
    loop: Loop, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """After REMOVE and close, the same fd number for a new socket is a fresh announcement."""
    server = serve(HTTPServer(default=respond(HELLO, then="close", delay=0.05)))
    for _ in range(4):
        mark = len(loop.calls)
        (easy,) = add(loop.multi, Easy(server.url()))
        loop.run()
        loop.multi.remove_handle(easy)
        mine = loop.socket_calls(mark)
        assert mine[0][3] != POLL_REMOVE
        assert mine[-1][3] == POLL_REMOVE
    assert server.accepted == 4
    check_socket_protocol(loop.calls)


def test_rule_2_remove_comes_before_close_on_failure(
    loop: Loop, serve: Callable[[Server], Server]
) -> None:
    """A transfer that fails (server reset) still REMOVEs its fd while the fd is open."""
    rude = serve(
        HTTPServer(default=raw(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", then="reset"))
    )
    add(loop.multi, Easy(rude.url()))
    loop.run()
    assert loop.messages[0].result != Code.OK
    assert check_socket_protocol(loop.calls) == {}


# --- rule 3 -----------------------------------------------------------------------


def test_rule_3_timer_never_starts_with_minus_one_nor_repeats_it(
    loop: Loop, http_server: HTTPServer
) -> None:
    """Across successes, failures and timeouts the timer never starts with -1 nor repeats -1."""
    urls = [http_server.url(), "http://nonexistent.invalid/", http_server.url("/slow")]
    for url in urls:
        (easy,) = add(loop.multi, Easy(url, timeout_ms=3000))
        loop.run()
        loop.multi.remove_handle(easy)
    values = loop.timer_calls()
    check_timer_protocol(values)
    assert values[-1] == -1, "nothing is due once every transfer is done"
    assert loop.multi.timeout() == -1


def test_rule_3_timer_called_only_when_the_earliest_deadline_changes(
    make_loop: Callable[..., Loop], serve: Callable[[Server], Server]
) -> None:
    """With a frozen clock, a 1000 ms timeout is announced once; I/O that changes no deadline
    calls no timer; the deadline is then hit by advancing the clock: 28 and -1."""
    silent = serve(never_answers())
    clock = FakeClock()
    loop = make_loop(clock=clock)
    (easy,) = add(loop.multi, Easy(silent.url(), timeout_ms=1000))
    assert loop.timer_calls() == [0]
    loop.action(SOCKET_TIMEOUT)
    deadline = time.monotonic() + 5
    while not silent.requests and time.monotonic() < deadline:
        for key, _ in loop.selector.select(0.05):
            loop.action(key.fd, 0)
    assert silent.requests, "the request was sent"
    assert loop.timer_calls()[1:] == [1000], "one call: the timeout, 1000 ms from now"
    mark = len(loop.calls)
    [fd] = loop.watched
    loop.action(fd, CSELECT_IN)  # nothing to read: no deadline changes
    loop.action(fd, 0)
    assert loop.timer_calls(mark) == []
    assert loop.multi.timeout() == 1000
    clock.advance(0.4)
    assert loop.multi.timeout() in (600, 601)  # rounded up, float error included
    clock.advance(0.6)
    assert loop.action(SOCKET_TIMEOUT) == 0
    assert [(m.easy, m.result) for m in loop.messages] == [(easy, Code.OPERATION_TIMEDOUT)]
    assert loop.timer_calls(mark) == [-1]
    assert check_socket_protocol(loop.calls) == {}


def test_rule_3_socket_action_timeout_re_announces_a_pending_deadline(
    make_loop: Callable[..., Loop], serve: Callable[[Server], Server]
) -> None:
    """A loop whose timer fired early calls SOCKET_TIMEOUT; the engine re-announces the rest."""
    silent = serve(never_answers())
    clock = FakeClock()
    loop = make_loop(clock=clock)
    add(loop.multi, Easy(silent.url(), timeout_ms=1000))
    loop.action(SOCKET_TIMEOUT)
    clock.advance(0.25)
    mark = len(loop.calls)
    assert loop.action(SOCKET_TIMEOUT) == 1
    assert loop.timer_calls(mark) == [750]


def test_rule_3_no_call_when_the_earliest_deadline_stays(loop: Loop) -> None:
    """A second add_handle does not move the earliest deadline (already due): no second call,
    and the value the application holds is still 0."""
    loop.multi.add_handle(Easy("http://127.0.0.1:1/"))
    loop.multi.add_handle(Easy("http://127.0.0.1:1/"))
    assert loop.timer_calls() == [0]
    assert loop.multi.timeout() == 0


# --- rule 4 -----------------------------------------------------------------------


def test_rule_4_stray_fd_is_ignored(loop: Loop, http_server: HTTPServer) -> None:
    """socket_action on an fd never announced (or already removed) is no error and no change."""
    r, w = os.pipe()
    try:
        assert loop.action(r, CSELECT_IN) == 0
        assert loop.action(12345, CSELECT_IN | CSELECT_OUT) == 0
        (easy,) = add(loop.multi, Easy(http_server.url("/slow")))
        loop.action(SOCKET_TIMEOUT)
        assert loop.action(r, CSELECT_IN) == 1
        loop.run()
        old_fd = loop.socket_calls()[0][2]
        loop.multi.remove_handle(easy)
        assert loop.action(old_fd, CSELECT_IN) == 0, "a late event for a REMOVEd fd"
    finally:
        os.close(r)
        os.close(w)
    assert [m.result for m in loop.messages] == [Code.OK]
    assert loop.socket_calls()[-1][3] == POLL_REMOVE


def test_rule_4_bits_are_only_a_hint(loop: Loop, http_server: HTTPServer) -> None:
    """Passing ev_bitmask 0 on every call still runs transfers to completion."""
    loop.hints = False
    add(loop.multi, *(Easy(http_server.url(p)) for p in ("/", "/chunked", "/echo")))
    loop.run()
    assert [m.result for m in loop.messages] == [Code.OK] * 3


def test_rule_4_wrong_bits_are_harmless(loop: Loop, http_server: HTTPServer) -> None:
    """Spurious calls with every bit set (BlockingIOError inside) change nothing."""
    (easy,) = add(loop.multi, Easy(http_server.url("/slow")))
    loop.action(SOCKET_TIMEOUT)
    for _ in range(20):
        for fd in list(loop.watched):
            loop.action(fd, CSELECT_IN | CSELECT_OUT | 4)
    loop.run()
    assert [(m.easy, m.result) for m in loop.messages] == [(easy, Code.OK)]


def test_rule_4_any_socket_action_runs_expired_deadlines(
    make_loop: Callable[..., Loop], serve: Callable[[Server], Server]
) -> None:
    """An expired timeout is acted on by a socket_action for an unrelated (stray) fd too."""
    silent = serve(never_answers())
    clock = FakeClock()
    loop = make_loop(clock=clock)
    (easy,) = add(loop.multi, Easy(silent.url(), timeout_ms=500))
    loop.action(SOCKET_TIMEOUT)
    clock.advance(1.0)
    r, w = os.pipe()
    try:
        assert loop.action(r, CSELECT_IN) == 0
    finally:
        os.close(r)
        os.close(w)
    assert [(m.easy, m.result) for m in loop.messages] == [(easy, Code.OPERATION_TIMEDOUT)]


def test_rule_4_finished_transfer_hands_its_connection_on_in_the_same_call(
    make_loop: Callable[..., Loop], http_server: HTTPServer
) -> None:
    """max_total_connections=1: the call that finishes the first transfer also sends the
    queued one's request, without waiting for another call."""
    loop = make_loop(max_total_connections=1)
    first, second = add(loop.multi, Easy(http_server.url("/1")), Easy(http_server.url("/2")))
    loop.run(until=lambda: any(m.easy is first for m in loop.messages))
    assert http_server.wait_for(lambda: len(http_server.requests) == 2, 2.0), (
        "the queued request was not written in the call that freed the connection"
    )
    loop.run()
    assert [m.easy for m in loop.messages] == [first, second]
    assert http_server.accepted == 1


def test_rule_4_one_call_goes_as_far_as_it_can(
    loop: Loop, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Once the answer is there, a single socket_action reads, finishes and reports it."""
    server = serve(HTTPServer(default=respond(HELLO, delay=0.5)))
    (easy,) = add(loop.multi, Easy(server.url()))
    loop.action(SOCKET_TIMEOUT)
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        loop.step(0.02)
    assert server.requests
    assert loop.messages == []
    [fd] = loop.watched
    wait_until_received(fd, HELLO)  # the whole response is now in the socket buffer
    assert loop.action(fd, CSELECT_IN) == 0
    assert [(m.easy, m.result) for m in loop.messages] == [(easy, Code.OK)]


def wait_until_received(fd: int, ending: bytes, timeout: float = 10.0) -> None:
    """Until the bytes waiting unread on socket `fd` end with `ending` (peeked, not read)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if sock.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT).endswith(ending):
                    return
            except BlockingIOError:
                pass
            assert time.monotonic() < deadline, "the response never arrived"
            time.sleep(0.01)


# --- rule 5 -----------------------------------------------------------------------


def test_rule_5_running_counts_queued_transfers_and_drops_as_they_finish(
    make_loop: Callable[..., Loop], http_server: HTTPServer
) -> None:
    """Queued transfers count as running; after every call running == added - finished."""
    loop = make_loop(max_total_connections=1)
    add(loop.multi, *(Easy(http_server.url("/slow")) for _ in range(3)))
    assert loop.action(SOCKET_TIMEOUT) == 3
    seen = []
    deadline = time.monotonic() + 10
    while loop.messages.__len__() < 3 and time.monotonic() < deadline:
        running = loop.step()
        if running is not None:
            assert running == 3 - len(loop.messages)
            seen.append(running)
    assert seen[-1] == 0


def test_rule_5_removed_transfer_no_longer_counts(
    loop: Loop, serve: Callable[[Server], Server]
) -> None:
    """Removing a running transfer lowers the count; a finished one is not counted at all."""
    silent = serve(never_answers())
    a, b = add(loop.multi, Easy(silent.url()), Easy(silent.url()))
    assert loop.action(SOCKET_TIMEOUT) == 2
    loop.multi.remove_handle(a)
    assert loop.action(SOCKET_TIMEOUT) == 1
    c = Easy("ftp://127.0.0.1/")  # fails at once: finished, still added
    loop.multi.add_handle(c)
    assert loop.action(SOCKET_TIMEOUT) == 1
    assert [(m.easy, m.result) for m in loop.messages] == [(c, Code.UNSUPPORTED_PROTOCOL)]
    loop.multi.remove_handle(b)
    assert loop.action(SOCKET_TIMEOUT) == 0


# --- rule 6 -----------------------------------------------------------------------


def test_rule_6_info_read_oldest_first_with_msgs_in_queue(
    make_loop: Callable[..., Loop], http_server: HTTPServer
) -> None:
    """Three finished transfers come out oldest first, msgs_in_queue 2, 1, 0, then None."""
    loop = make_loop(max_total_connections=1)
    loop.drain = False
    easies = add(loop.multi, *(Easy(http_server.url(f"/{i}")) for i in range(3)))
    loop.run()
    got = [loop.multi.info_read() for _ in range(4)]
    assert got[3] is None
    assert [(m.easy, m.result, m.msgs_in_queue) for m in got[:3] if m] == [
        (easies[0], Code.OK, 2),
        (easies[1], Code.OK, 1),
        (easies[2], Code.OK, 0),
    ]
    assert loop.multi.info_read() is None
    assert isinstance(got[0], tuple)
    assert got[0].easy is got[0][0]


def test_rule_6_removed_transfers_get_no_message_and_unread_ones_are_dropped(
    loop: Loop, http_server: HTTPServer, serve: Callable[[Server], Server]
) -> None:
    """Removing an unfinished transfer gives no message; removing a finished one drops its
    unread message; the others stay."""
    silent = serve(never_answers())
    loop.drain = False
    hanging, done1, done2 = add(
        loop.multi, Easy(silent.url()), Easy(http_server.url()), Easy(http_server.url())
    )
    deadline = time.monotonic() + 10
    running = loop.action(SOCKET_TIMEOUT)
    while running > 1 and time.monotonic() < deadline:
        running = loop.step() or running
    assert running == 1
    loop.multi.remove_handle(hanging)
    loop.multi.remove_handle(done1)
    message = loop.multi.info_read()
    assert message is not None
    assert (message.easy, message.result, message.msgs_in_queue) == (done2, Code.OK, 0)
    assert loop.multi.info_read() is None


def test_rule_6_finished_transfer_stays_in_the_multi_until_removed(
    loop: Loop, http_server: HTTPServer
) -> None:
    """A finished easy is still added (ADDED_ALREADY) until removed; then it can run again."""
    (easy,) = add(loop.multi, Easy(http_server.url()))
    loop.run()
    with pytest.raises(MultiError) as caught:
        loop.multi.add_handle(easy)
    assert caught.value.code == MCode.ADDED_ALREADY
    loop.multi.remove_handle(easy)
    loop.multi.add_handle(easy)
    loop.run()
    assert [(m.easy, m.result) for m in loop.messages] == [(easy, Code.OK), (easy, Code.OK)]
    assert easy.num_connects == 0, "the second run reused the connection"


# --- rule 7 -----------------------------------------------------------------------


def try_everything(multi: Multi, easy: Easy, fd: int | None) -> dict[str, Any]:
    """Call each Multi method from inside a callback; what happened to each."""
    spare = Easy("http://127.0.0.1:1/")
    attempts: dict[str, Callable[[], Any]] = {
        "add_handle": lambda: multi.add_handle(spare),
        "remove_handle": lambda: multi.remove_handle(easy),
        "socket_action": lambda: multi.socket_action(SOCKET_TIMEOUT, 0),
        "socket_all": multi.socket_all,
        "timeout": multi.timeout,
        "close": multi.close,
    }
    outcome: dict[str, Any] = {}
    for name, call in attempts.items():
        try:
            call()
        except MultiError as exc:
            outcome[name] = exc.code
        else:
            outcome[name] = "no error"
    outcome["message"] = multi.info_read()  # allowed: returns what is queued
    if fd is not None:
        try:
            multi.assign(fd, "from inside")
        except MultiError as exc:
            outcome["assign"] = exc.code
        else:
            outcome["assign"] = "ok"
    outcome["spare_added"] = spare.multi is not None
    return outcome


REFUSED = {
    name: MCode.RECURSIVE_API_CALL
    for name in ("add_handle", "remove_handle", "socket_action", "socket_all", "timeout", "close")
}


def test_rule_7_calls_from_the_socket_callback_are_refused(
    loop: Loop, http_server: HTTPServer
) -> None:
    """From the socket callback every Multi method but assign/info_read raises
    RECURSIVE_API_CALL and changes nothing; assign works."""
    outcomes: list[dict[str, Any]] = []
    (easy,) = add(loop.multi, Easy(http_server.url("/slow")))
    loop.in_socket = lambda e, fd, what, p: (
        outcomes.append(try_everything(loop.multi, easy, fd)) if what != POLL_REMOVE else None
    )
    loop.run()
    assert outcomes
    for outcome in outcomes:
        assert {k: outcome[k] for k in REFUSED} == REFUSED
        assert outcome["assign"] == "ok"
        assert outcome["spare_added"] is False
    read_inside = [o["message"] for o in outcomes if o["message"] is not None]
    assert [(m.easy, m.result) for m in read_inside + loop.messages] == [(easy, Code.OK)]


def test_rule_7_calls_from_the_timer_callback_are_refused(
    loop: Loop, http_server: HTTPServer
) -> None:
    """From the timer callback (add_handle's 0 included) the same calls are refused."""
    outcomes: list[dict[str, Any]] = []
    easy = Easy(http_server.url())
    loop.in_timer = lambda ms: outcomes.append(try_everything(loop.multi, easy, None))
    loop.multi.add_handle(easy)
    loop.run()
    assert len(outcomes) >= 2
    for outcome in outcomes:
        assert {k: outcome[k] for k in REFUSED} == REFUSED
        assert outcome["spare_added"] is False
    read_inside = [o["message"] for o in outcomes if o["message"] is not None]
    assert [(m.easy, m.result) for m in read_inside + loop.messages] == [(easy, Code.OK)]


@pytest.mark.parametrize("callback", ["write_function", "header_function", "progress_function"])
def test_rule_7_calls_from_transfer_callbacks_are_refused(
    loop: Loop, http_server: HTTPServer, callback: str
) -> None:
    """From write, header and progress callbacks the same calls are refused; the transfer is
    not harmed by the attempt."""
    outcomes: list[dict[str, Any]] = []
    easy = Easy(http_server.url())

    def inside(*_: Any) -> None:
        outcomes.append(try_everything(loop.multi, easy, None))

    setattr(easy, callback, inside)
    loop.multi.add_handle(easy)
    loop.run()
    assert outcomes
    for outcome in outcomes:
        assert {k: outcome[k] for k in REFUSED} == REFUSED
        assert outcome["spare_added"] is False
    assert [(m.easy, m.result) for m in loop.messages] == [(easy, Code.OK)]


def test_rule_7_info_read_inside_a_callback_returns_what_is_queued(
    loop: Loop, http_server: HTTPServer
) -> None:
    """A finished, unread transfer's message can be read from another transfer's callback."""
    loop.drain = False
    (first,) = add(loop.multi, Easy(http_server.url()))
    loop.run()
    read: list[Message | None] = []
    second = Easy(http_server.url(), write_function=lambda d: read.append(loop.multi.info_read()))
    loop.multi.add_handle(second)
    loop.run()
    assert read[0] is not None
    assert read[0].easy is first
    message = loop.multi.info_read()
    assert message is not None
    assert message.easy is second


def test_rule_7_application_adds_from_its_own_loop_after_a_refusal(
    loop: Loop, http_server: HTTPServer
) -> None:
    """The supported pattern: note the wish in the callback, add after socket_action returns;
    the deferred transfer reuses the connection."""
    wishes: list[str] = []
    first = Easy(http_server.url(), write_function=lambda d: wishes.append(http_server.url("/2")))
    loop.multi.add_handle(first)
    loop.run()
    assert wishes
    second = Easy(wishes[0])
    loop.multi.add_handle(second)
    loop.run()
    assert [m.result for m in loop.messages] == [Code.OK, Code.OK]
    assert http_server.accepted == 1


# --- rule 8 -----------------------------------------------------------------------


def test_rule_8_raising_socket_callback_kills_the_multi_until_all_removed(
    loop: Loop, http_server: HTTPServer
) -> None:
    """A raising socket callback: ABORTED_BY_CALLBACK with the exception as __cause__, no
    REMOVE for the failed announcement, later calls refused, timeout() 0, add refused;
    after removing every handle the multi works again."""
    failed: list[int] = []

    def boom(easy: Any, fd: int, what: int, socketp: Any) -> None:
        if not failed:
            failed.append(fd)
            raise ValueError("boom")

    loop.in_socket = boom
    (first,) = add(loop.multi, Easy(http_server.url("/slow")))
    with pytest.raises(MultiError) as caught:
        loop.multi.socket_action(SOCKET_TIMEOUT, 0)
    assert caught.value.code == MCode.ABORTED_BY_CALLBACK
    assert isinstance(caught.value.__cause__, ValueError)
    loop.in_socket = None
    for _ in range(2):
        with pytest.raises(MultiError) as again:
            loop.multi.socket_action(SOCKET_TIMEOUT, 0)
        assert again.value.code == MCode.ABORTED_BY_CALLBACK
    assert loop.multi.timeout() == 0
    with pytest.raises(MultiError) as refused:
        loop.multi.add_handle(Easy(http_server.url()))
    assert refused.value.code == MCode.ABORTED_BY_CALLBACK
    mark = len(loop.calls)
    loop.multi.remove_handle(first)
    assert [c for c in loop.socket_calls(mark) if c[2] == failed[0]] == [], (
        "the announcement that failed gets no REMOVE"
    )
    (second,) = add(loop.multi, Easy(http_server.url()))
    loop.run()
    assert [(m.easy, m.result) for m in loop.messages] == [(second, Code.OK)]


def test_rule_8_raising_timer_callback_kills_the_multi_until_all_removed(
    loop: Loop, serve: Callable[[Server], Server], http_server: HTTPServer
) -> None:
    """A raising timer callback kills the multi the same way; removal revives it."""
    silent = serve(never_answers())
    (first,) = add(loop.multi, Easy(silent.url(), timeout_ms=5000))

    def boom(ms: int) -> None:
        raise RuntimeError("timer broke")

    loop.in_timer = boom
    with pytest.raises(MultiError) as caught:
        loop.multi.socket_action(SOCKET_TIMEOUT, 0)
    assert caught.value.code == MCode.ABORTED_BY_CALLBACK
    assert isinstance(caught.value.__cause__, RuntimeError)
    loop.in_timer = None
    with pytest.raises(MultiError):
        loop.multi.socket_action(SOCKET_TIMEOUT, 0)
    assert loop.multi.timeout() == 0
    loop.multi.remove_handle(first)
    (second,) = add(loop.multi, Easy(http_server.url()))
    loop.run()
    assert [(m.easy, m.result) for m in loop.messages] == [(second, Code.OK)]


@pytest.mark.parametrize(
    ("callback", "code"),
    [
        ("write_function", Code.WRITE_ERROR),
        ("header_function", Code.WRITE_ERROR),
        ("progress_function", Code.ABORTED_BY_CALLBACK),
    ],
)
def test_rule_8_raising_transfer_callback_fails_only_its_transfer(
    loop: Loop, http_server: HTTPServer, callback: str, code: Code
) -> None:
    """A raising write/header/progress callback fails its own transfer with the exception's
    text in easy.error; a concurrent transfer and the multi carry on."""
    victim = Easy(http_server.url())

    def broken(*_: Any) -> None:
        raise OSError(28, "disk on fire")

    setattr(victim, callback, broken)
    bystander = Easy(http_server.url("/slow"))
    add(loop.multi, victim, bystander)
    loop.run()
    results = {m.easy: m.result for m in loop.messages}
    assert results == {victim: code, bystander: Code.OK}
    assert "disk on fire" in victim.error
    loop.multi.remove_handle(victim)
    add(loop.multi, Easy(http_server.url()))
    loop.run()
    assert loop.messages[-1].result == Code.OK


# --- rule 9 -----------------------------------------------------------------------


def test_rule_9_assign_on_an_unannounced_fd_is_bad_socket(loop: Loop) -> None:
    """assign() for an fd the engine never announced raises BAD_SOCKET."""
    r, w = os.pipe()
    try:
        with pytest.raises(MultiError) as caught:
            loop.multi.assign(r, "x")
        assert caught.value.code == MCode.BAD_SOCKET
    finally:
        os.close(r)
        os.close(w)


def test_rule_9_assign_after_remove_is_bad_socket(loop: Loop, http_server: HTTPServer) -> None:
    """Once REMOVEd, an fd is forgotten: assign() on it raises BAD_SOCKET."""
    add(loop.multi, Easy(http_server.url("/slow")))
    loop.run()
    fd = loop.socket_calls()[0][2]
    with pytest.raises(MultiError) as caught:
        loop.multi.assign(fd, "late")
    assert caught.value.code == MCode.BAD_SOCKET


def test_rule_9_assigned_pointer_comes_back_until_remove(
    loop: Loop, http_server: HTTPServer
) -> None:
    """The socketp assigned on announcement comes back in every later call for that fd,
    REMOVE included; after REMOVE the fd starts with None again."""
    loop.assign_on_announce = True
    for _ in range(2):
        (easy,) = add(loop.multi, Easy(http_server.url("/slow")))
        loop.run()
        loop.multi.remove_handle(easy)
    current: dict[int, Any] = {}
    for _, _, fd, what, socketp, _ in loop.socket_calls():
        if fd not in current:
            assert socketp is None, "a new announcement carries no pointer"
            current[fd] = "pending"
            continue
        if current[fd] == "pending":
            current[fd] = socketp
        assert socketp == current[fd]
        assert socketp[1] == fd
        if what == POLL_REMOVE:
            del current[fd]
    assert current == {}


def test_rule_9_add_twice_is_added_already(loop: Loop) -> None:
    """add_handle of an easy already in this multi, or in another, raises ADDED_ALREADY."""
    easy = Easy("http://127.0.0.1:1/")
    loop.multi.add_handle(easy)
    with pytest.raises(MultiError) as same:
        loop.multi.add_handle(easy)
    assert same.value.code == MCode.ADDED_ALREADY
    with Multi() as other:
        with pytest.raises(MultiError) as elsewhere:
            other.add_handle(easy)
        assert elsewhere.value.code == MCode.ADDED_ALREADY


def test_rule_9_remove_from_another_multi_is_bad_easy_handle(loop: Loop) -> None:
    """remove_handle of an easy in another multi raises BAD_EASY_HANDLE; of one in none is a
    no-op."""
    easy = Easy("http://127.0.0.1:1/")
    with Multi() as other:
        other.remove_handle(easy)  # in no multi: nothing happens
        loop.multi.add_handle(easy)
        with pytest.raises(MultiError) as caught:
            other.remove_handle(easy)
        assert caught.value.code == MCode.BAD_EASY_HANDLE
    loop.multi.remove_handle(easy)
    loop.multi.remove_handle(easy)


def test_rule_9_remove_mid_transfer_removes_its_socket_inside_and_frees_one_slot(
    make_loop: Callable[..., Loop], http_server: HTTPServer, serve: Callable[[Server], Server]
) -> None:
    """remove_handle of an in-flight transfer announces its REMOVE inside the call (fd open),
    and lets one queued transfer proceed; the removed one gets no message."""
    silent = serve(never_answers())
    loop = make_loop(max_total_connections=1)
    stuck, queued1, queued2 = add(
        loop.multi, Easy(silent.url()), Easy(http_server.url()), Easy(http_server.url())
    )
    loop.run(until=lambda: bool(silent.requests), timeout=5)
    [fd] = loop.watched
    assert loop.action(SOCKET_TIMEOUT) == 3
    mark = len(loop.calls)
    loop.multi.remove_handle(stuck)
    inside = loop.socket_calls(mark)
    assert ("socket", stuck, fd, POLL_REMOVE) == inside[0][:4]
    assert inside[0][5], "REMOVE while the fd is still open"
    assert loop.timer_calls(mark) == [0], "a queued transfer was released"
    loop.run()
    assert [m.easy for m in loop.messages] == [queued1, queued2]
    assert http_server.peak == 1


def test_rule_9_remove_handle_inside_no_multi_is_a_noop() -> None:
    """remove_handle of an easy that was never added is fine, even twice."""
    with Multi() as multi:
        easy = Easy("http://127.0.0.1:1/")
        multi.remove_handle(easy)
        multi.remove_handle(easy)
        assert multi.info_read() is None


# --- rule 10 ----------------------------------------------------------------------


def test_rule_10_connection_reused_for_the_same_scheme_host_port(
    loop: Loop, http_server: HTTPServer, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Transfers to one origin share a connection; another port gets its own."""
    other = serve(HTTPServer(default=respond(HELLO)))
    easies = [Easy(s.url()) for s in (http_server, http_server, other, other, http_server)]
    for easy in easies:
        loop.multi.add_handle(easy)
        loop.run()
        loop.multi.remove_handle(easy)
    assert [e.num_connects for e in easies] == [1, 0, 1, 0, 0]
    assert (http_server.accepted, other.accepted) == (1, 1)


def test_rule_10_stale_pooled_connection_is_retried_never_a_failure(
    loop: Loop, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Five transfers to a server that closes every idle connection all succeed."""
    server = serve(stale_after_first(HELLO))
    for _ in range(5):
        (easy,) = add(loop.multi, Easy(server.url()))
        loop.run()
        loop.multi.remove_handle(easy)
        server.wait_for(lambda: server.active == 0)
    assert [m.result for m in loop.messages] == [Code.OK] * 5
    assert server.accepted == 5


def test_rule_10_limits_queue_first_come_first_served_one_release_per_finish(
    make_loop: Callable[..., Loop], serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """max_total_connections=2 with eight transfers: at most two connections, order kept."""
    server = serve(HTTPServer(default=respond(HELLO, delay=0.05)))
    loop = make_loop(max_total_connections=2)
    easies = add(loop.multi, *(Easy(server.url(f"/{i}")) for i in range(8)))
    loop.run()
    assert {m.easy for m in loop.messages} == set(easies)
    assert server.peak <= 2
    assert server.accepted == 2
    arrival = {path: n for n, path in enumerate(server.paths())}
    assert len(arrival) == 8
    for i in range(8):  # two lanes: a request may overtake its neighbour, nothing more
        assert abs(arrival[f"/{i}"] - i) <= 1, server.paths()
    assert loop.watched == {}


def test_rule_10_limit_counts_connections_while_transfers_wait(
    make_loop: Callable[..., Loop], serve: Callable[[Server], Server]
) -> None:
    """While two transfers hold both allowed connections, the third opens nothing."""
    silent = serve(never_answers())
    loop = make_loop(max_total_connections=2)
    add(loop.multi, *(Easy(silent.url()) for _ in range(3)))
    loop.run(until=lambda: len(silent.requests) >= 2, timeout=5)
    for _ in range(5):
        loop.step(0.05)
    assert silent.accepted == 2
    assert len(loop.watched) == 2
    assert loop.action(SOCKET_TIMEOUT) == 3


# --- rule 11 ----------------------------------------------------------------------


def test_rule_11_lookup_runs_off_the_loop_and_wakes_it_through_an_announced_socket(
    loop: Loop, http_server: HTTPServer, names: Names
) -> None:
    """A 0.5 s lookup never blocks a Multi call; its wake-up socket is announced with easy
    None (IN), and REMOVEd when no lookup is left."""
    names.add("slow.test", "127.0.0.1", delay=0.5)
    durations: list[float] = []
    original = loop.multi.socket_action

    def timed(fd: int, bits: int = 0) -> int:
        start = time.monotonic()
        try:
            return original(fd, bits)
        finally:
            durations.append(time.monotonic() - start)

    loop.multi.socket_action = timed  # type: ignore[method-assign]
    start = time.monotonic()
    (easy,) = add(loop.multi, Easy(http_server.url().replace("127.0.0.1", "slow.test")))
    loop.run()
    assert [(m.easy, m.result) for m in loop.messages] == [(easy, Code.OK)]
    assert time.monotonic() - start >= 0.45
    assert max(durations) < 0.2, f"a socket_action blocked: {max(durations):.3f} s"
    engine = [c for c in loop.socket_calls() if c[1] is None]
    assert engine, "the resolver's wake-up socket was not announced"
    assert engine[0][3] == POLL_IN
    assert engine[-1][3] == POLL_REMOVE
    assert easy.namelookup_time >= 0.45
    assert check_socket_protocol(loop.calls) == {}


def test_rule_11_lookups_run_concurrently(
    loop: Loop, http_server: HTTPServer, names: Names
) -> None:
    """Four 0.4 s lookups of different names finish in about 0.4 s, not 1.6 s."""
    for i in range(4):
        names.add(f"slow{i}.test", "127.0.0.1", delay=0.4)
    start = time.monotonic()
    add(
        loop.multi,
        *(Easy(http_server.url().replace("127.0.0.1", f"slow{i}.test")) for i in range(4)),
    )
    loop.run()
    assert [m.result for m in loop.messages] == [Code.OK] * 4
    assert time.monotonic() - start < 1.2


def test_rule_11_numeric_address_needs_no_resolver(loop: Loop, http_server: HTTPServer) -> None:
    """An IP literal announces no engine socket: every socket call names a transfer."""
    add(loop.multi, *(Easy(http_server.url()) for _ in range(3)))
    loop.run()
    assert [m.result for m in loop.messages] == [Code.OK] * 3
    assert all(c[1] is not None for c in loop.socket_calls())


# --- rule 12 ----------------------------------------------------------------------


def lines_executed(call: Callable[[], Any]) -> tuple[int, Any]:
    """Run `call`, counting the Python lines it executes (the work, independent of timing)."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = call()
    finally:
        sys.settrace(previous)
    return count, result


def work_per_transfer(loop: Loop, url: str, rounds: int = 5) -> int:
    """Median number of lines run by all socket_action calls of one keep-alive transfer."""
    totals = []
    for _ in range(rounds):
        easy = Easy(url)
        loop.multi.add_handle(easy)
        total, _ = lines_executed(lambda: loop.multi.socket_action(SOCKET_TIMEOUT, 0))
        done = False
        deadline = time.monotonic() + 5
        while not done and time.monotonic() < deadline:
            for key, _ in loop.selector.select(0.2):  # idle sockets are never ready
                n, _ = lines_executed(lambda fd=key.fd: loop.multi.socket_action(fd, 0))
                total += n
            while (message := loop.multi.info_read()) is not None:
                done = done or message.easy is easy
        assert done
        assert easy.result == Code.OK
        loop.multi.remove_handle(easy)
        totals.append(total)
    return sorted(totals)[len(totals) // 2]


def add_idle(loop: Loop, hold: HoldServer, count: int) -> None:
    """Add `count` transfers that connect to `hold` and then wait forever, sockets announced."""
    before = len(loop.watched)
    add(loop.multi, *(Easy(hold.url()) for _ in range(count)))
    loop.action(SOCKET_TIMEOUT)
    deadline = time.monotonic() + 20
    while (
        sum(1 for w in loop.watched.values() if w == POLL_IN) < before + count
        and time.monotonic() < deadline
    ):
        for key, _ in loop.selector.select(0.1):
            loop.action(key.fd, 0)
    assert sum(1 for w in loop.watched.values() if w == POLL_IN) >= before + count


def test_rule_12_socket_action_cost_does_not_grow_with_the_number_of_transfers(
    loop: Loop, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """The Python lines run by the socket_action calls of one keep-alive transfer are the
    same with 10 or 400 idle transfers in the multi."""
    server = serve(HTTPServer(default=respond(HELLO, delay=0.02)))  # always kick + IN
    hold = HoldServer()
    try:
        url = server.url()
        add_idle(loop, hold, 10)
        work_per_transfer(loop, url, rounds=2)  # warm up: connection pooled
        few = work_per_transfer(loop, url)
        add_idle(loop, hold, 390)
        many = work_per_transfer(loop, url)
    finally:
        hold.close()
    assert many <= few * 1.1 + 30, f"{few} lines with 10 idle, {many} with 400"


# --- the rest of the Multi API (not numbered rules) ------------------------------------


def test_socket_all_drives_transfers_to_completion(loop: Loop, http_server: HTTPServer) -> None:
    """The deprecated socket_all() alone (no socket_action) runs transfers to the end."""
    easies = add(loop.multi, *(Easy(http_server.url(p)) for p in ("/", "/slow", "/chunked")))
    running = loop.multi.socket_all()
    deadline = time.monotonic() + 10
    while running and time.monotonic() < deadline:
        if loop.watched:
            loop.selector.select(0.05)
        else:
            time.sleep(0.01)
        running = loop.multi.socket_all()
    assert running == 0
    results = []
    while (message := loop.multi.info_read()) is not None:
        results.append((message.easy, message.result))
    assert sorted(results, key=lambda r: easies.index(r[0])) == [(e, Code.OK) for e in easies]


def test_close_mid_transfer_closes_connections_and_releases_easies(
    http_server: HTTPServer, serve: Callable[[Server], Server]
) -> None:
    """close() with transfers in flight and idle connections pooled: every connection is
    closed, the easies can join another multi, and the closed multi refuses further use."""
    silent = serve(never_answers())
    loop = Loop()
    (done,) = add(loop.multi, Easy(http_server.url()))
    loop.run()
    hanging = Easy(silent.url())
    loop.multi.add_handle(hanging)
    loop.run(until=lambda: bool(silent.requests), timeout=5)
    loop.close()
    assert silent.wait_for(lambda: silent.active == 0, 2), "in-flight connection closed"
    assert http_server.wait_for(lambda: http_server.active == 0, 2), "pooled connection closed"
    assert check_socket_protocol(loop.calls) == {}
    with pytest.raises(MultiError):
        loop.multi.add_handle(Easy(http_server.url()))
    with Multi() as other:
        other.add_handle(hanging)
        other.add_handle(done)
        other.remove_handle(hanging)
        other.remove_handle(done)


def test_multi_is_a_context_manager(http_server: HTTPServer) -> None:
    """`with Multi() as m:` closes it on exit: its pooled connection is closed."""
    with Multi() as multi:
        loop = Loop(multi)
        add(multi, Easy(http_server.url()))
        loop.run()
    loop.selector.close()
    assert http_server.wait_for(lambda: http_server.active == 0, 2)
