"""HTTP/1.1 through h11 against real local servers: what the client writes, how bodies end,
keep-alive, connection limits, h11's gaps, callbacks and getinfo."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import Any

from servers import (
    HELLO,
    Gauge,
    HTTPServer,
    Peer,
    Request,
    Server,
    huge_headers,
    raw,
    respond,
    stale_after_first,
)

from hiperfifo.engine import Code, Easy, InfoType

Fetch = Callable[..., tuple[Any, bytes]]


def test_get_writes_method_target_host_and_custom_headers(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """A GET reaches the server as GET with the path and query, Host and the custom headers."""
    easy, body = fetch(http_server.url("/?q=1&r=two"), headers=[("X-Test", "yes")])
    assert (easy.result, easy.response_code, body) == (Code.OK, 200, HELLO)
    [request] = http_server.requests
    assert (request.method, request.target, request.http_version) == ("GET", "/?q=1&r=two", "1.1")
    assert request.header("host") == http_server.netloc
    assert request.header("x-test") == "yes"
    assert request.body == b""
    assert request.header("content-length") in (None, "0")


def test_dot_segments_are_removed_from_the_path_as_curl_does(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """`.` and `..` segments of the path are resolved before the request goes out (RFC 3986
    5.2.4, libcurl without CURLOPT_PATH_AS_IS); never above the root; the query is left alone."""
    for path, target in [
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/b/../../c/./d/../e?x=/../y", "/c/e?x=/../y"),
        ("/a/..", "/"),
        ("/a/.", "/a/"),
        ("/a/.hidden/..b/f.txt", "/a/.hidden/..b/f.txt"),
    ]:
        easy, _body = fetch(http_server.url(path))
        assert easy.result == Code.OK
        assert http_server.requests[-1].target == target, path
        assert easy.effective_url == http_server.url(target), path


def test_effective_url_is_normalised_as_curls(fetch: Fetch, http_server: HTTPServer) -> None:
    """effective_url is the URL as libcurl's URL API shows it (curl 7.88's -w url_effective,
    checked by hand): scheme lowercased, an empty path `/`, the path's dot segments resolved;
    host, credentials, query and fragment as given."""
    base = f"127.0.0.1:{http_server.port}"
    for given, shown in [
        (f"http://{base}", f"http://{base}/"),
        (f"http://{base}?x=/../y", f"http://{base}/?x=/../y"),
        (f"HTTP://{base}/./a/b/..", f"http://{base}/a/"),
        (f"http://u:p@{base}/a/./b#f/../g", f"http://u:p@{base}/a/b#f/../g"),
        (f"http://{base}/a/%2e%2e/b", f"http://{base}/a/%2e%2e/b"),
    ]:
        easy, _body = fetch(given)
        assert easy.result == Code.OK, given
        assert easy.effective_url == shown, given


def test_head_gets_headers_and_no_body_and_keeps_the_connection(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """HEAD: status and Content-Length but no body is read, and the connection is reused."""
    easy, body = fetch(http_server.url(), method="HEAD")
    assert (easy.result, easy.response_code, body) == (Code.OK, 200, b"")
    assert http_server.requests[0].method == "HEAD"
    after, after_body = fetch(http_server.url())
    assert (after.result, after_body, after.num_connects) == (Code.OK, HELLO, 0)
    assert http_server.accepted == 1


def test_post_writes_body_with_content_length_and_headers(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """A POST body arrives intact with its Content-Length and the caller's headers."""
    payload = b'{"answer": 42}'
    easy, body = fetch(
        http_server.url("/echo"),
        method="POST",
        body=payload,
        headers=[("Content-Type", "application/json"), ("X-Request-Id", "abc-1")],
    )
    assert (easy.result, easy.response_code, body) == (Code.OK, 200, payload)
    [request] = http_server.requests
    assert (request.method, request.target, request.body) == ("POST", "/echo", payload)
    assert request.header("content-length") == str(len(payload))
    assert request.header("content-type") == "application/json"
    assert request.header("x-request-id") == "abc-1"


