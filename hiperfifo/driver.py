"""The pyuv loop under the engine: the only module that imports pyuv.

Owns the libuv handles: one Poll per descriptor number the engine announces
(created on the first announcement, kept with multi.assign, changed in place,
stopped on POLL_REMOVE and started again when that number is announced next,
closed by close()), one Timer for the engine's timer callback (0 ms runs on the
next loop iteration through an Idle handle, never re-entrantly), the FIFO
watcher, signals, one-shot timers and cross-thread wakers (uv Async) for the
daemon and its sources. Once per loop iteration, after that iteration's I/O
callbacks (a uv Check, before the daemon's own per-iteration callbacks), it
drains info_read() and hands all the transfers finished in it over at once:
one socket_action per ready socket, one on_done call per iteration (small bench,
50 at once: ~78 transfers over ~40 socket_actions an iteration, measured).
It holds no transfer state and does not log.

Why a stopped Poll may be started again for whatever socket holds its number
now (libuv 1.13, as bundled with pyuv 1.4.0; see docs/pyuv.md): a
uv_poll_t holds the number and nothing of the socket. uv_poll_stop() only takes
it out of the loop's table (no epoll_ctl), and so does uv_close() of a Poll
(uv__poll_close is uv__poll_stop: no stale-event invalidation either), so a
new Poll on a reused number is no safer than the stopped one restarted.
uv_poll_start() re-registers the number on the next poll with EPOLL_CTL_ADD
(MOD on EEXIST), which is right whether it is the same socket or a new one.
Creating a Poll instead costs a Python object, an epoll ADD+DEL probe, an
FIONBIO ioctl and a close later: on every keep-alive reuse, which announces
REMOVE then IN for the same fd. What must never happen is two Polls on one
number with one of them active, so a kept Poll is closed before any other
watcher takes its number (watch_readable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyuv

from hiperfifo.engine import (
    CSELECT_ERR,
    CSELECT_IN,
    CSELECT_OUT,
    POLL_IN,
    POLL_INOUT,
    POLL_OUT,
    POLL_REMOVE,
    SOCKET_TIMEOUT,
    Message,
    Multi,
)

_UV_EVENTS = {
    POLL_IN: pyuv.UV_READABLE,
    POLL_OUT: pyuv.UV_WRITABLE,
    POLL_INOUT: pyuv.UV_READABLE | pyuv.UV_WRITABLE,
}

OnDone = Callable[[list[Message]], None]


def _close(handle: Any) -> None:
    if not handle.closed:
        handle.close()


class Handle:
    """A loop resource the daemon holds (FIFO watcher, signal, one-shot timer)."""

    def __init__(self, uv_handle: Any) -> None:
        self._uv = uv_handle

    def stop(self) -> None:
        """Stop and close it; calling twice is harmless."""
        if not self._uv.closed:
            self._uv.stop()
            self._uv.close()


class Watch(Handle):
    """A readable-fd watcher that can be paused (input back-pressure) and resumed."""

    def __init__(self, poll: Any, callback: Callable[[], None]) -> None:
        super().__init__(poll)
        self._callback = callback
        self.paused = True

    def _ready(self, _poll: Any, _events: int, _error: int | None) -> None:
        self._callback()

    def pause(self) -> None:
        """Stop calling back until resume(); the fd stays open and its bytes unread."""
        if not self._uv.closed and not self.paused:
            self._uv.stop()
        self.paused = True

    def resume(self) -> None:
        """Call back again on every loop iteration where the fd is readable."""
        if not self._uv.closed and self.paused:
            self._uv.start(pyuv.UV_READABLE, self._ready)
        self.paused = False


class Alarm(Handle):
    """A one-shot timer the daemon sets again and again (e.g. for the earliest retry)."""

    def __init__(self, uv_handle: Any, callback: Callable[[], None]) -> None:
        super().__init__(uv_handle)
        self._callback = callback

    def set(self, seconds: float) -> None:
        """Call the callback once, `seconds` from now, replacing any earlier setting."""
        self._uv.start(lambda _h: self._callback(), max(seconds, 0.0), 0.0)

    def cancel(self) -> None:
        """Forget the setting; the alarm can be set again."""
        if not self._uv.closed:
            self._uv.stop()


class Waker(Handle):
    """Wakes the loop from another thread: send() is the one call safe off the loop."""

    def send(self) -> None:
        """The callback runs soon on the loop's thread (sends may coalesce into one call)."""
        self._uv.send()

    def stop(self) -> None:
        if not self._uv.closed:
            self._uv.close()


