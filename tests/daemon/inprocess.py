"""The daemon in this process: a loop on stdlib selectors with a fake clock, a list source.

`FakeLoop` offers the services of driver.Driver that the daemon and its sources use.
The engine's sockets and its timer run in real time on real sockets (the engine keeps
its own clock); the daemon's timers (call_later, every, alarms: retry backoff, the drain
deadline, systemd status) run on a `FakeClock` that jumps to the next of them whenever
the loop is quiet (nothing ready for QUIET seconds, no engine timer due). So a 30 s drain
deadline or a 100 s retry backoff takes no time, and nothing sleeps. The clock jumps only
while the engine runs no transfer (so a slow answer on a loaded machine is never cut
short by a deadline that jumped), unless `jump_while_busy` (a test of a transfer that
hangs on purpose).

`ListSource` is a second kind of source (sources/base.py's protocol), written as a test
would write one: it hands its items in when started and records what the daemon tells
it (pause, resume, stop, done).
"""

from __future__ import annotations

import io
import itertools
import json
import selectors
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from hiperfifo import logs
from hiperfifo.config import Config
from hiperfifo.daemon import Daemon
from hiperfifo.engine import (
    CSELECT_IN,
    CSELECT_OUT,
    POLL_REMOVE,
    SOCKET_TIMEOUT,
    Message,
    Multi,
)
from hiperfifo.engine.testing import SELECTOR_EVENTS, FakeClock
from hiperfifo.journal import Journal
from hiperfifo.output import Output
from hiperfifo.sources.base import Inbox, Item, Loop

QUIET = 0.02  # real seconds with nothing ready before the fake clock may jump
WAIT = 30.0  # real seconds: the bound on one run of the loop


class FakeTimer:
    """A daemon timer on the fake clock: one-shot, repeating, or an alarm set again."""

    def __init__(self, loop: FakeLoop, callback: Callable[[], None], repeat: float = 0.0):
        self._loop = loop
        self._callback = callback
        self._repeat = repeat
        self.due: float | None = None

    def set(self, seconds: float) -> None:
        self.due = self._loop.clock() + max(seconds, 0.0)
        self._loop.arm(self)

    def cancel(self) -> None:
        self.due = None

    stop = cancel

    def fire(self) -> None:
        self.due = None
        if self._repeat:
            self.set(self._repeat)
        self._callback()


class FakeWatch:
    """A readable-fd watcher (driver.Watch) on the loop's selector."""

    def __init__(self, loop: FakeLoop, fd: int, callback: Callable[[], None]) -> None:
        self._loop = loop
        self.fd = fd
        self.callback = callback
        self.paused = True
        self._closed = False

    def pause(self) -> None:
        if not self.paused and not self._closed:
            self._loop.selector.unregister(self.fd)
        self.paused = True

    def resume(self) -> None:
        if self.paused and not self._closed:
            self._loop.selector.register(self.fd, selectors.EVENT_READ, self)
        self.paused = False

    def stop(self) -> None:
        self.pause()
        self._closed = True


