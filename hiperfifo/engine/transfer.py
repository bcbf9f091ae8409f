"""One transfer's state machine: connect → (resolve → dial → tunnel → TLS) → send → receive.

Each state has one `_step_<state>()`; every change of state goes through
`_set_state()`. A step returns True when the machine should run again at
once, False when it waits for a socket, a lookup or a deadline. The transfer
never waits and never announces sockets itself: `wanted()` says what it
waits for and the multi turns that into socket callbacks. The steps are thin:
request.py decides where a request goes and what it says, lease.py lends
pooled connections, opening.py opens a new one (lookup, happy eyeballs,
CONNECT tunnel, TLS), exchange.py sends the request and reads the response
that response.py delivers, limits.py judges the low-speed limit. A failure
anywhere is a TransferError, caught once in `run()`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

from hiperfifo.engine.codes import Code, TransferError
from hiperfifo.engine.connection import Connection, Origin
from hiperfifo.engine.deadlines import Due
from hiperfifo.engine.debug import Trace
from hiperfifo.engine.easy import Easy, InfoType
from hiperfifo.engine.exchange import Exchange, Stale
from hiperfifo.engine.http2_events import Event
from hiperfifo.engine.limits import SpeedCheck, connect_timeout_text, total_timeout_text
from hiperfifo.engine.opening import Opening, Phase, may_speak_h2
from hiperfifo.engine.request import aim, follow, request_parts
from hiperfifo.engine.resolver import Resolved
from hiperfifo.engine.response import Response
from hiperfifo.engine.services import Services
from hiperfifo.engine.shared import Shared
from hiperfifo.engine.stream import Outcome, StreamSide
from hiperfifo.engine.url import Target

ALL_DUE: Final = tuple(Due)
_CONNECTED_DUE: Final = (Due.CONNECT, Due.EYEBALLS)
_OK: Final = Code.OK  # (compiled: a C static; Code is an interpreted enum, its read costs)


class TransferState(enum.IntEnum):
    """An IntEnum so that the per-step table lookup hashes in C (Enum hashes in Python)."""

    INIT = enum.auto()
    CONNECT = enum.auto()  # find a pooled connection or a slot for a new one
    PENDING = enum.auto()  # waiting for a slot (connection limits)
    RESOLVING = enum.auto()
    CONNECTING = enum.auto()  # happy-eyeballs attempts running
    TUNNEL = enum.auto()  # CONNECT through an HTTP proxy
    TLS_HANDSHAKE = enum.auto()
    SENDING = enum.auto()
    RECEIVING = enum.auto()
    STREAMING = enum.auto()  # HTTP/2: the shared connection hands us what arrives
    DONE = enum.auto()


class Transfer:
    """Runs one Easy to completion; the result lands in the Easy."""

    __slots__ = (
        "_exchange",
        "_first_origin",
        "_fresh_only",
        "_opening",
        "_response",
        "_side",
        "_speed",
        "_start",
        "_trace",
        "body",
        "conn",
        "easy",
        "handle",
        "headers",
        "left_queue",
        "link",
        "method",
        "origin",
        "progressed",
        "proxy",
        "state",
        "svc",
        "target",
    )

    def __init__(self, easy: Easy, services: Services) -> None:
        self.easy = easy  # the application's; the engine reads and writes its Handle
        handle = self.handle = easy.info
        handle.reset_info()
        self.svc = services
        self.state = TransferState.INIT
        self._trace: Trace | None = None  # made when debug_function is first called
        self.target: Target | None = None
        self.origin: Origin = ("", "", 0, "")
        self.proxy: Target | None = None
        self.conn: Connection | None = None
        self.method, self.body, self.headers = handle.method.upper(), handle.body, handle.headers
        self._start = 0.0
        self._opening: Opening | None = None  # a new connection being opened
        self._exchange: Exchange | None = None  # the request on self.conn
        self._response: Response | None = None
        self._fresh_only = False  # the request is sent again: not on a pooled connection
        self._speed: SpeedCheck | None = None
        self._first_origin: tuple[str, str, int] = ("", "", 0)
        self._side: StreamSide | None = None  # HTTP/2: our stream and its retries, once one runs
        self.link: Shared | None = None  # a shared connection we touched, for the runner
        self.progressed = False  # left CONNECT with room left for the next one waiting
        self.left_queue = False  # resumed from PENDING (the runner): not queued again

    def __repr__(self) -> str:
        return f"<Transfer {self.handle.url!r} {self.state.name}>"

    @property
    def done(self) -> bool:
        return self.state is TransferState.DONE

    # --- driving -----------------------------------------------------------------

    def run(self) -> None:
        """Make all the progress possible without waiting."""
        try:
            while _step(self):
                pass
            if self._trace is not None and self._trace.error and not self.done:
                raise TransferError(Code.ABORTED_BY_CALLBACK, self._trace.error)
        except TransferError as exc:
            self._finish(exc.code, exc.text)

    def _set_state(self, state: TransferState) -> None:
        if self.handle.debug_function is not None:
            self._tracer()(InfoType.STATE, f"{self.state.name} -> {state.name}")
        self.state = state

    def _tracer(self) -> Trace:
        if self._trace is None:
            self._trace = Trace(self.handle, self.svc.guard)
        return self._trace

    def wanted(self) -> dict[int, int]:
        """fd -> POLL_* this transfer waits for now."""
        if self._opening is not None:
            return self._opening.wanted()
        if self._exchange is not None:
            return self._exchange.wanted()
        return {}

    def resume(self) -> None:
        """Leave PENDING: a slot may be free now."""
        if self.state is TransferState.PENDING:
            self._set_state(TransferState.CONNECT)

    def can_leave_pending(self) -> bool:
        """Would this pending transfer find a connection or a slot now?"""
        h2 = self.target is not None and may_speak_h2(self.handle, self.target, self.proxy)
        return self.svc.lease.could_serve(self.origin, h2)

    def abort(self) -> None:
        """Stop at once (remove_handle): close what is open, keep no result."""
        self._release_all(keep=False)
        self.state = TransferState.DONE

    # --- events from the multi -------------------------------------------------------

    def on_deadline(self, due: Due) -> None:
        try:
            _ON_DUE[due](self)
        except TransferError as exc:
            self._finish(exc.code, exc.text)

    def on_resolved(self, resolved: Resolved) -> None:
        opening = self._opening
        if self.state is not TransferState.RESOLVING or opening is None:
            return
        if not resolved.addresses:
            self._finish(opening.lookup_error(), resolved.error)
            return
        opening.dial(resolved.addresses)
        self._set_state(TransferState.CONNECTING)
        self.run()

    # --- the states --------------------------------------------------------------

    def _step_init(self) -> bool:
        easy = self.handle
        self._start = self.svc.clock()
        if easy.timeout_ms > 0:
            self.svc.deadlines.set(self, Due.TOTAL, self._start + easy.timeout_ms / 1000)
        self._setup(easy.url)
        assert self.target is not None
        self._first_origin = (self.target.scheme, self.target.host, self.target.port)
        return True

    def _setup(self, url: str) -> None:
        """Aim at `url` (the first one or a redirect's): target, proxy, pool key."""
        easy = self.handle
        self.target, self.proxy, self.origin = aim(easy, url)
        self._response = Response(easy, self.svc.guard, self.svc.clock, self._start)
        easy.effective_url = self.target.url  # normalised, as libcurl's
        self._set_state(TransferState.CONNECT)

    def _step_connect(self) -> bool:
        svc = self.svc
        assert self.target is not None
        h2 = may_speak_h2(self.handle, self.target, self.proxy)
        go, link = svc.lease.choose(self.origin, h2, self._fresh_only, self.left_queue)
        self.left_queue = False
        if not go:
            self._set_state(TransferState.PENDING)
            return False
        if link is not None:
            self.handle.namelookup_time = self.handle.connect_time = self._elapsed()
            self._ready(link)
            return True
        self.progressed = svc.lease.pool.has_room(self.origin)  # the next may open one too
        self._fresh_only = False
        trace = self._tracer() if self.handle.debug_function is not None else None
        opening = self._opening = Opening(
            self, svc, trace, self._start, self.handle, self.target, self.proxy, self.origin
        )
        if opening.begin():
            self._set_state(TransferState.CONNECTING)
            return True
        self._set_state(TransferState.RESOLVING)
        opening.resolve(svc.resolver)
        return False

    def _step_opening(self) -> bool:
        """CONNECTING, TUNNEL, TLS_HANDSHAKE: the phases of a new connection (opening.py)."""
        opening = self._opening
        assert opening is not None
        if not opening.step(self.svc.view):
            return False
        if opening.phase is Phase.READY:
            conn = opening.take()
            self._ready(self.svc.lease.share(conn) if opening.speaks_h2(conn) else conn)
            self.progressed = True  # those waiting for its protocol may go on
        else:
            self._set_state(_STATE_OF[opening.phase])
        return True

    def _ready(self, link: Connection | Shared) -> None:
        """Connected (and TLS done), a pooled connection, or a stream: send the request."""
        easy = self.handle
        target = self.target
        response = self._response
        assert target is not None
        assert response is not None
        self._opening = None
        self.svc.deadlines.clear_owner(self, _CONNECTED_DUE)
        speed = self._speed = SpeedCheck.of(easy, self._speed)
        if speed is not None:
            self.svc.deadlines.set(
                self, Due.SPEED, speed.mark(self.svc.clock(), easy.size_download)
            )
        first = self._first_origin
        parts = request_parts(easy, target, self.proxy, self.headers, self.body, first)
        trace = self._tracer() if easy.debug_function is not None else None
        if isinstance(link, Shared):  # HTTP/2: a stream; the connection owns the socket
            request = (self.method, target.scheme, target.target, *parts[1:])
            side = self._side = self._side or StreamSide()
            side.start(link, self, response, request, trace)
            self.link, self.progressed = link, link.free_slots > 0
            state = TransferState.STREAMING
        else:
            self.conn = link
            self._exchange = Exchange(link, response, easy, self.method, parts, trace)
            state = TransferState.SENDING
        easy.pretransfer_time = self._elapsed()
        self._set_state(state)

    def on_stream(self, event: Event) -> None:
        """What the shared connection received for our stream (never raises)."""
        try:
            outcome = self._side.settle(event) if self._side is not None else None
            if outcome is Outcome.ENDED:
                assert self._response is not None
                self._on_end(self._response)
            elif outcome is Outcome.AGAIN_FRESH:  # the reused connection died: a new one
                self._retry()
            elif outcome is Outcome.AGAIN:  # never processed by the server: anywhere
                self._set_state(TransferState.CONNECT)  # the runner runs us again
        except TransferError as exc:
            self._finish(exc.code, exc.text)

    def _step_sending(self) -> bool:
        assert self._exchange is not None
        try:
            if not self._exchange.send(self.svc.view):
                return False
        except Stale:
            return self._retry()
        self._set_state(TransferState.RECEIVING)
        return True

    def _step_receiving(self) -> bool:
        exchange = self._exchange
        assert exchange is not None
        try:
            if not exchange.receive(self.svc.view):
                return False
        except Stale:
            return self._retry()
        self._on_end(exchange.response)
        return self.state is not TransferState.DONE

    def _retry(self) -> bool:
        """Died on a pooled connection before any response byte: send it again on a fresh one
        (never stale: so once per request, each redirect hop its own; Curl_retry_request)."""
        self._let_go(keep=False)
        self._fresh_only = True
        self._set_state(TransferState.CONNECT)
        return True

    # --- the end of a response ---------------------------------------------------

    def _on_end(self, response: Response) -> None:
        location = response.redirect_location()
        if location is None:
            self._finish(_OK, "")
            return
        assert response.head is not None
        easy = self.handle
        hop = follow(easy, response.head.status, location, self.method, self.body, self.headers)
        self._let_go(keep=True)
        easy.redirect_count += 1
        easy.redirect_time = self._elapsed()
        self.method, self.body, self.headers = hop.method, hop.body, hop.headers
        self._setup(hop.url)

    def _elapsed(self) -> float:
        return self.svc.clock() - self._start

    def _finish(self, code: Code, text: str) -> None:
        if self.state is TransferState.DONE:
            return
        easy = self.handle
        easy.result, easy.error = code, text
        easy.total_time = self._elapsed()
        if not easy.starttransfer_time and code is _OK:
            easy.starttransfer_time = easy.total_time
        self._release_all(keep=code is _OK)
        self._set_state(TransferState.DONE)

    def _release_all(self, keep: bool) -> None:
        self.svc.deadlines.clear_owner(self, ALL_DUE)
        self.link = (self._side and self._side.cancel()) or self.link  # ended early: reset it
        if self._opening is not None:  # attempts, a connection not ready, or an unused slot
            self._opening.close()
            self._opening = None
        self._let_go(keep)

    def _let_go(self, keep: bool) -> None:
        """Our connection back to the pool (keep: if it can serve another request), or closed."""
        conn, self.conn, self._exchange = self.conn, None, None
        if conn is not None:
            self.svc.lease.let_go(conn, keep)


# The hot states, for _step (Final: compiled, C statics; interpreted, one global lookup)
_RECEIVING: Final = TransferState.RECEIVING
_SENDING: Final = TransferState.SENDING
_CONNECT: Final = TransferState.CONNECT
_INIT: Final = TransferState.INIT
_DONE: Final = TransferState.DONE


def _step(transfer: Transfer) -> bool:
    """The step of the state `transfer` is in (_STEPS, the hot states as native calls);
    True when the machine should run again at once."""
    state = transfer.state
    if state is _RECEIVING:
        return transfer._step_receiving()
    if state is _SENDING:
        return transfer._step_sending()
    if state is _CONNECT:
        return transfer._step_connect()
    if state is _INIT:
        return transfer._step_init()
    if state is _DONE:
        return False
    return _STEPS[state](transfer)


def _waits(_transfer: Transfer) -> bool:
    return False


def resume_on(transfer: Transfer, conn: Connection) -> None:
    """`transfer` leaves PENDING on the connection a finished transfer to its origin just gave
    back (the runner hands it over: no pool round trip, no liveness check)."""
    transfer.handle.namelookup_time = transfer.handle.connect_time = transfer._elapsed()
    transfer._ready(conn)


# What each deadline does when it expires (a TransferError ends the transfer).


def _on_eyeballs(transfer: Transfer) -> None:
    if transfer._opening is not None:
        transfer._opening.next_attempt()
    transfer.run()


def _on_connect_timeout(transfer: Transfer) -> None:
    raise TransferError(Code.OPERATION_TIMEDOUT, connect_timeout_text(transfer._elapsed()))


def _on_total_timeout(transfer: Transfer) -> None:
    text = total_timeout_text(transfer._elapsed(), transfer.handle.size_download)
    raise TransferError(Code.OPERATION_TIMEDOUT, text)


def _on_speed(transfer: Transfer) -> None:
    if transfer._speed is not None:
        end = transfer._speed.check(transfer.svc.clock(), transfer.handle.size_download)
        transfer.svc.deadlines.set(transfer, Due.SPEED, end)


# One step function per state, looked up once per step (no name building on the hot path).
_STEPS: dict[TransferState, Callable[[Transfer], bool]] = {
    TransferState.INIT: Transfer._step_init,
    TransferState.CONNECT: Transfer._step_connect,
    TransferState.PENDING: _waits,  # for a slot: the multi resumes it
    TransferState.RESOLVING: _waits,  # for the lookup: on_resolved() goes on
    TransferState.CONNECTING: Transfer._step_opening,
    TransferState.TUNNEL: Transfer._step_opening,
    TransferState.TLS_HANDSHAKE: Transfer._step_opening,
    TransferState.SENDING: Transfer._step_sending,
    TransferState.RECEIVING: Transfer._step_receiving,
    TransferState.STREAMING: _waits,  # for the shared connection: on_stream() goes on
}

# The transfer's state that shows an opening's phase (READY goes on to SENDING).
_STATE_OF = {
    Phase.CONNECTING: TransferState.CONNECTING,
    Phase.TUNNEL: TransferState.TUNNEL,
    Phase.TLS_HANDSHAKE: TransferState.TLS_HANDSHAKE,
}

_ON_DUE: dict[Due, Callable[[Transfer], None]] = {
    Due.RUN: Transfer.run,
    Due.CONNECT: _on_connect_timeout,
    Due.TOTAL: _on_total_timeout,
    Due.SPEED: _on_speed,
    Due.EYEBALLS: _on_eyeballs,
}
