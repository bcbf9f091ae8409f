"""A proxy.py plugin for the tests: every request line the proxy receives, one per line.

Loaded by proxy.py in its own process (tests/proxies.py starts it with
`--plugins proxy_log_plugin.RequestLog` and this directory on PYTHONPATH); the
file to append to is $HIPERFIFO_TEST_PROXY_LOG. Lines read like tinyproxy's:
`GET http://127.0.0.1:8080/path HTTP/1.1`, `CONNECT 127.0.0.1:8443 HTTP/1.1`.
"""

from __future__ import annotations

import os
from typing import Any

from proxy.http.proxy import HttpProxyBasePlugin  # type: ignore[import-not-found]


def _line(request: Any) -> str:
    method = request.method.decode("latin-1")
    version = (request.version or b"HTTP/1.1").decode("latin-1")
    host = (request.host or b"").decode("latin-1")
    if request.is_https_tunnel:
        return f"{method} {host}:{request.port} {version}"
    path = (request.path or b"/").decode("latin-1")
    return f"{method} http://{host}:{request.port}{path} {version}"


class RequestLog(HttpProxyBasePlugin):  # type: ignore[misc]
    """Appends each request line (CONNECT included) to $HIPERFIFO_TEST_PROXY_LOG."""

    def _record(self, request: Any) -> None:
        with open(os.environ["HIPERFIFO_TEST_PROXY_LOG"], "a", encoding="latin-1") as log:
            log.write(_line(request) + "\n")

    def before_upstream_connection(self, request: Any) -> Any:
        if request.is_https_tunnel:
            self._record(request)
        return request

    def handle_client_request(self, request: Any) -> Any:
        if not request.is_https_tunnel:
            self._record(request)
        return request