class FakeWaker:
    """driver.Waker: send() from any thread runs the callback on the loop soon."""

    def __init__(self, loop: FakeLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self.callback = callback
        self.sent = False

    def send(self) -> None:
        self.sent = True

    def stop(self) -> None:
        self._loop.wakers.remove(self)


class FakeLoop:
    """driver.Driver's services for the daemon, in this process; pass it as `driver=`."""

    def __init__(self, clock: FakeClock, jump_while_busy: bool = False) -> None:
        self.clock = clock
        self.jump_while_busy = jump_while_busy
        self.running = 0  # transfers in the engine, as its last socket_action said
        self.selector = selectors.DefaultSelector()
        self.jumps = 0  # how often the fake clock jumped to the next timer
        self.wakers: list[FakeWaker] = []
        self._timers: list[FakeTimer] = []
        self._seq = itertools.count()
        self._engine_at: float | None = None  # time.monotonic() of the engine's timer
        self._iteration: list[Callable[[], None]] = []
        self._before_waiting: list[Callable[[], None]] = []
        self._signals: dict[int, Callable[[int], None]] = {}
        self._stopped = False
        self._multi: Multi | None = None
        self._on_done: Callable[[list[Message]], None] | None = None

    def __call__(self, multi: Multi, on_done: Callable[[list[Message]], None]) -> FakeLoop:
        """The daemon's driver factory: take over the engine's callbacks."""
        self._multi, self._on_done = multi, on_done
        multi.socket_function = self._socket_function
        multi.timer_function = self._timer_function
        return self

    # -- the engine's callbacks --

    def _socket_function(self, easy: object, fd: int, what: int, socketp: Any) -> None:
        assert self._multi is not None
        if what == POLL_REMOVE:
            if fd in self.selector.get_map():
                self.selector.unregister(fd)
            return
        if socketp is None or fd not in self.selector.get_map():
            if fd in self.selector.get_map():
                self.selector.unregister(fd)
            self.selector.register(fd, SELECTOR_EVENTS[what], None)
            self._multi.assign(fd, fd)
        else:
            self.selector.modify(fd, SELECTOR_EVENTS[what], None)

    def _timer_function(self, timeout_ms: int) -> None:
        self._engine_at = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    def _action(self, fd: int, bits: int, collect: bool = True) -> None:
        assert self._multi is not None
        self.running = self._multi.socket_action(fd, bits)
        if collect:  # (after ready sockets, the driver collects once, after all of them)
            self.collect()

    def collect(self) -> None:
        assert self._multi is not None
        assert self._on_done is not None
        finished = []
        while (message := self._multi.info_read()) is not None:
            finished.append(message)
        if finished:
            self._on_done(finished)

    # -- services (driver.Driver's names) --

    def watch_readable(self, fd: int, callback: Callable[[], None]) -> FakeWatch:
        watch = FakeWatch(self, fd, callback)
        watch.resume()
        return watch

    def every_iteration(self, callback: Callable[[], None]) -> None:
        self._iteration.append(callback)

    def before_waiting(self, callback: Callable[[], None]) -> None:
        self._before_waiting.append(callback)

    def on_signal(self, signum: int, callback: Callable[[int], None]) -> None:
        self._signals[signum] = callback

    def call_later(self, seconds: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self, callback)
        timer.set(seconds)
        return timer

    def every(self, seconds: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self, callback, repeat=seconds)
        timer.set(seconds)
        return timer

    def alarm(self, callback: Callable[[], None]) -> FakeTimer:
        return FakeTimer(self, callback)

    def waker(self, callback: Callable[[], None]) -> FakeWaker:
        waker = FakeWaker(self, callback)
        self.wakers.append(waker)
        return waker

    def arm(self, timer: FakeTimer) -> None:
        if timer not in self._timers:
            self._timers.append(timer)

    def signal(self, signum: int) -> None:
        """As if `signum` arrived: its callback runs (on the loop, as pyuv.Signal's would)."""
        self._signals[signum](signum)

    # -- running --

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        self.selector.close()

    def run(self) -> None:
        """Run until stop(); AssertionError when nothing is left to happen, or after WAIT s."""
        give_up = time.monotonic() + WAIT
        while not self._stopped:
            assert time.monotonic() < give_up, f"the daemon still runs after {WAIT} s"
            for callback in self._before_waiting:
                callback()
            quiet = self._poll()
            for callback in self._iteration:
                callback()
            for waker in list(self.wakers):
                if waker.sent:
                    waker.sent = False
                    waker.callback()
            idle = self.running == 0 or self.jump_while_busy
            self._fire_timers(jump=quiet and idle and not self._stopped)

    def _poll(self) -> bool:
        """Dispatch ready sockets and the engine's timer; True when nothing happened."""
        now = time.monotonic()
        if self._engine_at is not None and self._engine_at <= now:
            self._engine_at = None
            self._action(SOCKET_TIMEOUT, 0)
            return False
        wait = QUIET if self._engine_at is None else min(QUIET, self._engine_at - now)
        if any(w.sent for w in self.wakers):
            wait = 0.0
        ready = self.selector.select(wait) if self.selector.get_map() else []
        for key, events in ready:
            if key.fd not in self.selector.get_map():
                continue  # unregistered by an earlier action of this round
            if isinstance(key.data, FakeWatch):
                key.data.callback()
                continue
            bits = (CSELECT_IN if events & selectors.EVENT_READ else 0) | (
                CSELECT_OUT if events & selectors.EVENT_WRITE else 0
            )
            self._action(key.fd, bits, collect=False)
        if ready:  # as the driver's Check: what finished in this round, in one call
            self.collect()
        engine_soon = self._engine_at is not None and self._engine_at - now <= QUIET
        return not ready and not engine_soon

    def _fire_timers(self, jump: bool) -> None:
        """Fire the daemon timers due now; when quiet, first move the clock to the next."""
        armed = [t for t in self._timers if t.due is not None]
        self._timers = armed
        if not armed:
            assert not jump or self.selector.get_map(), "nothing left to happen: the daemon hangs"
            return
        first = min(armed, key=lambda t: t.due or 0.0)
        assert first.due is not None
        if jump and first.due > self.clock():
            self.clock.now = first.due
            self.jumps += 1
        for timer in sorted(armed, key=lambda t: t.due or 0.0):
            if timer.due is not None and timer.due <= self.clock() and not self._stopped:
                timer.fire()


class ListSource:
    """A source that hands in its items when started (sources/base.py's protocol)."""

    name = "list"
    wants_done = True

    def __init__(self, items: Iterable[Item], journaled: bool = False) -> None:
        self.items = list(items)
        self.journaled = journaled
        self.inbox: Inbox | None = None
        self.loop: Loop | None = None
        self.calls: list[str] = []  # start, pause, resume, stop, close: changes only
        self.answers: list[dict[str, object]] = []  # what done() was told

    def describe(self) -> dict[str, object]:
        return {"source": self.name}

    def start(self, loop: Loop, inbox: Inbox) -> None:
        self.loop, self.inbox = loop, inbox
        self.calls.append("start")
        if self.items:
            loop.call_later(0, self.hand_in)

    def hand_in(self, items: Sequence[Item] | None = None) -> None:
        assert self.inbox is not None
        self.inbox.take(self, self.items if items is None else items)

    def _note(self, call: str) -> None:
        if not self.calls or self.calls[-1] != call:
            self.calls.append(call)

    def pause(self) -> None:
        self._note("pause")

    def resume(self) -> None:
        self._note("resume")

    def stop(self) -> None:
        self._note("stop")

    def done(self, fields: Mapping[str, object]) -> None:
        self.answers.append(dict(fields))

    def close(self) -> None:
        self._note("close")


class Run:
    """One in-process daemon: its loop, clock, log lines and exit status."""

    def __init__(
        self,
        sources: Sequence[Any] | Callable[[], Sequence[Any]],
        journal: Journal | None = None,
        clock_start: float = 1000.0,
        jump_while_busy: bool = False,
        **options: Any,
    ) -> None:
        self.stream = io.StringIO()
        logs.configure("json", options.pop("log_level", "info"), self.stream)
        self.clock = FakeClock(clock_start)
        self.loop = FakeLoop(self.clock, jump_while_busy)
        self.config = Config(**options)
        self.sources = sources() if callable(sources) else sources  # built after the logs
        self.daemon = Daemon(
            self.config, self.sources, Output(), journal, clock=self.clock, driver=self.loop
        )
        self.status: int | None = None

    def at(self, seconds: float, action: Callable[[], None]) -> None:
        """Do `action` `seconds` of fake time after the start (a daemon timer)."""
        self.loop.call_later(seconds, action)

    def signal_at(self, seconds: float, signum: signal.Signals) -> None:
        self.at(seconds, lambda: self.loop.signal(signum))

    def run(self) -> int:
        try:
            self.status = self.daemon.run()
        finally:
            logs.flush()
            structlog.reset_defaults()
        return self.status

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [e for e in lines if name is None or e["event"] == name]
