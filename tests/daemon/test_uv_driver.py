"""driver.py in-process with the real engine, and the daemon's internal-error path (exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyuv
from hf_support import WAIT, Server, daemon_env
from servers import Server as LoopbackServer
from servers import in_rounds

from hiperfifo.driver import Driver
from hiperfifo.engine import Code, Easy, Message, Multi


def run_on_driver(multi: Multi, urls: list[str], at_once: int = 0) -> tuple[Driver, list[Message]]:
    """Add every URL (at most `at_once` in the multi, 0: all at once), run the pyuv Driver
    until each one finished; the driver is left open."""
    finished: list[Message] = []
    todo = list(reversed(urls))

    def on_done(messages: list[Message]) -> None:
        for message in messages:
            multi.remove_handle(message.easy)
            finished.append(message)
            if todo:
                multi.add_handle(Easy(todo.pop()))
        if len(finished) == len(urls):
            driver.stop()

    driver = Driver(multi, on_done)
    watchdog = driver.call_later(WAIT, driver.stop)
    for _ in range(at_once or len(urls)):
        multi.add_handle(Easy(todo.pop()))
    driver.run()
    watchdog.stop()
    return driver, finished


def test_driver_runs_transfers_and_leaves_no_poll_behind(http_server: Server) -> None:
    """50 transfers over 4 kept-alive connections all finish once; no Poll is left watching,
    and none is left open after close()."""
    multi = Multi(max_total_connections=4)
    driver, finished = run_on_driver(multi, [http_server.url(f"/size/{i}") for i in range(50)])
    assert sorted(m.easy.size_download for m in finished) == list(range(50))
    assert {m.result for m in finished} == {Code.OK}
    assert http_server.peak <= 4
    assert [h for h in driver.loop.handles if isinstance(h, pyuv.Poll) and h.active] == []
    multi.close()
    driver.close()
    assert [h for h in driver.loop.handles if isinstance(h, pyuv.Poll) and not h.closed] == []


def _run_to_the_end(driver: Driver, multi: Multi, todo: list[str], at_once: int) -> None:
    """Add the first `at_once` of `todo` (taken from its end), run the loop until on_done
    stops it (or WAIT passes), then close the multi and the driver."""
    watchdog = driver.call_later(WAIT, driver.stop)
    for _ in range(at_once):
        multi.add_handle(Easy(todo.pop(), write_function=len))
    driver.run()
    watchdog.stop()
    multi.close()
    driver.close()


def test_driver_keeps_its_connections_when_answers_come_in_rounds(
    serve: Callable[[LoopbackServer], LoopbackServer],
) -> None:
    """The daemon's shape: finished handles removed and replaced as their messages come,
    50 in the multi, 1,000 URLs, answers 50 at a time: the 50 connections opened first
    serve every URL (the idle cache is 4 x the handles in the multi, as libcurl's)."""
    server = serve(LoopbackServer(in_rounds(50)))
    multi = Multi()
    urls = [server.url(f"/?i={i}") for i in range(1000)]
    todo = list(reversed(urls))
    finished: list[Message] = []

    def on_done(messages: list[Message]) -> None:
        for message in messages:
            multi.remove_handle(message.easy)
            finished.append(message)
            if todo:
                multi.add_handle(Easy(todo.pop(), write_function=len))
        if len(finished) == len(urls):
            driver.stop()

    driver = Driver(multi, on_done)
    _run_to_the_end(driver, multi, todo, 50)
    assert [m.result for m in finished] == [Code.OK] * 1000
    assert server.accepted == 50


def test_what_finishes_in_one_loop_iteration_comes_in_one_call_before_every_iteration(
    serve: Callable[[LoopbackServer], LoopbackServer],
) -> None:
    """on_done runs once per loop iteration (the driver's Check, after the poll phase), with
    every transfer finished in it, and before the every_iteration callbacks of the same
    iteration (the journal's flush must see that iteration's transfer.done lines)."""
    server = serve(LoopbackServer(in_rounds(20)))
    multi = Multi()
    urls = [server.url(f"/?i={i}") for i in range(100)]
    todo = list(reversed(urls))
    calls: list[int] = []
    unread: list[Message | None] = []  # what an every_iteration callback finds unread

    def on_done(messages: list[Message]) -> None:
        calls.append(len(messages))
        for message in messages:
            assert message.result == Code.OK
            multi.remove_handle(message.easy)
            if todo:
                multi.add_handle(Easy(todo.pop(), write_function=len))
        if sum(calls) == len(urls):
            driver.stop()

    driver = Driver(multi, on_done)
    driver.every_iteration(lambda: unread.append(multi.info_read()))
    _run_to_the_end(driver, multi, todo, 20)
    assert sum(calls) == len(urls)
    assert len(calls) < len(urls)  # answers come 20 at a time: some call carries several
    assert unread
    assert set(unread) == {None}


def test_a_reused_descriptor_number_gets_its_stopped_poll_back(http_server: Server) -> None:
    """One connection slot, two servers in turn, one URL at a time: every switch closes a
    socket and opens another, mostly with the same number; a number used again is watched
    by the same (restarted) Poll; all transfers finish. (All added at once, the freed
    connection would serve the queued URLs of its own server first: reuse before churn.)"""
    other = Server()
    thread = threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        assigned: list[tuple[int, object]] = []

        class Recorder(Multi):
            def assign(self, fd: int, socketp: object) -> None:
                assigned.append((fd, socketp))
                super().assign(fd, socketp)

        multi = Recorder(max_total_connections=1)
        servers = (http_server, other)
        urls = [servers[i % 2].url(f"/size/{i}") for i in range(10)]
        driver, finished = run_on_driver(multi, urls, at_once=1)
        multi.close()
        driver.close()
    finally:
        other.shutdown()
        other.server_close()
        thread.join(5)
    assert sorted(m.easy.size_download for m in finished) == list(range(10))
    assert {m.result for m in finished} == {Code.OK}
    assert http_server.connections + other.connections == 10  # a new socket for each
    # Sockets the engine announced as new; most take the number just freed (the kernel gives
    # the lowest free one), but another thread of this process (a test server) may take it
    # in between: whichever number recurs, it comes back with the same (restarted) Poll.
    numbers = [fd for fd, _poll in assigned]
    assert len(numbers) > len(set(numbers)), numbers  # some number was used again
    polls = {fd: {id(poll) for number, poll in assigned if number == fd} for fd in numbers}
    assert all(len(ids) == 1 for ids in polls.values()), polls


def test_zero_timeout_runs_on_the_next_iteration_not_reentrantly() -> None:
    """A 0 ms timer callback is not called inside the engine call that asked for it: every
    socket_action starts with no other engine call on the stack."""
    calls: list[tuple[str, int]] = []  # (what, engine calls on the stack when it happened)
    depth = 0

    class Recorder(Multi):
        def add_handle(self, easy: Easy) -> None:
            nonlocal depth
            calls.append(("add_handle", depth))
            depth += 1
            try:
                super().add_handle(easy)
            finally:
                depth -= 1

        def socket_action(self, fd: int, ev_bitmask: int = 0) -> int:
            nonlocal depth
            calls.append(("socket_action", depth))
            depth += 1
            try:
                return super().socket_action(fd, ev_bitmask)
            finally:
                depth -= 1

    multi = Recorder()
    driver = Driver(multi, lambda messages: driver.stop())
    timer_function = multi.timer_function
    assert timer_function is not None

    def recorded_timer(ms: int) -> None:
        calls.append((f"timer {ms}", depth))
        timer_function(ms)

    multi.timer_function = recorded_timer
    multi.add_handle(Easy("gopher://nowhere/"))
    assert calls == [("add_handle", 0), ("timer 0", 1)]  # asked for 0 ms; nothing ran yet
    watchdog = driver.call_later(WAIT, driver.stop)
    driver.run()
    watchdog.stop()
    actions = [d for what, d in calls if what == "socket_action"]
    assert actions, "the 0 ms timer never fired"
    assert set(actions) == {0}, f"socket_action called re-entrantly: {calls}"
    multi.close()
    driver.close()


def test_internal_error_logs_traceback_and_exits_1(tmp_path: Path) -> None:
    """An exception escaping a loop callback: daemon.crashed + traceback, exit 1, FIFO gone."""
    fifo = tmp_path / "in.fifo"
    script = (
        "import sys, hiperfifo.intake as i\n"
        "def boom(*_args): raise RuntimeError('injected failure')\n"
        "i.Intake.take = boom\n"
        "from hiperfifo.cli import main\n"
        f"sys.exit(main(['--fifo', {str(fifo)!r}]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=daemon_env(),
    )
    try:
        for _ in range(int(WAIT / 0.02)):
            if fifo.exists():
                break
            assert proc.poll() is None
            time.sleep(0.02)
        with open(fifo, "wb") as writer:
            writer.write(b"http://127.0.0.1:1/\n")
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    crashed = [json.loads(line) for line in out.decode().splitlines()]
    crash = next(e for e in crashed if e["event"] == "daemon.crashed")
    assert crash["level"] == "error"
    assert "injected failure" in json.dumps(crash["exception"])
    assert not fifo.exists()


def test_paused_watch_leaves_bytes_unread_until_resumed() -> None:
    """A paused readable watch is not called back while data waits; resume() delivers it."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    driver = Driver(Multi(), lambda messages: None)
    got: list[bytes] = []
    watch = driver.watch_readable(read_fd, lambda: got.append(os.read(read_fd, 100)))
    watch.pause()
    os.write(write_fd, b"waiting")
    driver.call_later(0.2, driver.stop)
    driver.run()
    assert got == []
    watch.resume()
    driver.call_later(0.2, driver.stop)
    driver.run()
    assert got == [b"waiting"]
    checks: list[int] = []
    driver.every_iteration(lambda: checks.append(1))
    driver.call_later(0.05, driver.stop)
    driver.run()
    assert checks  # the Check handle ran after the iteration's callbacks
    driver.close()
    os.close(read_fd)
    os.close(write_fd)


def test_a_waker_sent_from_another_thread_runs_its_callback_on_the_loop() -> None:
    """Driver.waker (uv Async), as a source on its own thread uses it: each send() from the
    thread leads to a callback on the loop's thread; stop() closes it with the driver."""
    driver = Driver(Multi(), lambda _messages: None)
    ran_on: list[int] = []
    sent = threading.Event()

    def woken() -> None:
        ran_on.append(threading.get_ident())
        if sent.is_set():
            driver.stop()

    waker = driver.waker(woken)

    def thread_body() -> None:
        waker.send()
        sent.set()
        waker.send()

    watchdog = driver.call_later(WAIT, driver.stop)
    thread = threading.Thread(target=thread_body)
    thread.start()
    driver.run()
    thread.join(WAIT)
    watchdog.stop()
    assert ran_on  # the sends may coalesce into one call, never into none
    assert set(ran_on) == {threading.get_ident()}
    waker.stop()
    driver.close()
    assert [h for h in driver.loop.handles if isinstance(h, pyuv.Async) and not h.closed] == []