class Each(Handle):
    """A callback the driver's Check calls once per loop iteration (every_iteration)."""

    def __init__(self, callbacks: list[Callable[[], None]], callback: Callable[[], None]) -> None:
        super().__init__(None)
        self._callbacks, self._callback = callbacks, callback
        callbacks.append(callback)

    def stop(self) -> None:
        """Call it no more; calling twice is harmless."""
        self._callbacks[:] = [c for c in self._callbacks if c is not self._callback]


class Driver:
    """Runs one Multi on a pyuv loop and reports finished transfers to `on_done`."""

    def __init__(self, multi: Multi, on_done: OnDone) -> None:
        self.loop = pyuv.Loop()
        self.loop.excepthook = self._excepthook
        self.failure: BaseException | None = None
        self._multi = multi
        self._on_done = on_done
        self._timer = pyuv.Timer(self.loop)
        self._soon = pyuv.Idle(self.loop)
        self._polls: dict[int, Any] = {}
        self._own: list[Handle] = []
        # The daemon's per-iteration callbacks, run by the one Check below after collect():
        # libuv runs Check handles most recently started first, and a callback such as the
        # journal's flush must see the transfer.done lines of the same iteration.
        self._each: list[Callable[[], None]] = []
        self._acted = False  # a socket callback called socket_action in this iteration
        self._check = pyuv.Check(self.loop)  # started by the first one (or every_iteration)
        multi.socket_function = self._socket_function
        multi.timer_function = self._timer_function

    # -- the engine's callbacks (called inside the engine: only assign() allowed) --

    def _socket_function(self, easy: object, fd: int, what: int, poll: Any) -> None:
        if what == POLL_REMOVE:
            self._forget(fd, poll)
            return
        if poll is None:
            poll = self._polls.get(fd)  # this number's Poll, stopped: one Poll per fd
            if poll is None:
                poll = self._polls[fd] = pyuv.Poll(self.loop, fd)
            self._multi.assign(fd, poll)
        poll.start(_UV_EVENTS[what], self._on_socket)

    def _forget(self, fd: int, poll: Any) -> None:
        """Stop watching `fd` before the engine closes it; its Poll is kept for the number."""
        kept = self._polls.get(fd)
        if poll is not None and poll is not kept:  # not ours to keep: let it go
            _close(poll)
        if kept is not None and kept.active:
            kept.stop()

    def _timer_function(self, timeout_ms: int) -> None:
        self._timer.stop()
        self._soon.stop()
        if timeout_ms == 0:
            self._soon.start(self._on_timeout)
        elif timeout_ms > 0:
            self._timer.start(self._on_timeout, timeout_ms / 1000.0, 0.0)

    # -- libuv's callbacks: the only places that call into the engine --

    def _on_socket(self, poll: Any, events: int | None, error: int | None) -> None:
        # libuv's poll phase: the Check right after it (_on_check) collects what finished.
        if not self._acted:
            self._acted = True
            self._check.start(self._on_check)
        if error is not None:  # pyuv passes events=None with an error (e.g. a reset socket)
            self._multi.socket_action(poll.fileno(), CSELECT_ERR)
            return
        bits = 0
        if events & pyuv.UV_READABLE:
            bits |= CSELECT_IN
        if events & pyuv.UV_WRITABLE:
            bits |= CSELECT_OUT
        self._multi.socket_action(poll.fileno(), bits)

    def _on_timeout(self, handle: Any) -> None:
        # Timers and Idle run before the loop polls, and it may then sleep: collect now.
        handle.stop()
        self._multi.socket_action(SOCKET_TIMEOUT, 0)
        self.collect()

    def _on_check(self, _handle: Any) -> None:
        """Once per loop iteration, after its I/O callbacks: what finished in it, then the
        daemon's per-iteration callbacks (every_iteration), in the order added."""
        if self._acted:
            self._acted = False
            self.collect()
        each = self._each
        if not each:  # nothing to call in a loop iteration without socket events
            self._check.stop()
        for callback in each:
            callback()

    def collect(self) -> None:
        """Drain info_read() and hand the finished transfers to on_done (if any)."""
        finished: list[Message] = []
        read = self._multi.info_read
        while (message := read()) is not None:
            finished.append(message)
        if finished:
            self._on_done(finished)

    def _excepthook(self, kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if self.failure is None:
            self.failure = value.with_traceback(tb)
        self.loop.stop()

    # -- services for the daemon --

    def watch_readable(self, fd: int, callback: Callable[[], None]) -> Watch:
        """Call `callback()` on every loop iteration where `fd` is readable (until paused)."""
        kept = self._polls.pop(fd, None)  # a closed socket's number: never two Polls on one fd
        if kept is not None:
            _close(kept)
        watch = Watch(pyuv.Poll(self.loop, fd), callback)
        watch.resume()
        self._own.append(watch)
        return watch

    def every_iteration(self, callback: Callable[[], None]) -> Handle:
        """Call `callback()` once per loop iteration, after its I/O callbacks and after the
        finished transfers of the iteration were handed to on_done (the driver's uv Check)."""
        each = Each(self._each, callback)
        self._check.start(self._on_check)
        self._own.append(each)
        return each

    def before_waiting(self, callback: Callable[[], None]) -> Handle:
        """Call `callback()` once per loop iteration, just before libuv polls for I/O (uv Prepare).

        Every callback of the iteration has run by then (signals and I/O of the
        previous poll, timers due now), and the loop may sleep right after.
        """
        prepare = pyuv.Prepare(self.loop)
        prepare.start(lambda _h: callback())
        return self._keep(prepare)

    def on_signal(self, signum: int, callback: Callable[[int], None]) -> Handle:
        """Call `callback(signum)` at once when the signal arrives (pyuv.Signal)."""
        signal = pyuv.Signal(self.loop)
        signal.start(lambda _h, num: callback(num), signum)
        return self._keep(signal)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Handle:
        """Call `callback()` once, `seconds` from now."""
        timer = pyuv.Timer(self.loop)
        timer.start(lambda _h: callback(), max(seconds, 0.0), 0.0)
        return self._keep(timer)

    def every(self, seconds: float, callback: Callable[[], None]) -> Handle:
        """Call `callback()` every `seconds`, the first time `seconds` from now.

        A loop that is stuck (a long callback, SIGSTOP) does not call it: the
        systemd watchdog relies on that.
        """
        timer = pyuv.Timer(self.loop)
        timer.start(lambda _h: callback(), seconds, seconds)
        return self._keep(timer)

    def alarm(self, callback: Callable[[], None]) -> Alarm:
        """A one-shot timer, not yet set (see Alarm.set)."""
        alarm = Alarm(pyuv.Timer(self.loop), callback)
        self._own.append(alarm)
        return alarm

    def waker(self, callback: Callable[[], None]) -> Waker:
        """A handle another thread can send() to have `callback()` run on the loop (uv Async)."""
        waker = Waker(pyuv.Async(self.loop, lambda _h: callback()))
        self._own.append(waker)
        return waker

    def _keep(self, uv_handle: Any) -> Handle:
        handle = Handle(uv_handle)
        self._own.append(handle)
        return handle

    def run(self) -> None:
        """Run the loop until stop(); re-raise what a callback raised."""
        self.loop.run(pyuv.UV_RUN_DEFAULT)
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        """Make run() return after the current callback."""
        self.loop.stop()

    def close(self) -> None:
        """Close every handle (the multi should be closed first) and let libuv finish."""
        for handle in self._own:
            handle.stop()
        for poll in self._polls.values():
            _close(poll)
        self._polls.clear()
        _close(self._timer)
        _close(self._soon)
        _close(self._check)
        self.loop.run(pyuv.UV_RUN_NOWAIT)
