"""A new connection being opened for one transfer (curl's connect filters).

From a pool slot reserved by the lease to a Connection ready for its first
request, in phases: the lookup (handed to the resolver), the connect
attempts (the Dialer's happy eyeballs, cf-ip-happy.c), the CONNECT tunnel
through an HTTP proxy (tunnel.py, cf-h1-proxy.c) and TLS
(Connection.handshake, cf-ssl). The transfer shows each phase as its state
and calls `step()` when the socket is ready. The opening arms the
transfer's CONNECT and EYEBALLS deadlines, fills the connect timings of the
Easy, holds the slot until a connection exists and the connection until it
is handed over; `close()` gives back whatever was not. It maps connect
failures to libcurl's codes and texts.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable

from hiperfifo.engine.codes import POLL_IN, POLL_INOUT, POLL_OUT, Code, TransferError, caused
from hiperfifo.engine.connection import Connection, Origin
from hiperfifo.engine.deadlines import Due
from hiperfifo.engine.debug import Trace
from hiperfifo.engine.dialer import EYEBALLS_DELAY, Dialer
from hiperfifo.engine.handle import Handle
from hiperfifo.engine.resolver import Address, Resolver, numeric_addresses
from hiperfifo.engine.services import Services
from hiperfifo.engine.tls import ALPN_H2, ALPN_HTTP11, TlsSession, client_context
from hiperfifo.engine.tunnel import Tunnel
from hiperfifo.engine.url import Target


def may_speak_h2(easy: Handle, target: Target, proxy: Target | None) -> bool:
    """HTTP/2 is possible: ALPN h2 on https, or h2c by prior knowledge (direct only: a
    plain-http proxy takes HTTP/1.1 requests in absolute form)."""
    wanted = easy.http_version_wanted
    if wanted == "1.1":
        return False
    return target.scheme == "https" or (wanted == "2-prior-knowledge" and proxy is None)


class Phase(enum.IntEnum):
    """Where an opening is; the transfer's state of the same name shows it."""

    RESOLVING = enum.auto()
    CONNECTING = enum.auto()  # happy-eyeballs attempts running
    TUNNEL = enum.auto()  # CONNECT through an HTTP proxy
    TLS_HANDSHAKE = enum.auto()
    READY = enum.auto()  # `conn` can carry the first request


