"""The keep-alive cache and the connection limits; decides in pure code.

Counts live connections (connecting, busy and idle) in total and per
host:port, keeps idle ones per origin, and returns the connections to
close (victims) instead of closing them: the multi announces POLL_REMOVE
before it closes anything. No I/O here.
"""

from __future__ import annotations

from collections import Counter

from hiperfifo.engine.connection import Connection, Origin

HostKey = tuple[str, int]


def host_key(origin: Origin) -> HostKey:
    return origin[1], origin[2]


class Pool:
    """Idle connections by origin, plus the counts the limits are checked against."""

    def __init__(self, max_total: int = 0, max_host: int = 0, max_age: float = 118.0) -> None:
        self.max_total = max_total
        self.max_host = max_host
        self.max_age = max_age  # seconds an idle connection is kept (CURLOPT_MAXAGE_CONN)
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_order: dict[Connection, None] = {}  # oldest idle first
        self._live = 0
        self._per_host: Counter[HostKey] = Counter()
        self._per_origin: Counter[Origin] = Counter()

    def __repr__(self) -> str:
        return f"<Pool live={self._live} idle={len(self._idle_order)}>"

    @property
    def idle(self) -> int:
        """Idle connections in the cache."""
        return len(self._idle_order)

    @property
    def live(self) -> int:
        return self._live

    def take_idle(self, origin: Origin) -> Connection | None:
        """The most recently used idle connection to `origin`, now out of the cache."""
        conns = self._idle.get(origin)
        if not conns:
            return None
        conn = conns.pop()
        if not conns:
            del self._idle[origin]
        del self._idle_order[conn]
        return conn

    def newest_idle(self, origin: Origin) -> Connection | None:
        """The idle connection to `origin` take_idle() would return, left in the cache."""
        conns = self._idle.get(origin)
        return conns[-1] if conns else None

    def has_idle(self, origin: Origin) -> bool:
        return origin in self._idle

    def busy_to(self, origin: Origin) -> int:
        """Connections to `origin` open and not idle (connecting or carrying a request)."""
        return self._per_origin[origin] - len(self._idle.get(origin, ()))

    def has_room(self, origin: Origin) -> bool:
        """Would a new connection to `origin` stay within the limits?"""
        if self.max_total and self._live >= self.max_total:
            return False
        return not (self.max_host and self._per_host[host_key(origin)] >= self.max_host)

    def host_full(self, origin: Origin) -> bool:
        """Is `origin`'s host:port at max_host_connections?"""
        return bool(self.max_host and self._per_host[host_key(origin)] >= self.max_host)

    def could_serve(self, origin: Origin) -> bool:
        """Could a transfer to `origin` get a connection now (idle, new, or by evicting)?"""
        if self._idle.get(origin) or self.has_room(origin):
            return True
        key = host_key(origin)
        if self.max_host and self._per_host[key] >= self.max_host:
            return any(host_key(other) == key for other in self._idle)
        return bool(self._idle_order)

    def make_room(self, origin: Origin) -> list[Connection]:
        """Idle connections to give up so that a new one to `origin` fits; may be too few."""
        victims: list[Connection] = []
        key = host_key(origin)
        if self.max_host and self._per_host[key] >= self.max_host:
            for conn in list(self._idle_order):
                if self._per_host[key] < self.max_host:
                    break
                if host_key(conn.origin) == key:
                    victims.append(self._evict(conn))
        while self.max_total and self._live >= self.max_total and self._idle_order:
            victims.append(self._evict(next(iter(self._idle_order))))
        return victims

    def reserve(self, origin: Origin) -> None:
        """Count a connection that is about to be opened."""
        self._live += 1
        self._per_host[host_key(origin)] += 1
        self._per_origin[origin] += 1

    def release(self, origin: Origin) -> None:
        """Forget a counted connection that was closed or never opened."""
        self._live -= 1
        key = host_key(origin)
        self._per_host[key] -= 1
        if self._per_host[key] <= 0:
            del self._per_host[key]
        self._per_origin[origin] -= 1
        if self._per_origin[origin] <= 0:
            del self._per_origin[origin]

    def put_idle(self, conn: Connection, max_idle: int) -> list[Connection]:
        """Keep `conn` for reuse; returns the oldest idle ones beyond `max_idle` to close."""
        conns = self._idle.get(conn.origin)
        if conns is None:  # (not setdefault: no list made per call)
            self._idle[conn.origin] = [conn]
        else:
            conns.append(conn)
        self._idle_order[conn] = None
        victims: list[Connection] = []
        while len(self._idle_order) > max_idle:
            victims.append(self._evict(next(iter(self._idle_order))))
        return victims

    def prune(self, now: float) -> list[Connection]:
        """Idle connections unused for longer than max_age, oldest first, out of the cache."""
        victims: list[Connection] = []
        horizon = now - self.max_age
        while self._idle_order:
            oldest = next(iter(self._idle_order))
            if oldest.last_used >= horizon:
                break
            victims.append(self._evict(oldest))
        return victims

    def drain_idle(self) -> list[Connection]:
        """Every idle connection, out of the cache (for close())."""
        return [self._evict(conn) for conn in list(self._idle_order)]

    def _evict(self, conn: Connection) -> Connection:
        del self._idle_order[conn]
        conns = self._idle[conn.origin]
        conns.remove(conn)
        if not conns:
            del self._idle[conn.origin]
        self.release(conn.origin)
        return conn
