"""Connections lent to transfers: take a pooled one, open a slot for a new one, give back.

The Pool decides in pure code and returns victims; the lease does what the
decisions ask (close victims, ask a socket whether it still lives) and is
the only place a transfer gets or returns a connection. Every close goes
through `close_socket`, which announces POLL_REMOVE before the fd can be
reused. Idle connections are not watched (libcurl S5).

HTTP/2 seam: a connection that can carry several transfers at once would be
lent by `take` without leaving the lease (a table of shared connections by
origin, looked at before the idle cache) and given back by each of its
transfers; its fd would then be owned by the connection in the PollSet, not
by one transfer (see Multi._act_on_fd).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from hiperfifo.engine.connection import Connection, Origin
from hiperfifo.engine.pool import Pool


class Lease:
    """The multi's pool, lent to its transfers with the I/O the pool's decisions need."""

    __slots__ = ("_forget", "call", "clock", "max_idle", "pool")

    def __init__(
        self,
        pool: Pool,
        clock: Callable[[], float],
        forget: Callable[[int], None],
        max_idle: Callable[[], int],
    ) -> None:
        self.pool = pool
        self.clock = clock
        self._forget = forget  # POLL_REMOVE for an announced fd
        self.max_idle = max_idle
        self.call = 0  # which API call of the multi runs now (each one counts up)

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

    def open_slot(self, origin: Origin) -> bool:
        """Count a new connection to `origin` if the limits allow, evicting idle ones."""
        pool = self.pool
        if not pool.has_room(origin):
            for victim in pool.make_room(origin):
                self.close_socket(victim.sock)
            if not pool.has_room(origin):
                return False
        pool.reserve(origin)
        return True

    def cancel_slot(self, origin: Origin) -> None:
        """A slot from open_slot() that never got its connection."""
        self.pool.release(origin)

    def could_serve(self, origin: Origin) -> bool:
        """Would a transfer to `origin` get a connection or a slot now?"""
        return self.pool.could_serve(origin)

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
