"""One transfer's state machine: connect → (resolve → dial) → send → receive → done.

Each state has one `_step_<state>()`; every change of state goes through
`_set_state()`. A step returns True when the machine should run again at
once, False when it waits for a socket, a lookup or a deadline. The transfer
never waits and never announces sockets itself: `wanted()` says what it
waits for and the multi turns that into socket callbacks. It closes sockets
only through `Services.close_socket`, which announces POLL_REMOVE first.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Any

from hiperfifo.engine.codes import POLL_IN, POLL_INOUT, POLL_OUT, Code, TransferError
from hiperfifo.engine.connection import Connection, Origin, attempt_status, open_attempt
from hiperfifo.engine.deadlines import Deadlines
from hiperfifo.engine.decoding import Decoder, accept_header
from hiperfifo.engine.easy import Easy
from hiperfifo.engine.guard import CallbackGuard
from hiperfifo.engine.http1 import Http1, ResponseHead
from hiperfifo.engine.pool import Pool
from hiperfifo.engine.proxy import bypasses, parse_proxy
from hiperfifo.engine.resolver import Address, Resolved, Resolver, numeric_addresses
from hiperfifo.engine.tls import TlsSession, client_context
from hiperfifo.engine.url import Target, parse, redirect_target

EYEBALLS_DELAY = 0.2  # libcurl's CURL_HET_DEFAULT
MAX_ATTEMPTS = 6  # libcurl's IP_HE_MAX_CONCURRENT_ATTEMPTS
READ_BUDGET = 1 << 20  # bytes read from one socket per run, so one fast peer cannot starve others
REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))
DEADLINE_NAMES = ("run", "connect", "total", "speed", "eyeballs")


class TransferState(enum.Enum):
    INIT = "INIT"
    CONNECT = "CONNECT"  # find a pooled connection or a slot for a new one
    PENDING = "PENDING"  # waiting for a slot (connection limits)
    RESOLVING = "RESOLVING"
    CONNECTING = "CONNECTING"  # happy-eyeballs attempts running
    TUNNEL = "TUNNEL"  # CONNECT through an HTTP proxy
    TLS_HANDSHAKE = "TLS_HANDSHAKE"
    SENDING = "SENDING"
    RECEIVING = "RECEIVING"
    DONE = "DONE"


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

    def close_socket(self, sock: Any) -> None:
        """Announce POLL_REMOVE (if the fd was announced), then close: never the other way."""
        fd = sock.fileno()
        if fd >= 0:
            self.forget(fd)
        sock.close()


class Transfer:
    """Runs one Easy to completion; the result lands in the Easy."""

    def __init__(self, easy: Easy, services: Services) -> None:
        self.easy = easy
        self.svc = services
        self.state = TransferState.INIT
        self.target: Target | None = None
        self.origin: Origin = ("", "", 0, "")
        self.proxy: Target | None = None
        self._tunnel: Http1 | None = None
        self._decoder: Decoder | None = None
        self.conn: Connection | None = None
        self.method = easy.method.upper()
        self.body = easy.body
        self._start = 0.0
        self._attempts: list[tuple[Any, Address]] = []
        self._addresses: deque[Address] = deque()
        self._last_attempt_at = 0.0
        self._connect_error = ""
        self._slot_held = False
        self._retried = False
        self._fresh_only = False
        self._head: ResponseHead | None = None
        self._skip_body = False
        self._speed_mark = (0.0, 0)

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
        except TransferError as exc:
            self._fail(exc.code, exc.text)

    def _step(self) -> bool:
        return bool(getattr(self, "_step_" + self.state.name.lower())())

    def _set_state(self, state: TransferState) -> None:
        debug = self.easy.debug_function
        if debug is not None:
            self._call(debug, "state", f"{self.state.name} -> {state.name}")
        self.state = state

    def wanted(self) -> dict[int, int]:
        """fd -> POLL_* this transfer waits for now."""
        state = self.state
        if state is TransferState.RECEIVING and self.conn is not None:
            return {self.conn.fd: POLL_IN}
        if state is TransferState.SENDING and self.conn is not None:
            return {self.conn.fd: POLL_OUT}
        if state is TransferState.CONNECTING:
            return {sock.fileno(): POLL_OUT for sock, _addr in self._attempts}
        if state is TransferState.TUNNEL and self.conn is not None:
            return {self.conn.fd: POLL_OUT if self.conn.outbuf else POLL_IN}
        if state is TransferState.TLS_HANDSHAKE and self.conn is not None:
            return {self.conn.fd: POLL_INOUT if self.conn.outbuf else POLL_IN}
        return {}

    def resume(self) -> None:
        """Leave PENDING: a slot may be free now."""
        if self.state is TransferState.PENDING:
            self._set_state(TransferState.CONNECT)

    def can_leave_pending(self) -> bool:
        """Would this pending transfer find a connection or a slot now?"""
        assert self.target is not None
        return self.svc.pool.could_serve(self.origin)

    def abort(self) -> None:
        """Stop at once (remove_handle): close what is open, keep no result."""
        self._release_all(keep=False)
        self.state = TransferState.DONE

    # --- events from the multi -------------------------------------------------------

    def on_deadline(self, name: str) -> None:
        now = self.svc.clock()
        elapsed_ms = int((now - self._start) * 1000)
        if name == "run":
            self.run()
        elif name == "total":
            got = self.easy.size_download
            self._fail(
                Code.OPERATION_TIMEDOUT,
                f"Operation timed out after {elapsed_ms} milliseconds with {got} bytes received",
            )
        elif name == "connect":
            self._fail(
                Code.OPERATION_TIMEDOUT, f"Connection timed out after {elapsed_ms} milliseconds"
            )
        elif name == "speed":
            self._check_speed(now)
        elif name == "eyeballs":
            self._start_attempt()
            self.run()

    def on_resolved(self, resolved: Resolved) -> None:
        if self.state is not TransferState.RESOLVING:
            return
        if not resolved.addresses:
            code = Code.COULDNT_RESOLVE_PROXY if self.proxy else Code.COULDNT_RESOLVE_HOST
            self._fail(code, resolved.error)
            return
        self._addresses = deque(resolved.addresses)
        self.easy.namelookup_time = self._elapsed()
        self._set_state(TransferState.CONNECTING)
        self.run()

    # --- the states --------------------------------------------------------------

    def _step_init(self) -> bool:
        easy = self.easy
        self._start = self.svc.clock()
        if easy.timeout_ms > 0:
            self.svc.deadlines.set(self, "total", self._start + easy.timeout_ms / 1000)
        self._setup(easy.url)
        return True

    def _setup(self, url: str) -> None:
        easy = self.easy
        self.target = target = parse(url)
        tls_profile = f"{easy.verify}:{easy.ca_file}" if target.scheme == "https" else ""
        proxy = None
        if easy.proxy and not bypasses(target.host, easy.noproxy or ""):
            proxy = parse_proxy(easy.proxy)
        self.proxy = proxy
        if proxy is None:
            self.origin = (target.scheme, target.host, target.port, tls_profile)
        elif target.scheme == "http":  # one connection to the proxy serves every http URL
            self.origin = ("http", proxy.host, proxy.port, "proxy")
        else:  # a tunnel is bound to its target
            via = f"{tls_profile}|via {proxy.host}:{proxy.port}"
            self.origin = (target.scheme, target.host, target.port, via)
        easy.effective_url = url
        self._set_state(TransferState.CONNECT)

    def _step_connect(self) -> bool:
        target = self.target
        assert target is not None
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
        now = self.svc.clock()
        self.svc.deadlines.set(self, "connect", now + self.easy.connect_timeout_ms / 1000)
        dial = self.proxy or target
        addresses = numeric_addresses(dial.host, dial.port)
        if addresses is not None:
            self._addresses = deque(addresses)
            self.easy.namelookup_time = self._elapsed()
            self._set_state(TransferState.CONNECTING)
            return True
        self._set_state(TransferState.RESOLVING)
        self.svc.resolver.submit(self, dial.host, dial.port)
        return False

    def _reuse_pooled(self) -> bool:
        pool = self.svc.pool
        while (conn := pool.take_idle(self.origin)) is not None:
            if conn.is_alive():
                self.conn = conn
                self._slot_held = True
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

    def _step_connecting(self) -> bool:
        if not self._attempts:
            self._start_attempt()
        for sock, address in list(self._attempts):
            connected, error = attempt_status(sock)
            if connected:
                self._win(sock, address)
                return True
            if error:
                self._drop_attempt(sock, address, error)
                self._start_attempt()
        if not self._attempts:
            self._fail_connect()
            return False
        if self._addresses and not self.svc.deadlines.is_set(self, "eyeballs"):
            self.svc.deadlines.set(self, "eyeballs", self._last_attempt_at + EYEBALLS_DELAY)
        return False

    def _start_attempt(self) -> None:
        while self._addresses and len(self._attempts) < MAX_ATTEMPTS:
            address = self._addresses.popleft()
            sock, error = open_attempt(address)
            if sock is not None:
                self._attempts.append((sock, address))
                self._last_attempt_at = self.svc.clock()
                return
            self._connect_error = f"{_show(address)}: {error}"

    def _drop_attempt(self, sock: Any, address: Address, error: str) -> None:
        self._attempts.remove((sock, address))
        self._connect_error = f"{_show(address)}: {error}"
        self.svc.close_socket(sock)

    def _fail_connect(self) -> None:
        dial = self.proxy or self.target
        assert dial is not None
        what = "proxy " if self.proxy else ""
        self._fail(
            Code.COULDNT_CONNECT,
            f"Failed to connect to {what}{dial.host} port {dial.port} after "
            f"{int(self._elapsed() * 1000)} ms: {self._connect_error or 'Could not connect'}",
        )

    def _win(self, sock: Any, address: Address) -> None:
        self._attempts.remove((sock, address))
        self._close_attempts()
        target = self.target
        assert target is not None
        self.conn = Connection(self.origin, sock, self.svc.clock())
        self.easy.num_connects += 1
        self.easy.connect_time = self._elapsed()
        self.svc.deadlines.clear(self, "eyeballs")
        if target.scheme == "https" and self.proxy is not None:
            self._set_state(TransferState.TUNNEL)
        elif target.scheme == "https":
            self._start_tls()
        else:
            self._ready()

    def _start_tls(self) -> None:
        assert self.conn is not None
        assert self.target is not None
        context = client_context(self.easy.verify, self.easy.ca_file)
        self.conn.tls = TlsSession(context, self.target.host)
        self._set_state(TransferState.TLS_HANDSHAKE)

    def _step_tunnel(self) -> bool:
        """CONNECT host:port through the proxy; a 2xx answer makes the socket a tunnel."""
        conn = self.conn
        target = self.target
        assert conn is not None
        assert target is not None
        if self._tunnel is None:
            self._tunnel = Http1()
            authority = f"{target.host_header.rsplit(':', 1)[0]}:{target.port}"
            conn.queue(self._tunnel.request("CONNECT", authority, [("Host", authority)], None))
        try:
            if not conn.flush():
                return False
            data = conn.read(self.svc.view)
        except OSError as exc:
            self._fail(Code.COULDNT_CONNECT, f"Proxy CONNECT failed: {exc.strerror or exc}")
            return False
        if data is None:
            return False
        for kind, head in self._tunnel.receive(data):
            if kind != "head":
                continue
            assert isinstance(head, ResponseHead)
            if not 200 <= head.status < 300:
                self._fail(Code.RECV_ERROR, f"CONNECT tunnel failed, response {head.status}")
                return False
            self._tunnel = None
            self._start_tls()
            return True
        return True

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
                    self._fail(Code.SSL_CONNECT_ERROR, "Connection closed in the TLS handshake")
                    return False
                conn.tls.feed(self.svc.view[:n])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._fail(Code.SSL_CONNECT_ERROR, f"TLS connect error: {exc.strerror or exc}")
            return False

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
        conn.queue(conn.http.request(self.method, *self._request_parts()))
        easy.pretransfer_time = self._elapsed()
        self._set_state(TransferState.SENDING)

    def _request_parts(self) -> tuple[str, list[tuple[str, str]], bytes | None]:
        target = self.target
        assert target is not None
        given = {name.lower() for name, _value in self.easy.headers}
        headers: list[tuple[str, str]] = []
        request_target = target.target
        if self.proxy is not None and target.scheme == "http":
            request_target = f"http://{target.host_header}{target.target}"
        if "host" not in given:
            headers.append(("Host", target.host_header))
        if target.authorization and "authorization" not in given:
            headers.append(("Authorization", target.authorization))
        if "accept" not in given:
            headers.append(("Accept", "*/*"))
        if self.easy.accept_encoding is not None and "accept-encoding" not in given:
            headers.append(("Accept-Encoding", accept_header(self.easy.accept_encoding)))
        headers.extend(self.easy.headers)
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
        view = self.svc.view
        budget = READ_BUDGET
        while budget > 0 and self.state is TransferState.RECEIVING:
            try:
                data = conn.read(view)
            except OSError as exc:
                return self._io_failed(Code.RECV_ERROR, f"Recv failure: {exc.strerror or exc}")
            if data is None:
                return False
            if not data and not conn.http.received and conn.reused and self._retry():
                return True
            self._feed(data)
            if not data and self.state is TransferState.RECEIVING:
                self._fail(Code.RECV_ERROR, "Connection closed before the response ended")
            budget -= len(data)
        return self.state is not TransferState.RECEIVING and self.state is not TransferState.DONE

    def _io_failed(self, code: Code, text: str) -> bool:
        """A send/recv error: retry a reused connection that got no reply, else fail."""
        conn = self.conn
        if conn is not None and conn.reused and not conn.http.received and self._retry():
            return True
        self._fail(code, text)
        return False

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
        assert conn is not None
        for kind, value in conn.http.receive(data):
            if kind == "data":
                assert isinstance(value, bytes)
                self._on_body(value)
            elif kind == "head" or kind == "info":
                assert isinstance(value, ResponseHead)
                self._on_head(value, final=kind == "head")
            else:
                self._on_end()
            if self.state is not TransferState.RECEIVING:
                return

    def _on_head(self, head: ResponseHead, final: bool) -> None:
        easy = self.easy
        if not easy.starttransfer_time:
            easy.starttransfer_time = self._elapsed()
        easy.response_code = head.status
        easy.http_version = head.http_version
        if easy.header_function is not None:
            for line in head.lines():
                if not self._deliver(easy.header_function, line):
                    return
        if final:
            self._on_final_head(head)

    def _on_final_head(self, head: ResponseHead) -> None:
        easy = self.easy
        self._head = head
        length = head.header(b"content-length")
        easy.content_length = int(length) if length and length.isdigit() else -1
        self._skip_body = self._redirect_location() is not None
        if self._skip_body:
            return
        if easy.fail_on_error and head.status >= 400:
            raise TransferError(
                Code.HTTP_RETURNED_ERROR, f"The requested URL returned error: {head.status}"
            )
        if easy.max_filesize and easy.content_length > easy.max_filesize:
            raise TransferError(
                Code.FILESIZE_EXCEEDED, f"Maximum file size exceeded ({easy.content_length})"
            )
        encoding = head.header(b"content-encoding")
        if encoding and easy.accept_encoding is not None:
            name = encoding.decode("latin-1").strip().lower()
            if name not in ("", "identity"):
                self._decoder = Decoder(name, easy.max_filesize)

    def _on_body(self, data: bytes) -> None:
        if self._skip_body:
            return
        easy = self.easy
        easy.size_download += len(data)
        if self._decoder is not None:
            for chunk in self._decoder.feed(data):
                if not self._write(chunk):
                    return
        else:
            if easy.max_filesize and easy.size_download > easy.max_filesize:
                raise TransferError(
                    Code.FILESIZE_EXCEEDED, f"Exceeded the maximum file size ({easy.max_filesize})"
                )
            if not self._write(data):
                return
        self._progress()

    def _write(self, data: bytes) -> bool:
        function = self.easy.write_function
        return function is None or self._deliver(function, data)

    def _deliver(self, function: Callable[[bytes], int | None], data: bytes) -> bool:
        """Call a write or header callback; a short count or an exception is WRITE_ERROR."""
        try:
            with self.svc.guard.calling():
                taken = function(data)
        except Exception as exc:
            self._fail(Code.WRITE_ERROR, f"Failure writing output to destination: {exc!r}")
            return False
        if taken is not None and taken != len(data):
            self._fail(
                Code.WRITE_ERROR,
                f"Failure writing output to destination, passed {len(data)} returned {taken}",
            )
            return False
        return True

    def _progress(self) -> None:
        easy = self.easy
        if easy.progress_function is None:
            return
        total = max(easy.content_length, 0)
        try:
            with self.svc.guard.calling():
                abort = easy.progress_function(total, easy.size_download, 0, 0)
        except Exception as exc:
            self._fail(Code.ABORTED_BY_CALLBACK, f"Callback aborted: {exc!r}")
            return
        if abort:
            self._fail(Code.ABORTED_BY_CALLBACK, "Callback aborted")

    def _on_end(self) -> None:
        if self._decoder is not None:
            self._decoder.finish()
        location = self._redirect_location()
        if location is None:
            self._finish(Code.OK, "")
            return
        self._follow(location)

    def _redirect_location(self) -> bytes | None:
        head = self._head
        if head is None or not self.easy.follow_location or head.status not in REDIRECT_CODES:
            return None
        return head.header(b"location")

    def _follow(self, location: bytes) -> None:
        easy = self.easy
        if easy.redirect_count >= easy.max_redirs:
            self._fail(Code.TOO_MANY_REDIRECTS, f"Maximum ({easy.max_redirs}) redirects followed")
            return
        assert self._head is not None
        assert self.target is not None
        status = self._head.status
        new_url = redirect_target(easy.effective_url, location)
        old_host = self.target.host
        self._release_connection()
        easy.redirect_count += 1
        easy.redirect_time = self._elapsed()
        if (status == 303 and self.method != "HEAD") or (
            status in (301, 302) and self.method == "POST"
        ):
            self.method, self.body = "GET", None
        self._head = None
        self._decoder = None
        self._skip_body = False
        self._setup(new_url)
        if self.target.host != old_host and self.target.authorization is None:
            easy.headers = tuple(
                (k, v) for k, v in easy.headers if k.lower() not in ("authorization", "cookie")
            )

    # --- speed and timing -------------------------------------------------------

    def _mark_speed(self, now: float) -> None:
        self._speed_mark = (now, self.easy.size_download)
        self.svc.deadlines.set(self, "speed", now + self.easy.low_speed_time)

    def _check_speed(self, now: float) -> None:
        since, bytes_then = self._speed_mark
        easy = self.easy
        rate = (easy.size_download - bytes_then) / max(now - since, 1e-9)
        if rate < easy.low_speed_limit:
            self._fail(
                Code.OPERATION_TIMEDOUT,
                f"Operation too slow. Less than {easy.low_speed_limit} bytes/sec transferred "
                f"the last {easy.low_speed_time} seconds",
            )
            return
        self._mark_speed(now)

    def _elapsed(self) -> float:
        return self.svc.clock() - self._start

    # --- the end -----------------------------------------------------------------

    def _fail(self, code: Code, text: str) -> None:
        self._finish(code, text)

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
        self._close_attempts()
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
        self._slot_held = False
        conn.http.next_cycle()
        conn.last_used = self.svc.clock()
        self.svc.forget(conn.fd)  # forget it: idle connections are not watched
        for victim in self.svc.pool.put_idle(conn, self.svc.max_idle()):
            self.svc.close_socket(victim.sock)

    def _drop_connection(self) -> None:
        conn = self.conn
        if conn is None:
            return
        self.conn = None
        self._slot_held = False
        self.svc.close_socket(conn.sock)
        self.svc.pool.release(conn.origin)

    def _close_attempts(self) -> None:
        for sock, _address in self._attempts:
            self.svc.close_socket(sock)
        self._attempts.clear()
        self._addresses.clear()

    def _call(self, function: Callable[..., Any], *args: Any) -> None:
        with self.svc.guard.calling():
            function(*args)


def _show(address: Address) -> str:
    sockaddr = address[1]
    return f"{sockaddr[0]}:{sockaddr[1]}"