def test_large_post_body_sent_completely(fetch: Fetch, http_server: HTTPServer) -> None:
    """A 4 MB body (many partial sends on a non-blocking socket) arrives byte for byte."""
    payload = bytes(range(256)) * (4 * 4096)
    easy, body = fetch(http_server.url("/echo"), method="POST", body=payload)
    assert easy.result == Code.OK
    assert http_server.requests[0].body == payload
    assert body == payload


def test_content_length_body(fetch: Fetch, http_server: HTTPServer) -> None:
    """A Content-Length body is delivered whole; size_download and content_length match it."""
    easy, body = fetch(http_server.url())
    assert body == HELLO
    assert easy.size_download == len(HELLO)
    assert easy.content_length == len(HELLO)


def test_chunked_body_reassembled_and_connection_kept(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """A chunked body arrives de-chunked; the connection stays reusable after the last chunk."""
    easy, body = fetch(http_server.url("/chunked"))
    assert (easy.result, body) == (Code.OK, b"hello, chunked world\n")
    assert easy.size_download == len(body)
    after, _ = fetch(http_server.url())
    assert (after.result, after.num_connects, http_server.accepted) == (Code.OK, 0, 1)


def test_close_delimited_body_read_until_eof(fetch: Fetch, http_server: HTTPServer) -> None:
    """A body without length or chunking ends at EOF (OK), and that connection is not reused."""
    easy, body = fetch(http_server.url("/close"))
    assert (easy.result, body) == (Code.OK, b"delimited by close\n")
    after, _ = fetch(http_server.url())
    assert (after.result, after.num_connects, http_server.accepted) == (Code.OK, 1, 2)


def test_keep_alive_reuse_one_connection(fetch: Fetch, http_server: HTTPServer) -> None:
    """Sequential transfers to one origin share one connection: num_connects 1, then 0."""
    results = [fetch(http_server.url())[0] for _ in range(3)]
    assert [e.result for e in results] == [Code.OK] * 3
    assert [e.num_connects for e in results] == [1, 0, 0]
    assert len({e.local_port for e in results}) == 1
    assert http_server.accepted == 1
    assert {r.client_port for r in http_server.requests} == {results[0].local_port}


def test_stale_pooled_connection_is_found_closed_before_reuse(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """The server closed the idle kept-alive connection before the next transfer: the pool's
    liveness check sees it, nothing is sent on it, the transfer is OK on a new one."""
    server = serve(stale_after_first(HELLO))
    first, _ = fetch(server.url())
    assert first.result == Code.OK
    assert server.wait_for(lambda: server.accepted == 1 and server.active == 0)
    heads: list[str] = []
    second, body = fetch(server.url(), debug_function=lambda kind, text: heads.append(kind))
    assert (second.result, body, second.error) == (Code.OK, HELLO, "")
    assert second.num_connects == 1
    assert server.accepted == 2
    assert heads.count(InfoType.HEADER_OUT) == 1, "the request went out on the dead connection"


def test_liveness_of_a_pooled_connection(serve: Callable[[Server], Server]) -> None:
    """is_alive(): an open, quiet connection is alive; one the server closed (EOF) or spoke
    on unasked is not."""
    from hiperfifo.engine.connection import Connection

    def quiet(peer: Peer) -> None:
        peer.hold()

    def closes(peer: Peer) -> None:
        peer.close()

    def speaks(peer: Peer) -> None:
        peer.send(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        peer.hold()

    for handler, alive in ((quiet, True), (closes, False), (speaks, False)):
        server = serve(Server(handler))
        sock = socket.create_connection((server.host, server.port))
        sock.setblocking(False)
        if not alive:  # until the FIN or the bytes are here
            select.select([sock], [], [], 5)
        conn = Connection(("http", server.host, server.port, ""), sock, 0.0)
        assert conn.is_alive() is alive, handler.__name__
        sock.close()


def test_pooled_connection_reset_when_request_arrives_is_retried(
    fetch: Fetch, serve: Callable[[Server], Server]
) -> None:
    """The retry path on a reset: the reused connection is alive, the server reads the
    second request and resets (RST); the request goes again on a fresh connection, OK."""

    def one_answer_per_connection(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n" + HELLO)
            if peer.read_request() is not None:
                peer.reset()

    server = serve(Server(one_answer_per_connection))
    first, _ = fetch(server.url("/1"))
    second, body = fetch(server.url("/2"))
    assert (first.result, second.result, body) == (Code.OK, Code.OK, HELLO), second.error
    assert server.paths() == ["/1", "/2", "/2"]
    assert server.accepted == 2
    assert second.num_connects == 1


def test_connection_closed_silently_after_each_response_serves_a_queue(
    drv: Any, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Each response ends and the server closes without saying so; queued transfers take the
    connection over in the same call (unchecked, being just released): each is retried once
    on a fresh connection, and every one ends OK."""
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n" + HELLO
    server = serve(HTTPServer({"/": raw(body, then="close")}))
    drv.multi.max_total_connections = 1
    easies = drv.perform(*[Easy(server.url("/")) for _ in range(5)])
    assert [(e.result, e.response_code) for e in easies] == [(Code.OK, 200)] * 5
    assert server.accepted == 5
    assert sum(e.num_connects for e in easies) == 5


def test_pooled_connection_closed_when_request_arrives_is_retried(
    fetch: Fetch, serve: Callable[[Server], Server]
) -> None:
    """The server reads the request on the reused connection and closes silently: retried, OK."""
    connections = []

    def handler(peer: Peer) -> None:
        connections.append(peer)
        first_connection = len(connections) == 1
        for n in range(2):
            if peer.read_request() is None:
                return
            if first_connection and n == 1:
                return  # the race: request read, connection closed, nothing answered
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n" + HELLO)

    server = serve(Server(handler))
    first, _ = fetch(server.url("/1"))
    second, body = fetch(server.url("/2"))
    assert (first.result, second.result, body) == (Code.OK, Code.OK, HELLO)
    assert server.accepted == 2
    assert server.paths() == ["/1", "/2", "/2"]


def slow_server(
    serve: Callable[[HTTPServer], HTTPServer], delay: float = 0.1, gauge: Gauge | None = None
) -> HTTPServer:
    return serve(HTTPServer(default=respond(HELLO, delay=delay), gauge=gauge))


def test_max_total_connections_never_exceeded(
    make_driver: Callable[..., Any], serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """With max_total_connections=2, eight slow transfers to two servers never hold more than
    2 connections at once, counted over both servers."""
    both = Gauge()
    a, b = slow_server(serve, gauge=both), slow_server(serve, gauge=both)
    drv = make_driver(max_total_connections=2)
    easies = [Easy((a if i % 2 else b).url(f"/{i}")) for i in range(8)]
    drv.perform(*easies, timeout=20)
    assert [e.result for e in easies] == [Code.OK] * 8
    assert both.peak == 2


def test_max_total_connections_queue_is_first_come_first_served(
    make_driver: Callable[..., Any], serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """With one connection allowed, queued transfers are served in the order they were added."""
    server = slow_server(serve, 0.02)
    drv = make_driver(max_total_connections=1)
    easies = [Easy(server.url(f"/{i}")) for i in range(6)]
    drv.perform(*easies, timeout=20)
    assert [e.result for e in easies] == [Code.OK] * 6
    assert server.paths() == [f"/{i}" for i in range(6)]
    assert (server.peak, server.accepted) == (1, 1)
    assert [m.easy for m in drv.messages] == easies


def test_max_host_connections_limits_each_host_separately(
    make_driver: Callable[..., Any], serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """max_host_connections=1: one connection per host:port, in FIFO order, hosts in parallel."""
    a, b = slow_server(serve, 0.3), slow_server(serve, 0.3)
    drv = make_driver(max_host_connections=1)
    easies = [Easy(s.url(f"/{i}")) for i in range(3) for s in (a, b)]
    drv.perform(*easies, timeout=20)
    assert [e.result for e in easies] == [Code.OK] * 6
    assert (a.peak, b.peak) == (1, 1)
    assert a.paths() == b.paths() == ["/0", "/1", "/2"]
    both_at_once = [e for e in easies if e.total_time < 0.55]
    assert len(both_at_once) == 2, "the first transfer to each host should run concurrently"


def test_bytes_beyond_content_length_close_the_connection(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Extra bytes after the body (h11's trailing_data) are not parsed as the next response."""
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"
    server = serve(
        HTTPServer(
            {"/extra": raw(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc" + smuggled)},
            default=respond(HELLO),
        )
    )
    first, body = fetch(server.url("/extra"))
    assert (first.result, body) == (Code.OK, b"abc")
    second, body = fetch(server.url("/next"))
    assert (second.result, body) == (Code.OK, HELLO)
    assert second.num_connects == 1
    assert server.accepted == 2


def test_huge_header_block_is_an_error_not_unbounded_buffering(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """A complete 1 MB header block fails at once with RECV_ERROR (56, libcurl's answer)."""
    server = serve(HTTPServer(default=huge_headers(1_000_000)))
    easy, body = fetch(server.url(), timeout_ms=5000)
    assert easy.result == Code.RECV_ERROR, f"{easy.result!r} {easy.error!r}"
    assert body == b""
    assert easy.total_time < 4


def test_endless_header_block_fails_before_the_timeout(
    fetch: Fetch, serve: Callable[[Server], Server]
) -> None:
    """Header lines that never end fail on the size bound with 56 (as 1 MB of headers does,
    libcurl: CURLE_RECV_ERROR for "Too large response headers"), not on timeout_ms."""

    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\n")
        while peer.send(b"X-Again: " + b"y" * 1000 + b"\r\n"):
            pass

    server = serve(Server(handler))
    easy, _ = fetch(server.url(), timeout_ms=5000)
    assert easy.result == Code.RECV_ERROR, f"{easy.result!r} {easy.error!r}"
    assert "header" in easy.error.lower()
    assert easy.total_time < 4


def test_chunk_size_of_2_pow_80_is_an_error(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """A chunk size of ffffffffffffffffffff (h11 accepts it) fails at once with RECV_ERROR
    (56, libcurl's answer to a bad chunk size), not at timeout_ms."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc"
    server = serve(HTTPServer(default=raw(head, then="hold")))
    easy, _ = fetch(server.url(), timeout_ms=5000)
    assert easy.result == Code.RECV_ERROR, easy.error
    assert easy.total_time < 4


def test_header_function_gets_status_line_and_each_header_line(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """header_function sees the status line, then every header line in order, as sent."""
    sent = [("Content-Type", "text/plain"), ("X-One", "1"), ("Set-Cookie", "a=b; Path=/")]
    server = serve(HTTPServer(default=respond(HELLO, headers=sent)))
    lines: list[bytes] = []
    easy, body = fetch(server.url(), header_function=lines.append)
    assert (easy.result, body) == (Code.OK, HELLO)
    got = [line.rstrip(b"\r\n") for line in lines if line.strip()]
    assert got[0] == b"HTTP/1.1 200 OK"
    expected = [b"Content-Length: 13"] + [f"{k}: {v}".encode() for k, v in sent]
    assert got[1:] == expected
    assert all(isinstance(line, bytes) for line in lines)


def test_header_function_sees_every_response_of_a_redirect(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """Following a redirect, header_function gets both status lines, 302 first."""
    lines: list[bytes] = []
    easy, body = fetch(
        http_server.url("/redirect"), follow_location=True, header_function=lines.append
    )
    assert (easy.result, body) == (Code.OK, HELLO)
    status = [line.rstrip(b"\r\n") for line in lines if line.startswith(b"HTTP/")]
    assert status == [b"HTTP/1.1 302 Found", b"HTTP/1.1 200 OK"]


def test_redirect_followed_on_the_same_connection(fetch: Fetch, http_server: HTTPServer) -> None:
    """follow_location: effective_url is the final URL, redirect_count 1, one connection."""
    easy, body = fetch(http_server.url("/redirect"), follow_location=True)
    assert (easy.result, easy.response_code, body) == (Code.OK, 200, HELLO)
    assert easy.effective_url == http_server.url("/")
    assert easy.redirect_count == 1
    assert 0 < easy.redirect_time <= easy.total_time
    assert http_server.paths() == ["/redirect", "/"]
    assert http_server.accepted == 1


def test_redirect_not_followed_by_default(fetch: Fetch, http_server: HTTPServer) -> None:
    """Without follow_location a 302 is the result: OK, response_code 302, nothing followed."""
    easy, _ = fetch(http_server.url("/redirect"))
    assert (easy.result, easy.response_code, easy.redirect_count) == (Code.OK, 302, 0)
    assert http_server.paths() == ["/redirect"]


def test_getinfo_fields_after_a_get(fetch: Fetch, http_server: HTTPServer) -> None:
    """After a GET, easy answers what curl_easy_getinfo would."""
    url = http_server.url("/")
    easy, _ = fetch(url)
    assert easy.result == Code.OK
    assert easy.error == ""
    assert easy.response_code == 200
    assert easy.http_version == "1.1"
    assert easy.effective_url == url
    assert easy.redirect_count == 0
    assert easy.size_download == easy.content_length == len(HELLO)
    assert (easy.primary_ip, easy.primary_port) == ("127.0.0.1", http_server.port)
    assert easy.local_port == http_server.requests[0].client_port
    assert easy.num_connects == 1


def test_timings_are_monotone(fetch: Fetch, http_server: HTTPServer) -> None:
    """namelookup <= connect <= pretransfer <= starttransfer <= total, all >= 0."""
    easy, _ = fetch(http_server.url("/slow"))
    times = [
        easy.namelookup_time,
        easy.connect_time,
        easy.pretransfer_time,
        easy.starttransfer_time,
        easy.total_time,
    ]
    assert times == sorted(times)
    assert times[0] >= 0
    assert easy.starttransfer_time >= 0.15, "the server waited 0.2 s before answering"
    assert easy.total_time < 5
    assert easy.appconnect_time == 0.0  # plain HTTP: no TLS handshake


def test_timings_of_a_reused_connection_are_monotone(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """On a reused connection the timings stay ordered (connect phases are near zero)."""
    fetch(http_server.url())
    easy, _ = fetch(http_server.url())
    assert easy.num_connects == 0
    times = [
        easy.namelookup_time,
        easy.connect_time,
        easy.pretransfer_time,
        easy.starttransfer_time,
        easy.total_time,
    ]
    assert times == sorted(times)


def test_progress_function_reports_download_totals(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """The progress callback gets (dltotal, dlnow, ultotal, ulnow); the last dlnow is the size."""
    body = b"z" * 200_000
    server = serve(HTTPServer(default=respond(body)))
    calls: list[tuple[int, int, int, int]] = []
    easy, got = fetch(server.url(), progress_function=lambda *a: calls.append(a))
    assert (easy.result, got) == (Code.OK, body)
    assert calls
    dlnow = [c[1] for c in calls]
    assert dlnow == sorted(dlnow)
    assert calls[-1][:2] == (len(body), len(body))


def test_concurrent_transfers_each_get_their_own_body(
    drv: Any, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Twenty concurrent transfers on one multi each receive exactly their own response."""
    server = serve(HTTPServer(default=_echo_path))
    bodies = [bytearray() for _ in range(20)]
    easies = [Easy(server.url(f"/{i}"), write_function=bodies[i].extend) for i in range(20)]
    drv.perform(*easies, timeout=20)
    assert [e.result for e in easies] == [Code.OK] * 20
    assert [bytes(b) for b in bodies] == [f"/{i}".encode() * 1000 for i in range(20)]


def _echo_path(request: Request, peer: Peer) -> bool:
    return respond(request.target.encode() * 1000)(request, peer)


def test_max_connects_bounds_the_idle_cache(
    make_driver: Callable[..., Any], serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """max_connects=1: of two idle connections one is closed, so the next pair opens one more."""
    server = slow_server(serve, 0.05)
    drv = make_driver(max_connects=1)
    drv.perform(Easy(server.url("/a")), Easy(server.url("/b")), timeout=20)
    assert server.accepted == 2
    assert server.wait_for(lambda: server.active == 1), "one idle connection closed"
    pair = drv.perform(Easy(server.url("/c")), Easy(server.url("/d")), timeout=20)
    assert [e.result for e in pair] == [Code.OK, Code.OK]
    assert sorted(e.num_connects for e in pair) == [0, 1]
    assert server.accepted == 3


def test_server_saying_connection_close_is_not_reused(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """A response with Connection: close is complete (OK) and the next transfer connects anew."""
    server = serve(HTTPServer(default=respond(HELLO, then="close")))
    first, _ = fetch(server.url())
    second, body = fetch(server.url())
    assert (first.result, second.result, body) == (Code.OK, Code.OK, HELLO)
    assert [first.num_connects, second.num_connects] == [1, 1]
    assert server.accepted == 2


def test_many_sequential_transfers_do_not_leak_connections(
    drv: Any, http_server: HTTPServer
) -> None:
    """Fifty transfers one after another use one connection and leave no socket watched."""
    for _ in range(50):
        easy = Easy(http_server.url())
        drv.perform(easy)
        assert easy.result == Code.OK
    assert http_server.accepted == 1
    assert drv.watched == {}


def test_two_multis_have_separate_pools(http_server: HTTPServer) -> None:
    """Each multi has its own connection cache: a second multi does not reuse the first's."""
    from hiperfifo.engine.testing import SelectorDriver

    one, two = SelectorDriver(), SelectorDriver()
    try:
        a, b = Easy(http_server.url()), Easy(http_server.url())
        one.perform(a)
        two.perform(b)
    finally:
        one.close()
        two.close()
    assert (a.result, b.result) == (Code.OK, Code.OK)
    assert (a.num_connects, b.num_connects) == (1, 1)
    assert http_server.accepted == 2


def test_post_on_a_stale_pooled_connection_is_sent_once_on_a_fresh_one(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """A POST whose pooled connection the server closed arrives whole, once, on a new one."""
    server = serve(HTTPServer(default=echo_and_hang_up))
    fetch(server.url("/first"))
    assert server.wait_for(lambda: server.active == 0)
    easy, body = fetch(server.url("/post"), method="POST", body=b"exactly once")
    assert (easy.result, body) == (Code.OK, b"exactly once")
    assert [r.body for r in server.requests if r.target == "/post"] == [b"exactly once"]
    assert server.accepted == 2


def echo_and_hang_up(request: Request, peer: Peer) -> bool:
    """Answer with the request body, then close without saying Connection: close."""
    respond(request.body, then="hangup")(request, peer)
    return False


def test_debug_function_gets_request_and_response_heads_of_every_hop(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """As curl -v: each request head as sent (HEADER_OUT) and each response head as received
    (HEADER_IN), redirects included, between the state changes (STATE)."""
    calls: list[tuple[InfoType, str]] = []
    easy, _ = fetch(
        http_server.url("/redirect"),
        follow_location=True,
        headers=[("Authorization", "Basic c2VjcmV0")],
        debug_function=lambda kind, text: calls.append((kind, text)),
    )
    assert easy.result == Code.OK
    heads = [(kind, text) for kind, text in calls if kind is not InfoType.STATE]
    assert [kind for kind, _ in heads] == [InfoType.HEADER_OUT, InfoType.HEADER_IN] * 2
    out, into = heads[0][1], heads[1][1]
    assert out.startswith("GET /redirect HTTP/1.1\r\n")
    assert f"\r\nHost: {http_server.netloc}\r\n" in out
    assert "Authorization: Basic c2VjcmV0" in out  # the engine hides nothing: the log does
    assert out.endswith("\r\n\r\n")
    assert into.startswith("HTTP/1.1 302 ")
    assert "\r\nLocation: /\r\n" in into
    assert heads[2][1].startswith("GET / HTTP/1.1\r\n")
    assert heads[3][1].startswith("HTTP/1.1 200 ")
    assert any(kind is InfoType.STATE and " -> " in text for kind, text in calls)
