"""Does one socket_action cost the same with 10 or 5,000 transfers? (docs/engine.md, rule 12)

Measures the mean wall time of one `socket_action` call on one active
keep-alive connection (a local server answering a tiny response, transfer
after transfer) while 10, 100, 1,000 and 5,000 other transfers sit idle in
the same multi: each connected to a server that accepts and never answers,
each holding an announced socket. Prints one row per idle count: mean µs per
socket_action, its ratio to the 10 row (issue 2's target: within 1.3x at
5,000), and the same for the median, which shrugs off scheduler noise.

The servers run in a child process so that their work never runs inside a
measured call. Not a test; run it by hand:

    .venv/bin/python bench/engine_scale.py [--transfers 3000] [--idle 10,100,1000,5000]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import resource
import selectors
import socket
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

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
    Multi,
)

ANSWER_DELAY = 0.001  # seconds
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
EVENTS = {
    POLL_IN: selectors.EVENT_READ,
    POLL_OUT: selectors.EVENT_WRITE,
    POLL_INOUT: selectors.EVENT_READ | selectors.EVENT_WRITE,
}


# --- the servers (child process) ---------------------------------------------------


def serve(ready: Connection) -> None:
    """One selectors loop: a keep-alive responder and a listener that accepts and holds.

    Answers wait ANSWER_DELAY, so every transfer takes the same two calls (the kick
    sends the request, the IN event reads the answer) at every idle count.
    """
    active = socket.create_server(("127.0.0.1", 0), backlog=128)
    idle = socket.create_server(("127.0.0.1", 0), backlog=4096)
    sel = selectors.DefaultSelector()
    for listener in (active, idle):
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, listener)
    held: list[socket.socket] = []
    due: list[tuple[float, socket.socket, bytes]] = []  # answers waiting for their time
    ready.send((active.getsockname()[1], idle.getsockname()[1]))
    while not ready.poll(0):
        wait = max(0.0, due[0][0] - time.monotonic()) if due else 0.2
        for key, _ in sel.select(wait):
            if key.data is idle:
                _accept_all(idle, held.append)
            elif key.data is active:
                _accept_all(active, lambda c: sel.register(c, selectors.EVENT_READ, "conn"))
            else:
                _read(sel, key.fileobj, due)  # type: ignore[arg-type]
        while due and due[0][0] <= time.monotonic():
            _, conn, answer = due.pop(0)
            try:
                conn.sendall(answer)
            except OSError:
                pass


def _accept_all(listener: socket.socket, keep: Callable[[socket.socket], Any]) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        keep(conn)


def _read(
    sel: selectors.BaseSelector, conn: socket.socket, due: list[tuple[float, socket.socket, bytes]]
) -> None:
    try:
        data = conn.recv(65536)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        sel.unregister(conn)
        conn.close()
        return
    due.append((time.monotonic() + ANSWER_DELAY, conn, RESPONSE * data.count(b"\r\n\r\n")))


# --- the application (this process) ------------------------------------------------


class App:
    """A minimal selectors application around one Multi; times every socket_action call."""

    def __init__(self) -> None:
        self.multi = Multi(socket_function=self.on_socket, timer_function=self.on_timer)
        self.selector = selectors.DefaultSelector()
        self.watched: dict[int, int] = {}
        self.timer_ms = -1
        self.finished: set[Easy] = set()
        self.samples: list[int] | None = None  # ns per socket_action, while measuring

    def on_socket(self, easy: Any, fd: int, what: int, socketp: Any) -> None:
        if what == POLL_REMOVE:
            if self.watched.pop(fd, None) is not None:
                self.selector.unregister(fd)
        elif fd in self.watched:
            self.selector.modify(fd, EVENTS[what])
            self.watched[fd] = what
        else:
            self.selector.register(fd, EVENTS[what])
            self.watched[fd] = what

    def on_timer(self, ms: int) -> None:
        self.timer_ms = ms

    def action(self, fd: int, bits: int) -> int:
        if self.samples is None:
            running = self.multi.socket_action(fd, bits)
        else:
            start = time.perf_counter_ns()
            running = self.multi.socket_action(fd, bits)
            self.samples.append(time.perf_counter_ns() - start)
        while (message := self.multi.info_read()) is not None:
            if message.result != Code.OK and message.easy.url.endswith("/active"):
                raise RuntimeError(f"active transfer failed: {message.easy.error}")
            self.finished.add(message.easy)
        return running

    def pump(self, wait: float) -> None:
        """One round of the loop: ready sockets, then the timer if due (0 ms only)."""
        for key, events in self.selector.select(wait):
            if key.fd in self.watched:
                bits = (CSELECT_IN if events & selectors.EVENT_READ else 0) | (
                    CSELECT_OUT if events & selectors.EVENT_WRITE else 0
                )
                self.action(key.fd, bits)
        if self.timer_ms == 0:
            self.timer_ms = -1
            self.action(SOCKET_TIMEOUT, 0)

    def waiting_for_answers(self) -> int:
        return sum(1 for what in self.watched.values() if what == POLL_IN)


def add_idle(app: App, url: str, count: int) -> None:
    """Add `count` transfers that connect, send their request and then wait forever."""
    target = app.waiting_for_answers() + count
    for _ in range(count):
        app.multi.add_handle(Easy(url))
    app.action(SOCKET_TIMEOUT, 0)
    deadline = time.monotonic() + 120
    while app.waiting_for_answers() < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {app.waiting_for_answers()} of {target} idle transfers")
        app.pump(0.1)


def one_transfer(app: App, url: str) -> None:
    easy = Easy(url, write_function=lambda data: None)
    app.multi.add_handle(easy)
    app.action(SOCKET_TIMEOUT, 0)  # the kick add_handle asked for (timer 0)
    app.timer_ms = -1
    while easy not in app.finished:
        app.pump(1.0)
    app.finished.discard(easy)
    app.multi.remove_handle(easy)


def measure(app: App, url: str, transfers: int) -> list[int]:
    for _ in range(20):  # warm up: the keep-alive connection is in the pool
        one_transfer(app, url)
    gc.collect()
    app.samples = []
    for _ in range(transfers):
        one_transfer(app, url)
    samples, app.samples = app.samples, None
    return samples


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        sys.exit(f"RLIMIT_NOFILE {soft}/{hard} is below the {needed} descriptors needed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transfers", type=int, default=3000, help="measured transfers per row")
    parser.add_argument("--idle", default="10,100,1000,5000", help="idle counts, ascending")
    args = parser.parse_args()
    counts = [int(n) for n in args.idle.split(",")]
    raise_nofile(2 * max(counts) + 512)  # both ends of every idle connection, in two processes

    ours, theirs = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(target=serve, args=(theirs,), daemon=True)
    child.start()
    active_port, idle_port = ours.recv()
    active_url = f"http://127.0.0.1:{active_port}/active"
    idle_url = f"http://127.0.0.1:{idle_port}/idle"

    app = App()
    rows = []
    started = time.monotonic()
    try:
        for count in counts:
            add_idle(app, idle_url, count - app.waiting_for_answers())
            samples = measure(app, active_url, args.transfers)
            mean, median = statistics.fmean(samples) / 1000, statistics.median(samples) / 1000
            rows.append((count, mean, median, len(samples) / args.transfers))
            print(f"  {count:>5} idle: {rows[-1][1]:7.1f} µs", file=sys.stderr, flush=True)
    finally:
        app.multi.close()
        ours.send("stop")
        child.join(10)

    base, base_median = rows[0][1], rows[0][2]
    print(f"\nsocket_action on one active keep-alive connection, {args.transfers} transfers a row")
    print(f"(Python {sys.version.split()[0]}, {time.monotonic() - started:.0f} s in all)\n")
    print(
        f"| idle transfers | mean µs per socket_action | ratio to {rows[0][0]} "
        "| median µs | median ratio | calls/transfer |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for count, mean, median, per_transfer in rows:
        print(
            f"| {count:,} | {mean:.1f} | {mean / base:.2f}x | {median:.1f} "
            f"| {median / base_median:.2f}x | {per_transfer:.1f} |"
        )


if __name__ == "__main__":
    main()
