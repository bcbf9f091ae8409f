"""Connections lent to transfers: take a pooled one, open a slot for a new one, give back.

The Pool decides in pure code and returns victims; the lease does what the
decisions ask (close victims, ask a socket whether it still lives) and is
the only place a transfer gets or returns a connection. Every close goes
through `close_socket`, which announces POLL_REMOVE before the fd can be
reused. Idle connections are not watched (libcurl S5).

HTTP/2: a connection that carries several transfers at once (shared.py) is
lent stream by stream by `take_stream` without leaving the lease (a table of
shared connections by origin); its fd is owned by the Shared in the PollSet,
not by one transfer. It counts as one connection against the limits, idle
or busy. While a new connection that may turn out to speak HTTP/2 is still
in its handshake, `pipewait` says so: transfers to that origin wait for it
instead of opening connections of their own (libcurl's CURLOPT_PIPEWAIT).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable

from hiperfifo.engine.connection import Connection, Origin
from hiperfifo.engine.pool import Pool
from hiperfifo.engine.shared import Shared


class Lease:
    """The multi's pool, lent to its transfers with the I/O the pool's decisions need."""

    __slots__ = (
        "_forget",
        "_idle_shared",
        "_opening",
        "_shared",
        "call",
        "clock",
        "max_idle",
        "max_streams",
        "may_evict",
        "multiplex",
        "owed_release",
        "pool",
        "queued",
        "view",
    )

    def __init__(
        self,
        pool: Pool,
        clock: Callable[[], float],
        forget: Callable[[int], None],
        max_idle: Callable[[], int],
        *,
        multiplex: bool = True,
        max_streams: int = 100,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self._forget = forget  # POLL_REMOVE for an announced fd
        self.max_idle = max_idle
        # Does evicting an idle connection of another origin pay for one to this origin?
        # (the runner's pending queue says; reuse before churn)
        self.may_evict: Callable[[Origin], bool] = _always
        self.queued: Callable[[Origin], bool] = _never  # transfers to it wait in the queue?
        self.owed_release = False  # one went behind its origin's queue and had a way on
        self.call = 0  # which API call of the multi runs now (each one counts up)
        self.multiplex = multiplex  # CURLMOPT_PIPELINING: several streams on one connection
        self.max_streams = max_streams  # CURLMOPT_MAX_CONCURRENT_STREAMS
        self._shared: dict[Origin, list[Shared]] = {}
        self._idle_shared: dict[Shared, None] = {}  # those without a stream, oldest first
        self._opening: Counter[Origin] = Counter()  # new connections that may speak h2
        self.view = memoryview(bytearray(64 * 1024))  # for reading what idle ones received

    def close_socket(self, sock: socket.socket) -> None:
        """Announce POLL_REMOVE (if the fd was announced), then close: never the other way."""
        fd = sock.fileno()
        if fd >= 0:
            self._forget(fd)
        sock.close()

    def take(self, origin: Origin) -> Connection | None:
        """A live idle connection to `origin`, out of the cache; dead ones are closed."""
        pool = self.pool
        for victim in pool.prune(self.clock()):
            self.close_socket(victim.sock)
        while (conn := pool.take_idle(origin)) is not None:
            # Released within this very call, right after its response ended cleanly: no
            # need to ask the socket again (a server that closed it anyway gets a retry).
            if conn.released_in == self.call or conn.is_alive():
                return conn
            self.close_socket(conn.sock)
            pool.release(conn.origin)
        return None

    def released(self, origin: Origin) -> bool:
        """Is a connection to `origin` given back within this very API call in the cache (the
        newest: pool.take_idle's; for a queued transfer of its origin, handed over without a
        liveness check: the server cannot have said more since)?"""
        conn = self.pool.newest_idle(origin)
        return conn is not None and conn.released_in == self.call

    def open_slot(self, origin: Origin, chosen: bool = False) -> bool:
        """Count a new connection to `origin` if the limits allow, evicting idle ones if that
        pays (may_evict) or the pending queue `chosen` this transfer for the slot."""
        pool = self.pool
        if not pool.has_room(origin):
            if not chosen and not self.may_evict(origin):
                return False
            for victim in pool.make_room(origin):
                self.close_socket(victim.sock)
            while not pool.has_room(origin):
                if not self._evict_idle_shared(origin):
                    return False
        pool.reserve(origin)
        return True

    def cancel_slot(self, origin: Origin) -> None:
        """A slot from open_slot() that never got its connection."""
        self.pool.release(origin)

    def could_serve(self, origin: Origin, h2: bool = False) -> bool:
        """Would a transfer to `origin` get a connection, a stream or a slot now?"""
        if h2:
            for shared in self._shared.get(origin, ()):  # (no generator: asked per queued one)
                if shared.free_slots > 0:
                    return True
            if self.pipewait(origin):
                return False
        if self.pool.could_serve(origin):
            return True
        return bool(self._idle_shared) and bool(self._idle_shared_for(origin))

    def serves_directly(self, origin: Origin) -> bool:
        """Would a transfer to `origin` go on now without closing another connection (one of
        its own idle or with a free stream, or room under the limits)?"""
        pool = self.pool
        if pool.has_idle(origin) or pool.has_room(origin):
            return True
        return any(s.free_slots > 0 for s in self._shared.get(origin, ()))

    def connections(self) -> int:
        """Connections open (connecting, busy or idle; a shared one counts once)."""
        return self.pool.live

    def busy_to(self, origin: Origin) -> int:
        """Connections to `origin` that will free up: connecting, or carrying a request or
        streams (idle ones, HTTP/1.1 or HTTP/2, are not counted)."""
        idle_shared = sum(s in self._idle_shared for s in self._shared.get(origin, ()))
        return self.pool.busy_to(origin) - idle_shared

    # --- HTTP/2: shared connections -----------------------------------------------------

    def choose(
        self, origin: Origin, h2: bool, fresh_only: bool, left_queue: bool = False
    ) -> tuple[bool, Connection | Shared | None]:
        """What a transfer to `origin` goes on with: (True, a stream's shared connection or a
        pooled connection), (True, None): a slot reserved for a new one, (False, None): wait
        (limits, or a connection that may speak HTTP/2 is in its handshake: PIPEWAIT, or
        transfers to `origin` queued before it: it goes behind them, and if it had a way
        on, owed_release says the oldest of them should take it)."""
        if not left_queue and self.queued(origin):
            pool = self.pool
            if pool.idle or self._shared or pool.has_room(origin):  # else: no way on anyway
                self.owed_release = self.serves_directly(origin) or (
                    self.could_serve(origin, h2) and self.may_evict(origin)
                )
            return False, None
        if not fresh_only:
            shared = self.take_stream(origin) if h2 else None
            if shared is not None:
                return True, shared
            conn = self.take(origin)
            if conn is not None:
                return True, conn
            if h2 and self.pipewait(origin):
                return False, None
        return self.open_slot(origin, left_queue), None

    def take_stream(self, origin: Origin) -> Shared | None:
        """A shared connection to `origin` with room for one more stream, or None."""
        shared_list = self._shared.get(origin)
        if not shared_list:
            return None
        now = self.clock()
        for shared in list(shared_list):
            if shared.streams == 0 and not shared.finished:
                if now - shared.idle_since > self.pool.max_age:
                    self.drop_shared(shared)
                    continue
                shared.revive(self.view, now)  # SETTINGS, PING or GOAWAY sent while idle
            if shared.finished:
                self.drop_shared(shared)
            elif shared.free_slots > 0:
                self._idle_shared.pop(shared, None)
                return shared
        return None

    def shared_idle(self, shared: Shared) -> None:
        """`shared` has no stream left: kept for reuse within max_connects and max_idle_age,
        counted with the idle HTTP/1.1 connections; the oldest beyond are closed."""
        idle = self._idle_shared
        idle[shared] = None
        limit = max(self.max_idle() - self.pool.idle, 0)
        horizon = self.clock() - self.pool.max_age
        while idle:
            oldest = next(iter(idle))
            if len(idle) <= limit and oldest.idle_since >= horizon:
                break
            self.drop_shared(oldest)

    def pipewait(self, origin: Origin) -> bool:
        """Is a connection to `origin` being opened that may carry our stream too?"""
        return self.multiplex and self._opening[origin] > 0

    def opening(self, origin: Origin, started: bool) -> None:
        """A new connection that may speak HTTP/2 started (True) or stopped being opened."""
        if started:
            self._opening[origin] += 1
        else:
            self._opening[origin] -= 1
            if self._opening[origin] <= 0:
                del self._opening[origin]

    def share(self, conn: Connection) -> Shared:
        """`conn` speaks HTTP/2: from now on it carries streams, counted as one connection."""
        limit = self.max_streams if self.multiplex else 1
        shared = Shared(conn, limit, self.clock())
        self._shared.setdefault(conn.origin, []).append(shared)
        return shared

    def drop_shared(self, shared: Shared) -> None:
        """Close a shared connection (POLL_REMOVE first) and stop counting it."""
        shared_list = self._shared.get(shared.origin)
        if shared_list is None or shared not in shared_list:
            return
        shared_list.remove(shared)
        if not shared_list:
            del self._shared[shared.origin]
        self._idle_shared.pop(shared, None)
        shared.close()
        self.drop(shared.conn)

    def drain_shared(self) -> list[Shared]:
        """Every shared connection, out of the table (for Multi.close)."""
        out = [s for shared_list in self._shared.values() for s in shared_list]
        self._shared.clear()
        self._idle_shared.clear()
        return out

    def _evict_idle_shared(self, origin: Origin) -> bool:
        """Close the idle shared connection unused the longest (to make room); True if one was."""
        idle = self._idle_shared_for(origin)
        if not idle:
            return False
        self.drop_shared(idle[0])
        return True

    def _idle_shared_for(self, origin: Origin) -> list[Shared]:
        """Idle shared connections (oldest first) whose closing would make room for one
        to `origin`."""
        idle = list(self._idle_shared)
        if self.pool.host_full(origin):
            idle = [s for s in idle if s.origin[1:3] == origin[1:3]]
        return idle

    def let_go(self, conn: Connection, keep: bool) -> None:
        """A transfer is done with `conn`: give_back (keep) or drop."""
        if keep:
            self.give_back(conn)
        else:
            self.drop(conn)

    def give_back(self, conn: Connection) -> None:
        """Back to the idle cache if it can serve another request, else closed."""
        if not conn.is_reusable():
            self.drop(conn)
            return
        conn.http.next_cycle()
        conn.last_used = self.clock()
        conn.released_in = self.call
        self._forget(conn.fd)  # idle connections are not watched (libcurl S5)
        for victim in self.pool.put_idle(conn, self.max_idle()):
            self.close_socket(victim.sock)

    def drop(self, conn: Connection) -> None:
        """Close `conn` and stop counting it."""
        self.close_socket(conn.sock)
        self.pool.release(conn.origin)


def _always(_origin: Origin) -> bool:
    return True


def _never(_origin: Origin) -> bool:
    return False
