"""The CONNECT exchange through an HTTP proxy (curl's cf-h1-proxy.c).

Sends `CONNECT host:port` on a fresh connection to the proxy and reads the
answer; a 2xx makes the socket a tunnel to the target (TLS starts next),
anything else fails the transfer. Moves bytes only when told the socket is
ready; maps the proxy's failures to libcurl's codes here.
"""

from __future__ import annotations

from hiperfifo.engine.codes import Code, TransferError, caused
from hiperfifo.engine.connection import Connection
from hiperfifo.engine.debug import Trace, head_in, head_out
from hiperfifo.engine.easy import InfoType
from hiperfifo.engine.http1 import Head, Http1
from hiperfifo.engine.request import proxy_auth
from hiperfifo.engine.url import Target


class Tunnel:
    """One CONNECT request and its answer on `conn`."""

    __slots__ = ("_http", "_trace")

    def __init__(
        self,
        conn: Connection,
        target: Target,
        proxy: Target | None,
        trace: Trace | None,
    ) -> None:
        self._http = Http1()
        self._trace = trace  # None: no debug_function
        host = f"[{target.host}]" if ":" in target.host else target.host
        authority = f"{host}:{target.port}"
        headers = [("Host", authority), *proxy_auth(proxy)]
        request = self._http.request("CONNECT", authority, headers, None)
        conn.queue(request)
        if trace is not None:
            trace(InfoType.HEADER_OUT, head_out(request))

    def advance(self, conn: Connection, view: memoryview) -> bool:
        """Send and read what the socket allows; True once the proxy said 2xx."""
        while True:
            try:
                data = conn.read(view) if conn.flush() else None
            except OSError as exc:
                raise caused(
                    TransferError(Code.COULDNT_CONNECT, f"Proxy CONNECT failed: {exc}"), exc
                )
            if data is None:
                return False
            try:
                events = self._http.receive(data)
            except TransferError as exc:
                text = "Proxy CONNECT aborted" if not data else f"Proxy CONNECT failed: {exc.text}"
                raise caused(TransferError(Code.RECV_ERROR, text), exc)
            for event in events:
                if isinstance(event, Head):
                    if self._trace is not None:
                        self._trace(InfoType.HEADER_IN, head_in(event.head))
                    status = event.head.status
                    if not 200 <= status < 300:
                        raise TransferError(
                            Code.RECV_ERROR, f"CONNECT tunnel failed, response {status}"
                        )
                    return True
            if not data:
                raise TransferError(Code.RECV_ERROR, "Proxy CONNECT aborted")
