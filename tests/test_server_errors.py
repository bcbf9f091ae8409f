"""A test server that raises fails its test: the check in tests/conftest.py, tested with pytester.

Each case runs a small test file in a fresh pytest (in this process) with the
real tests/conftest.py, and asserts how that run ended.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).parent


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester run with the suite's own conftest and server modules."""
    pytester.syspathinsert(TESTS)
    pytester.syspathinsert(TESTS / "daemon")
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    return pytester


ENGINE_HEAD = """
from servers import Server
from hiperfifo.engine import Code

def closes_then_raises(peer):
    peer.read_request()
    peer.close()
    raise RuntimeError("the test server broke")
"""


def test_a_handler_that_raises_fails_a_test_that_would_pass(inner: pytest.Pytester) -> None:
    """The issue's case: the server reads the request, closes, then raises; the client sees
    GOT_NOTHING (52) as expected, and yet the test fails, showing the server's traceback."""
    inner.makepyfile(
        ENGINE_HEAD
        + """
def test_it(fetch, serve):
    srv = serve(Server(closes_then_raises))
    easy, _ = fetch(srv.url())
    assert easy.result == Code.GOT_NOTHING
    srv.wait_for(lambda: srv.active == 0)
"""
    )
    result = inner.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*unexpected exception(s) in test servers*", "*RuntimeError: the test server broke*"]
    )


def test_a_handler_that_raises_after_the_test_body_fails_at_teardown(
    inner: pytest.Pytester,
) -> None:
    """A handler still running when the test body returns is caught once `serve` has closed
    it: the test errors at teardown with the server's traceback."""
    inner.makepyfile(
        """
from servers import Server

def late(peer):
    peer.read_request()
    peer.server.stopping.wait(30)  # until close()
    raise RuntimeError("raised while closing")

def test_it(serve):
    import socket
    srv = serve(Server(late))
    with socket.create_connection((srv.host, srv.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        assert srv.wait_for(lambda: len(srv.requests) == 1)
"""
    )
    result = inner.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown*", "*RuntimeError: raised while closing*"])


def test_the_daemon_tests_server_reports_too(inner: pytest.Pytester) -> None:
    """hf_support's Server (the daemon tests' http_server): a route that raises (here
    int("x") for /status/x) fails the test."""
    inner.makepyfile(
        """
import urllib.request, urllib.error
from hf_support import Server

def test_it(serve):
    server = serve(Server())
    try:
        urllib.request.urlopen(server.url("/status/x"), timeout=10).read()
    except (urllib.error.URLError, ConnectionError, OSError):
        pass
"""
    )
    result = inner.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ValueError: invalid literal for int()*"])


def test_a_stdlib_socketserver_reports_through_report_errors(inner: pytest.Pytester) -> None:
    """A stdlib ThreadingHTTPServer whose handle_error calls hf_support.report_errors: an
    unexpected handler exception fails the test; an expected ConnectionError does not."""
    inner.makepyfile(
        """
import threading, urllib.request, urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from hf_support import report_errors

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        raise ConnectionResetError if self.path == "/expected" else KeyError(self.path)

    def log_message(self, *args):
        pass

class Stdlib(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        report_errors(self, (ConnectionError,))

def get(server, path):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}{path}", timeout=10)
    except (urllib.error.URLError, ConnectionError, OSError):
        pass

def run(path):
    server = Stdlib(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        get(server, path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

def test_expected():
    run("/expected")

def test_unexpected():
    run("/unexpected")
"""
    )
    result = inner.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*KeyError: '/unexpected'*"])


def test_clean_servers_and_expected_hang_ups_pass(inner: pytest.Pytester) -> None:
    """The control: a server whose client hangs up early (expected) does not fail the test."""
    inner.makepyfile(
        ENGINE_HEAD
        + """
def test_it(fetch, http_server):
    easy, body = fetch(http_server.url("/slow"), timeout_ms=50)
    assert easy.result == Code.OPERATION_TIMEDOUT
    easy, body = fetch(http_server.url("/"))
    assert easy.result == Code.OK
"""
    )
    result = inner.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