class Opening:
    """The phases of one new connection: lookup, dial, tunnel, TLS."""

    __slots__ = (
        "_deadlines",
        "_dialer",
        "_lease",
        "_owner",
        "_pipewait",
        "_slot_held",
        "_start",
        "_trace",
        "_tunnel",
        "conn",
        "easy",
        "h2",
        "origin",
        "phase",
        "proxy",
        "target",
    )

    def __init__(
        self,
        owner: Hashable,
        svc: Services,
        trace: Trace | None,
        start: float,
        easy: Handle,
        target: Target,
        proxy: Target | None,
        origin: Origin,
    ) -> None:
        """Start with a slot already reserved (Lease.open_slot): arm the connect deadline."""
        self._owner = owner  # the transfer: deadline owner and resolver token
        self._trace = trace  # the transfer's debug calls (None: none), for CONNECT
        self._lease = lease = svc.lease
        self._deadlines = deadlines = svc.deadlines
        self._start = start  # the transfer's, for the Easy's timings
        self._dialer: Dialer | None = None
        self._tunnel: Tunnel | None = None
        self._slot_held = True
        self.conn: Connection | None = None
        self.easy = easy
        self.target = target
        self.proxy = proxy
        self.origin = origin
        self.phase = Phase.RESOLVING
        self.h2 = may_speak_h2(easy, target, proxy)
        self._pipewait = self.h2 and lease.multiplex  # others to `origin` wait for it
        if self._pipewait:
            lease.opening(origin, True)
        deadline = lease.clock() + easy.connect_timeout_ms / 1000
        deadlines.set(owner, Due.CONNECT, deadline)

    def __repr__(self) -> str:
        return f"<Opening {self.origin[0]}://{self.origin[1]}:{self.origin[2]} {self.phase.name}>"

    @property
    def dial_target(self) -> Target:
        """Where the socket goes: the proxy if there is one, else the target."""
        return self.proxy or self.target

    def begin(self) -> bool:
        """Dial a literal address at once (True); else the host needs a lookup (False)."""
        dial = self.dial_target
        addresses = numeric_addresses(dial.host, dial.port)
        if addresses is None:
            return False
        self.dial(addresses)
        return True

    def resolve(self, resolver: Resolver) -> None:
        """Hand the host to the resolver; the answer comes back with the owner as token."""
        dial = self.dial_target
        try:
            resolver.submit(self._owner, dial.host, dial.port)
        except (OSError, RuntimeError) as exc:  # no fd for the wake-up socket, no thread
            text = f"Could not start resolving {dial.host}: {exc}"
            raise caused(TransferError(self.lookup_error(), text), exc)

    def lookup_error(self) -> Code:
        return Code.COULDNT_RESOLVE_PROXY if self.proxy else Code.COULDNT_RESOLVE_HOST

    def dial(self, addresses: list[Address]) -> None:
        """Start the connect attempts (happy eyeballs)."""
        self.easy.namelookup_time = self._elapsed()
        policy = self.easy.network_policy
        refusal = policy.refusal if policy is not None else None
        lease = self._lease
        self._dialer = Dialer(addresses, lease.close_socket, lease.clock, refusal)
        self.phase = Phase.CONNECTING

    def next_attempt(self) -> None:
        """The eyeballs deadline: start the next address's attempt."""
        if self._dialer is not None:
            self._dialer.start_next()

    def wanted(self) -> dict[int, int]:
        """fd -> POLL_* the current phase waits for."""
        conn = self.conn
        if self.phase is Phase.CONNECTING and self._dialer is not None:
            return dict.fromkeys(self._dialer.fds(), POLL_OUT)
        if conn is None:
            return {}
        if self.phase is Phase.TUNNEL:
            return {conn.fd: POLL_OUT if conn.outbuf else POLL_IN}
        if self.phase is Phase.TLS_HANDSHAKE:
            return {conn.fd: POLL_INOUT if conn.outbuf else POLL_IN}
        return {}

    def step(self, view: memoryview) -> bool:
        """Advance the current phase as far as the sockets allow; True when the phase changed."""
        phase = self.phase
        if phase is Phase.CONNECTING:
            return self._dialed()
        conn = self.conn
        assert conn is not None
        if phase is Phase.TUNNEL:
            if self._tunnel is None:
                self._tunnel = Tunnel(conn, self.target, self.proxy, self._trace)
            if not self._tunnel.advance(conn, view):
                return False
            self._tunnel = None
            self._start_tls(conn)
            return True
        if phase is Phase.TLS_HANDSHAKE and conn.handshake(view):
            self.easy.appconnect_time = self._elapsed()
            self.phase = Phase.READY
            return True
        return False

    def take(self) -> Connection:
        """The ready connection, handed over to the transfer (it holds the slot now)."""
        conn = self.conn
        assert conn is not None
        self.conn = None
        self._end_pipewait()
        return conn

    def speaks_h2(self, conn: Connection) -> bool:
        """Did the ready connection turn out to speak HTTP/2 (ALPN h2, or prior knowledge)?"""
        if not self.h2:
            return False
        if conn.tls is not None:
            return conn.tls.alpn() == "h2"
        return True

    def _end_pipewait(self) -> None:
        if self._pipewait:
            self._pipewait = False
            self._lease.opening(self.origin, False)

    def close(self) -> None:
        """Give up: close the attempts and the connection, give back an unused slot."""
        self._end_pipewait()
        if self._dialer is not None:
            self._dialer.close()
            self._dialer = None
        if self.conn is not None:
            self._lease.drop(self.conn)
            self.conn = None
        if self._slot_held:
            self._slot_held = False
            self._lease.cancel_slot(self.origin)

    def _dialed(self) -> bool:
        dialer = self._dialer
        assert dialer is not None
        sock = dialer.check()
        if sock is None:
            if dialer.exhausted:
                self._fail(dialer.error)
            if dialer.more_waiting and not self._deadlines.is_set(self._owner, Due.EYEBALLS):
                when = dialer.last_start + EYEBALLS_DELAY
                self._deadlines.set(self._owner, Due.EYEBALLS, when)
            return False
        self._dialer = None
        self._deadlines.clear(self._owner, Due.EYEBALLS)
        conn = self.conn = Connection(self.origin, sock, self._lease.clock())
        self._slot_held = False  # the connection holds the slot now
        self.easy.num_connects += 1
        self.easy.connect_time = self._elapsed()
        if self.target.scheme != "https":
            self.phase = Phase.READY
        elif self.proxy is not None:
            self.phase = Phase.TUNNEL
        else:
            self._start_tls(conn)
        return True

    def _start_tls(self, conn: Connection) -> None:
        alpn = ALPN_H2 if self.h2 else ALPN_HTTP11
        context = client_context(self.easy.verify, self.easy.ca_file, alpn)
        conn.tls = TlsSession(context, self.target.host)
        self.phase = Phase.TLS_HANDSHAKE

    def _fail(self, reason: str) -> None:
        dial = self.dial_target
        what = "proxy " if self.proxy else ""
        raise TransferError(
            Code.COULDNT_CONNECT,
            f"Failed to connect to {what}{dial.host} port {dial.port} after "
            f"{int(self._elapsed() * 1000)} ms: {reason or 'Could not connect to server'}",
        )

    def _elapsed(self) -> float:
        return self._lease.clock() - self._start
