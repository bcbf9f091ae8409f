"""One transfer's state machine: connect → (resolve → dial → tunnel → TLS) → send → receive.

Each state has one `_step_<state>()`; every change of state goes through
`_set_state()`. A step returns True when the machine should run again at
once, False when it waits for a socket, a lookup or a deadline. The transfer
never waits and never announces sockets itself: `wanted()` says what it
waits for and the multi turns that into socket callbacks. It closes sockets
only through `Services.close_socket`, which announces POLL_REMOVE first.
A failure anywhere is a TransferError, caught once in `run()`.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable

from hiperfifo.engine.codes import POLL_IN, POLL_INOUT, POLL_OUT, Code, TransferError
from hiperfifo.engine.connection import Connection, Origin
from hiperfifo.engine.deadlines import Deadlines
from hiperfifo.engine.decoding import accept_header
from hiperfifo.engine.dialer import EYEBALLS_DELAY, Dialer
from hiperfifo.engine.easy import Easy, InfoType
from hiperfifo.engine.guard import CallbackGuard
from hiperfifo.engine.http1 import Http1, ResponseHead
from hiperfifo.engine.pool import Pool
from hiperfifo.engine.proxy import bypasses, parse_proxy, proxy_from_environ
from hiperfifo.engine.resolver import Address, Resolved, Resolver, numeric_addresses
from hiperfifo.engine.response import Response
from hiperfifo.engine.tls import TlsSession, client_context
from hiperfifo.engine.url import Target, parse, redirect_target

READ_BUDGET = 1 << 20  # bytes read from one socket per run, so one fast peer cannot starve others
DEADLINE_NAMES = ("run", "connect", "total", "speed", "eyeballs")


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
    DONE = enum.auto()


class Services:
    """What the multi lends its transfers: clock, deadlines, pool, resolver, guard, buffer."""

    def __init__(
        self,
        clock: Callable[[], float],
        deadlines: Deadlines,
        pool: Pool,
        resolver: Resolver,
        guard: CallbackGuard,
        forget: Callable[[int], None],
        max_idle: Callable[[], int],
    ) -> None:
        self.clock = clock
        self.deadlines = deadlines
        self.pool = pool
        self.resolver = resolver
        self.guard = guard
        self.forget = forget
        self.max_idle = max_idle
        self.buffer = bytearray(256 * 1024)
        self.view = memoryview(self.buffer)
        self.call = 0  # which API call of the multi runs now (each one counts up)

    def close_socket(self, sock: socket.socket) -> None:
        """Announce POLL_REMOVE (if the fd was announced), then close: never the other way."""
        fd = sock.fileno()
        if fd >= 0:
            self.forget(fd)
        sock.close()


class Transfer:
    """Runs one Easy to completion; the result lands in the Easy."""

    __slots__ = (
        "_debug_error",
        "_dialer",
        "_first_origin",
        "_fresh_only",
        "_response",
        "_retried",
        "_slot_held",
        "_speed_mark",
        "_start",
        "_tunnel",
        "body",
        "conn",
        "easy",
        "headers",
        "method",
        "origin",
        "proxy",
        "state",
        "svc",
        "target",
    )

    def __init__(self, easy: Easy, services: Services) -> None:
        self.easy = easy
        self.svc = services
        self.state = TransferState.INIT
        self._debug_error = ""  # a debug_function that raised: the transfer ends with 42
        self.target: Target | None = None
        self.origin: Origin = ("", "", 0, "")
        self.proxy: Target | None = None
        self.conn: Connection | None = None
        self.method = easy.method.upper()
        self.body = easy.body
        self.headers = easy.headers
        self._start = 0.0
        self._dialer: Dialer | None = None
        self._tunnel: Http1 | None = None
        self._response: Response | None = None
        self._slot_held = False  # a pool slot reserved for a connection being opened
        self._retried = False
        self._fresh_only = False
        self._speed_mark = (0.0, 0)
        self._first_origin: tuple[str, str, int] = ("", "", 0)

    def __repr__(self) -> str:
        return f"<Transfer {self.easy.url!r} {self.state.name}>"

    @property
    def done(self) -> bool:
        return self.state is TransferState.DONE

    # --- driving -----------------------------------------------------------------

    def run(self) -> None:
        """Make all the progress possible without waiting."""
        try:
            while self.state is not TransferState.DONE and self._step():
                pass
            if self._debug_error and self.state is not TransferState.DONE:
                raise TransferError(Code.ABORTED_BY_CALLBACK, self._debug_error)
        except TransferError as exc:
            self._finish(exc.code, exc.text)

    def _step(self) -> bool:
        return _STEPS[self.state](self)

    def _set_state(self, state: TransferState) -> None:
        if self.easy.debug_function is not None:
            self._debug(InfoType.STATE, f"{self.state.name} -> {state.name}")
        self.state = state

    def _debug(self, kind: InfoType, text: str) -> None:
        """Call debug_function; one that raises is not called again, and the transfer ends
        with ABORTED_BY_CALLBACK when it next runs (never an exception out of the API)."""
        debug = self.easy.debug_function
        if debug is None or self._debug_error:
            return
        try:
            with self.svc.guard.calling():
                debug(kind, text)
        except Exception as exc:
            self._debug_error = f"debug callback raised: {exc!r}"

    def _send(self, conn: Connection, data: bytes) -> None:
        """Queue a request's bytes; its head goes to the debug function (curl's HEADER_OUT)."""
        conn.queue(data)
        if self.easy.debug_function is not None:
            end = data.find(b"\r\n\r\n")
            self._debug(
                InfoType.HEADER_OUT, data[: end + 4 if end >= 0 else None].decode("latin-1")
            )

    def wanted(self) -> dict[int, int]:
        """fd -> POLL_* this transfer waits for now."""
        state = self.state
        conn = self.conn
        if state is TransferState.CONNECTING and self._dialer is not None:
            return dict.fromkeys(self._dialer.fds(), POLL_OUT)
        if conn is None:
            return {}
        if state is TransferState.RECEIVING:
            return {conn.fd: POLL_IN}
        if state is TransferState.SENDING:
            return {conn.fd: POLL_OUT}
        if state is TransferState.TUNNEL:
            return {conn.fd: POLL_OUT if conn.outbuf else POLL_IN}
        if state is TransferState.TLS_HANDSHAKE:
            return {conn.fd: POLL_INOUT if conn.outbuf else POLL_IN}
        return {}

    def resume(self) -> None:
        """Leave PENDING: a slot may be free now."""
        if self.state is TransferState.PENDING:
            self._set_state(TransferState.CONNECT)

    def can_leave_pending(self) -> bool:
        """Would this pending transfer find a connection or a slot now?"""
        return self.svc.pool.could_serve(self.origin)

    def abort(self) -> None:
        """Stop at once (remove_handle): close what is open, keep no result."""
        self._release_all(keep=False)
        self.state = TransferState.DONE

    # --- events from the multi -------------------------------------------------------

    def on_deadline(self, name: str) -> None:
        if name == "run":
            self.run()
            return
        if name == "eyeballs" and self._dialer is not None:
            self._dialer.start_next()
        elif name in ("total", "connect"):
            self._finish(Code.OPERATION_TIMEDOUT, self._timeout_text(name))
            return
        elif name == "speed":
            self._check_speed(self.svc.clock())
            return
        self.run()

    def on_resolved(self, resolved: Resolved) -> None:
        if self.state is not TransferState.RESOLVING:
            return
        if not resolved.addresses:
            code = Code.COULDNT_RESOLVE_PROXY if self.proxy else Code.COULDNT_RESOLVE_HOST
            self._finish(code, resolved.error)
            return
        self._dial(resolved.addresses)
        self.run()

    # --- the states --------------------------------------------------------------

    def _step_init(self) -> bool:
        easy = self.easy
        self._start = self.svc.clock()
        if easy.timeout_ms > 0:
            self.svc.deadlines.set(self, "total", self._start + easy.timeout_ms / 1000)
        self._setup(easy.url)
        assert self.target is not None
        self._first_origin = (self.target.scheme, self.target.host, self.target.port)
        return True

    def _setup(self, url: str) -> None:
        """Aim at `url` (the first one or a redirect's): target, proxy, pool key."""
        easy = self.easy
        self.target = target = parse(url)
        tls_profile = f"{easy.verify}:{easy.ca_file}" if target.scheme == "https" else ""
        proxy_url, noproxy = easy.proxy, easy.noproxy
        if proxy_url is None and easy.proxy_env is not None:
            proxy_url, env_noproxy = proxy_from_environ(target.scheme, easy.proxy_env)
            noproxy = env_noproxy if noproxy is None else noproxy
        proxy = None
        if proxy_url and not bypasses(target.host, noproxy or ""):
            proxy = parse_proxy(proxy_url)
            self._check_proxied_target(target)
        self.proxy = proxy
        if proxy is None:
            self.origin = (target.scheme, target.host, target.port, tls_profile)
        elif target.scheme == "http":  # one connection to the proxy serves every http URL
            self.origin = ("http", proxy.host, proxy.port, "proxy")
        else:  # a tunnel is bound to its target
            via = f"{tls_profile}|via {proxy.host}:{proxy.port}"
            self.origin = (target.scheme, target.host, target.port, via)
        self._response = Response(easy, self.svc.guard, self.svc.clock, self._start)
        easy.effective_url = url
        self._set_state(TransferState.CONNECT)

    def _check_proxied_target(self, target: Target) -> None:
        """Through a proxy we never see the target's address: judge a literal one at least."""
        policy = self.easy.network_policy
        literal = numeric_addresses(target.host, target.port)
        if policy is None or literal is None:
            return
        for _family, sockaddr in literal:
            denied = policy.refusal(str(sockaddr[0]))
            if denied:
                raise TransferError(
                    Code.COULDNT_CONNECT, f"Failed to connect to {target.host}: {denied}"
                )

    def _step_connect(self) -> bool:
        pool = self.svc.pool
        if not self._fresh_only and self._reuse_pooled():
            return True
        if not pool.has_room(self.origin):
            for victim in pool.make_room(self.origin):
                self.svc.close_socket(victim.sock)
        if not pool.has_room(self.origin):
            self._set_state(TransferState.PENDING)
            return False
        pool.reserve(self.origin)
        self._slot_held = True
        self._fresh_only = False
        deadline = self.svc.clock() + self.easy.connect_timeout_ms / 1000
        self.svc.deadlines.set(self, "connect", deadline)
        dial = self.proxy or self.target
        assert dial is not None
        addresses = numeric_addresses(dial.host, dial.port)
        if addresses is not None:
            self._dial(addresses)
            return True
        self._set_state(TransferState.RESOLVING)
        try:
            self.svc.resolver.submit(self, dial.host, dial.port)
        except (OSError, RuntimeError) as exc:  # no fd for the wake-up socket, no thread
            code = Code.COULDNT_RESOLVE_PROXY if self.proxy else Code.COULDNT_RESOLVE_HOST
            raise TransferError(code, f"Could not start resolving {dial.host}: {exc}") from exc
        return False

    def _reuse_pooled(self) -> bool:
        pool = self.svc.pool
        for victim in pool.prune(self.svc.clock()):
            self.svc.close_socket(victim.sock)
        while (conn := pool.take_idle(self.origin)) is not None:
            # Released within this very call, right after its response ended cleanly: no
            # need to ask the socket again (a server that closed it anyway gets one retry).
            if conn.released_in == self.svc.call or conn.is_alive():
                self.conn = conn
                self.easy.namelookup_time = self.easy.connect_time = self._elapsed()
                self._ready()
                return True
            self.svc.close_socket(conn.sock)
            pool.release(conn.origin)
        return False

    def _step_pending(self) -> bool:
        return False

    def _step_resolving(self) -> bool:
        return False

    def _dial(self, addresses: list[Address]) -> None:
        self.easy.namelookup_time = self._elapsed()
        policy = self.easy.network_policy
        refusal = policy.refusal if policy is not None else None
        self._dialer = Dialer(addresses, self.svc.close_socket, self.svc.clock, refusal)
        self._set_state(TransferState.CONNECTING)

    def _step_connecting(self) -> bool:
        dialer = self._dialer
        assert dialer is not None
        sock = dialer.check()
        if sock is not None:
            self._connected(sock)
            return True
        if dialer.exhausted:
            self._fail_connect(dialer.error)
        if dialer.more_waiting and not self.svc.deadlines.is_set(self, "eyeballs"):
            self.svc.deadlines.set(self, "eyeballs", dialer.last_start + EYEBALLS_DELAY)
        return False

    def _fail_connect(self, reason: str) -> None:
        dial = self.proxy or self.target
        assert dial is not None
        what = "proxy " if self.proxy else ""
        elapsed_ms = int(self._elapsed() * 1000)
        raise TransferError(
            Code.COULDNT_CONNECT,
            f"Failed to connect to {what}{dial.host} port {dial.port} after {elapsed_ms} ms: "
            f"{reason or 'Could not connect to server'}",
        )

    def _connected(self, sock: socket.socket) -> None:
        self._dialer = None
        self.conn = Connection(self.origin, sock, self.svc.clock())
        self._slot_held = False  # the connection holds the slot now
        self.easy.num_connects += 1
        self.easy.connect_time = self._elapsed()
        self.svc.deadlines.clear(self, "eyeballs")
        assert self.target is not None
        if self.target.scheme == "https" and self.proxy is not None:
            self._set_state(TransferState.TUNNEL)
        elif self.target.scheme == "https":
            self._start_tls()
        else:
            self._ready()

    def _step_tunnel(self) -> bool:
        """CONNECT host:port through the proxy; a 2xx answer makes the socket a tunnel."""
        conn = self.conn
        target = self.target
        assert conn is not None
        assert target is not None
        if self._tunnel is None:
            self._tunnel = Http1()
            host = f"[{target.host}]" if ":" in target.host else target.host
            authority = f"{host}:{target.port}"
            headers = [("Host", authority), *self._proxy_auth()]
            self._send(conn, self._tunnel.request("CONNECT", authority, headers, None))
        try:
            data = conn.read(self.svc.view) if conn.flush() else None
        except OSError as exc:
            raise TransferError(Code.COULDNT_CONNECT, f"Proxy CONNECT failed: {exc}") from exc
        if data is None:
            return False
        try:
            events = self._tunnel.receive(data)
        except TransferError as exc:
            text = "Proxy CONNECT aborted" if not data else f"Proxy CONNECT failed: {exc.text}"
            raise TransferError(Code.RECV_ERROR, text) from exc
        for kind, head in events:
            if kind == "head":
                assert isinstance(head, ResponseHead)
                if self.easy.debug_function is not None:
                    self._debug(InfoType.HEADER_IN, b"".join(head.lines()).decode("latin-1"))
                if not 200 <= head.status < 300:
                    raise TransferError(
                        Code.RECV_ERROR, f"CONNECT tunnel failed, response {head.status}"
                    )
                self._tunnel = None
                self._start_tls()
        return True

    def _proxy_auth(self) -> list[tuple[str, str]]:
        proxy = self.proxy
        if proxy is None or proxy.authorization is None:
            return []
        return [("Proxy-Authorization", proxy.authorization)]

    def _start_tls(self) -> None:
        assert self.conn is not None
        assert self.target is not None
        context = client_context(self.easy.verify, self.easy.ca_file)
        self.conn.tls = TlsSession(context, self.target.host)
        self._set_state(TransferState.TLS_HANDSHAKE)

    def _step_tls_handshake(self) -> bool:
        conn = self.conn
        assert conn is not None
        assert conn.tls is not None
        try:
            while True:
                done = conn.tls.handshake()
                conn.queue_raw(conn.tls.take_outgoing())
                if not conn.flush():
                    return False
                if done:
                    self.easy.appconnect_time = self._elapsed()
                    self._ready()
                    return True
                n = conn.sock.recv_into(self.svc.view)
                if n == 0:
                    raise TransferError(
                        Code.SSL_CONNECT_ERROR, "Connection closed in the TLS handshake"
                    )
                conn.tls.feed(self.svc.view[:n])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise TransferError(Code.SSL_CONNECT_ERROR, f"TLS connect error: {exc}") from exc

    def _ready(self) -> None:
        """Connected (and TLS done), or a pooled connection taken: queue the request."""
        easy = self.easy
        conn = self.conn
        assert conn is not None
        self.svc.deadlines.clear_owner(self, ("connect", "eyeballs"))
        easy.primary_ip, easy.primary_port = conn.peer()
        easy.local_port = conn.local_port()
        easy.http_version = "1.1"
        if easy.low_speed_limit > 0 and easy.low_speed_time > 0:
            self._mark_speed(self.svc.clock())
        self._send(conn, conn.http.request(self.method, *self._request_parts()))
        easy.pretransfer_time = self._elapsed()
        self._set_state(TransferState.SENDING)

    def _request_parts(self) -> tuple[str, list[tuple[str, str]], bytes | None]:
        target = self.target
        assert target is not None
        given = {name.lower() for name, _value in self.headers}
        headers: list[tuple[str, str]] = []
        request_target = target.target
        if self.proxy is not None and target.scheme == "http":
            request_target = f"http://{target.host_header}{target.target}"
            headers.extend(self._proxy_auth())
        if "host" not in given:
            headers.append(("Host", target.host_header))
        if target.authorization and "authorization" not in given:
            headers.append(("Authorization", target.authorization))
        if "accept" not in given:
            headers.append(("Accept", "*/*"))
        if self.easy.accept_encoding is not None and "accept-encoding" not in given:
            headers.append(("Accept-Encoding", accept_header(self.easy.accept_encoding)))
        if (target.scheme, target.host, target.port) == self._first_origin:
            headers.extend(self.headers)
        else:  # credentials stay with the scheme, host and port they were given for (curl)
            private = ("authorization", "cookie")
            headers.extend((k, v) for k, v in self.headers if k.lower() not in private)
        body = self.body
        if body is not None and "content-length" not in given:
            headers.append(("Content-Length", str(len(body))))
        return request_target, headers, body

    def _step_sending(self) -> bool:
        conn = self.conn
        assert conn is not None
        try:
            if not conn.flush():
                return False
        except OSError as exc:
            return self._io_failed(Code.SEND_ERROR, f"Send failure: {exc.strerror or exc}")
        conn.requests += 1
        self._set_state(TransferState.RECEIVING)
        return True

    def _step_receiving(self) -> bool:
        conn = self.conn
        assert conn is not None
        budget = READ_BUDGET
        while budget > 0 and self.state is TransferState.RECEIVING:
            try:
                data = conn.read(self.svc.view)
            except OSError as exc:
                return self._io_failed(Code.RECV_ERROR, f"Recv failure: {exc.strerror or exc}")
            if data is None:
                return False
            if not data and not conn.http.received and conn.reused and self._retry():
                return True
            self._feed(data)
            if not data and self.state is TransferState.RECEIVING:
                raise TransferError(Code.RECV_ERROR, "Connection closed before the response ended")
            budget -= len(data)
        return self.state is not TransferState.RECEIVING and self.state is not TransferState.DONE

    def _io_failed(self, code: Code, text: str) -> bool:
        """A send/recv error: retry a reused connection that got no reply, else fail."""
        conn = self.conn
        if conn is not None and conn.reused and not conn.http.received and self._retry():
            return True
        raise TransferError(code, text)

    def _retry(self) -> bool:
        """The server closed a pooled connection as we reused it: once more, on a fresh one."""
        if self._retried:
            return False
        self._retried = True
        self._drop_connection()
        self._fresh_only = True
        self._set_state(TransferState.CONNECT)
        return True

    # --- the response ------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        conn = self.conn
        response = self._response
        assert conn is not None
        assert response is not None
        for kind, value in conn.http.receive(data):
            if kind == "data":
                assert isinstance(value, bytes)
                response.on_body(value)
            elif kind == "end":
                response.on_end()
                self._on_end(response)
                return
            else:
                assert isinstance(value, ResponseHead)
                response.on_head(value, final=kind == "head")

    def _on_end(self, response: Response) -> None:
        location = response.redirect_location()
        if location is None:
            self._finish(Code.OK, "")
        else:
            self._follow(location, response)

    def _follow(self, location: bytes, response: Response) -> None:
        """Aim at the Location, as curl's FOLLOWLOCATION does."""
        easy = self.easy
        if 0 <= easy.max_redirs <= easy.redirect_count:  # -1: no limit, as in curl
            raise TransferError(
                Code.TOO_MANY_REDIRECTS, f"Maximum ({easy.max_redirs}) redirects followed"
            )
        assert response.head is not None
        assert self.target is not None
        status = response.head.status
        new_url = redirect_target(easy.effective_url, location)
        self._release_connection()
        easy.redirect_count += 1
        easy.redirect_time = self._elapsed()
        if (status == 303 and self.method != "HEAD") or (
            status in (301, 302) and self.method == "POST"
        ):
            self.method, self.body = "GET", None
            self.headers = tuple((k, v) for k, v in self.headers if k.lower() != "content-type")
        self._setup(new_url)

    # --- speed and timing -------------------------------------------------------

    def _timeout_text(self, name: str) -> str:
        elapsed_ms = int(self._elapsed() * 1000)
        if name == "connect":
            return f"Connection timed out after {elapsed_ms} milliseconds"
        got = self.easy.size_download
        return f"Operation timed out after {elapsed_ms} milliseconds with {got} bytes received"

    def _mark_speed(self, now: float) -> None:
        self._speed_mark = (now, self.easy.size_download)
        self.svc.deadlines.set(self, "speed", now + self.easy.low_speed_time)

    def _check_speed(self, now: float) -> None:
        since, bytes_then = self._speed_mark
        easy = self.easy
        rate = (easy.size_download - bytes_then) / max(now - since, 1e-9)
        if rate < easy.low_speed_limit:
            self._finish(
                Code.OPERATION_TIMEDOUT,
                f"Operation too slow. Less than {easy.low_speed_limit} bytes/sec transferred "
                f"the last {easy.low_speed_time} seconds",
            )
            return
        self._mark_speed(now)

    def _elapsed(self) -> float:
        return self.svc.clock() - self._start

    # --- the end -----------------------------------------------------------------

    def _finish(self, code: Code, text: str) -> None:
        if self.state is TransferState.DONE:
            return
        easy = self.easy
        easy.result = code
        easy.error = text
        easy.total_time = self._elapsed()
        if not easy.starttransfer_time and code is Code.OK:
            easy.starttransfer_time = easy.total_time
        self._release_all(keep=code is Code.OK)
        self._set_state(TransferState.DONE)

    def _release_all(self, keep: bool) -> None:
        self.svc.deadlines.clear_owner(self, DEADLINE_NAMES)
        if self._dialer is not None:
            self._dialer.close()
            self._dialer = None
        if keep:
            self._release_connection()
        else:
            self._drop_connection()
        if self._slot_held:  # reserved for a connect that never produced a connection
            self._slot_held = False
            self.svc.pool.release(self.origin)

    def _release_connection(self) -> None:
        """Back to the pool if it can serve another request, else closed."""
        conn = self.conn
        if conn is None:
            return
        if not conn.is_reusable():
            self._drop_connection()
            return
        self.conn = None
        conn.http.next_cycle()
        conn.last_used = self.svc.clock()
        conn.released_in = self.svc.call
        self.svc.forget(conn.fd)  # idle connections are not watched (libcurl S5)
        for victim in self.svc.pool.put_idle(conn, self.svc.max_idle()):
            self.svc.close_socket(victim.sock)

    def _drop_connection(self) -> None:
        conn = self.conn
        if conn is None:
            return
        self.conn = None
        self.svc.close_socket(conn.sock)
        self.svc.pool.release(conn.origin)


# One step function per state, looked up once per step (no name building on the hot path).
_STEPS: dict[TransferState, Callable[[Transfer], bool]] = {
    TransferState.INIT: Transfer._step_init,
    TransferState.CONNECT: Transfer._step_connect,
    TransferState.PENDING: Transfer._step_pending,
    TransferState.RESOLVING: Transfer._step_resolving,
    TransferState.CONNECTING: Transfer._step_connecting,
    TransferState.TUNNEL: Transfer._step_tunnel,
    TransferState.TLS_HANDSHAKE: Transfer._step_tls_handshake,
    TransferState.SENDING: Transfer._step_sending,
    TransferState.RECEIVING: Transfer._step_receiving,
}
