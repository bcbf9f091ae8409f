"""HTTP/2 in the engine: ALPN, multiplexing, PIPEWAIT, GOAWAY, resets, limits, callbacks.

Against h2's own SERVER side in the test (tests/h2_servers.py: always runs,
and misbehaves on purpose) and Debian's nginx with http_v2, whose access log
($connection $connection_requests $server_protocol) is the ground truth of
which requests shared a connection (skipped, naming the package, without it).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import h2.errors
import pytest
import trustme
from h2_servers import (
    NGINX_HINT,
    H2Nginx,
    H2Peer,
    H2Request,
    H2Server,
    answer,
    echo,
    endless_continuation,
    goaway_after,
    h2_context,
    hpack_bomb,
    huge_headers,
    ping_flood,
    reset,
    slow,
)
from servers import HTTPServer, respond

from hiperfifo.engine import POLL_REMOVE, Code, Easy

BODY = b"h2 body\n" * 128  # 1 KiB


@pytest.fixture
def h2_server(serve: Callable[[Any], Any], ca: trustme.CA) -> Callable[..., H2Server]:
    """Start an in-test HTTP/2 server (TLS, ALPN h2; tls=False: h2c) with these routes."""

    def start(routes: dict[str, Any], *, tls: bool = True) -> H2Server:
        context = h2_context(ca) if tls else None
        return serve(H2Server(routes, ssl_context=context))

    return start


def fetch_all(driver: Any, urls: list[str], timeout: float = 30.0, **options: Any) -> list[Any]:
    """Run one Easy per URL at once; each easy gets `.body` (bytes) and `.lines`."""
    easies = []
    for url in urls:
        body = bytearray()
        lines: list[bytes] = []
        easy = Easy(url, write_function=body.extend, header_function=lines.append, **options)
        easy.private = (body, lines)
        easies.append(easy)
    driver.perform(*easies, timeout=timeout)
    return easies


def body_of(easy: Any) -> bytes:
    return bytes(easy.private[0])


# --- negotiation ----------------------------------------------------------------------


def test_https_negotiates_h2_by_alpn(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """ALPN h2: the transfer runs over HTTP/2; the header callback sees `HTTP/2 200`."""
    server = h2_server({"/": answer(BODY, headers=[("x-test", "yes")])})
    (easy,) = fetch_all(drv, [server.url("/")], ca_file=ca_file)
    assert easy.result is Code.OK, easy.error
    assert easy.http_version == "2"
    assert easy.response_code == 200
    assert body_of(easy) == BODY
    assert easy.private[1][0] == b"HTTP/2 200 \r\n"
    assert b"x-test: yes\r\n" in easy.private[1]
    assert server.alpn == ["h2"]
    (request,) = server.requests
    assert request.header(":authority") == server.netloc
    assert request.header("accept") == "*/*"


def test_http_version_11_offers_only_http11(
    serve: Callable[[Any], Any], ca: trustme.CA, drv: Any, ca_file: str
) -> None:
    """http_version="1.1" offers ALPN http/1.1 alone, to a server that would take h2."""
    context = h2_context(ca, alpn=("h2", "http/1.1"))
    server = serve(HTTPServer({"/": respond(BODY)}, ssl_context=context))
    (easy,) = fetch_all(drv, [server.url("/")], ca_file=ca_file, http_version="1.1")
    assert easy.result is Code.OK, easy.error
    assert easy.http_version == "1.1"
    assert server.alpn == ["http/1.1"]


def test_server_without_h2_gets_http11(
    serve: Callable[[Any], Any], ca: trustme.CA, drv: Any, ca_file: str
) -> None:
    """The default offers h2 and http/1.1; a server that picks http/1.1 gets HTTP/1.1."""
    context = h2_context(ca, alpn=("http/1.1",))
    server = serve(HTTPServer({"/": respond(BODY)}, ssl_context=context))
    easies = fetch_all(drv, [server.url("/")] * 3, ca_file=ca_file)
    assert [(e.result, e.http_version) for e in easies] == [(Code.OK, "1.1")] * 3


def test_prior_knowledge_speaks_h2c(h2_server: Callable[..., H2Server], drv: Any) -> None:
    """http_version="2-prior-knowledge" on http:// speaks HTTP/2 at once (curl's option)."""
    server = h2_server({"/": answer(BODY)}, tls=False)
    easies = fetch_all(drv, [server.url("/")] * 5, http_version="2-prior-knowledge")
    assert [(e.result, e.http_version) for e in easies] == [(Code.OK, "2")] * 5
    assert server.accepted == 1


def test_plain_http_stays_http11_by_default(http_server: HTTPServer, drv: Any) -> None:
    """http:// without prior knowledge is HTTP/1.1, as libcurl."""
    (easy,) = fetch_all(drv, [http_server.url("/")])
    assert (easy.result, easy.http_version) == (Code.OK, "1.1")


@pytest.mark.parametrize("value", ["3", "2.0", "", "h2", 2, None])
def test_bad_http_version_is_refused_at_once(value: object) -> None:
    """Anything but "2", "1.1" or "2-prior-knowledge" is an error where it is set."""
    with pytest.raises((ValueError, TypeError), match="http_version"):
        Easy("https://example.org/", http_version=value)  # type: ignore[arg-type]


# --- multiplexing -----------------------------------------------------------------------


def test_transfers_to_one_origin_share_one_connection(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """50 transfers added at once: one TLS connection (they wait for its ALPN: PIPEWAIT)."""
    server = h2_server({"/": answer(BODY)})
    easies = fetch_all(drv, [server.url(f"/?{i}") for i in range(50)], ca_file=ca_file)
    assert all(e.result is Code.OK for e in easies), {e.error for e in easies}
    assert all(body_of(e) == BODY for e in easies)
    assert server.accepted == 1
    assert sorted(sid for _port, sid, _path in server.streams()) == list(range(1, 101, 2))
    assert sum(e.num_connects for e in easies) == 1
    assert {e.local_port for e in easies} == {easies[0].local_port}


def test_slow_streams_run_at_once_on_one_connection(
    h2_server: Callable[..., H2Server], make_driver: Callable[..., Any], ca_file: str
) -> None:
    """max_host_connections=1 and 10 slow answers: all 10 in flight together, not in turn."""
    server = h2_server({"/slow": slow(b"late", 0.5)})
    driver = make_driver(max_host_connections=1)
    easies = fetch_all(driver, [server.url("/slow")] * 10, ca_file=ca_file)
    assert all(e.result is Code.OK for e in easies), {e.error for e in easies}
    assert server.accepted == 1
    # every request was out before the first answer came back
    assert max(e.pretransfer_time for e in easies) < min(e.total_time for e in easies)


def test_multiplex_off_opens_a_connection_per_transfer(
    h2_server: Callable[..., H2Server], make_driver: Callable[..., Any], ca_file: str
) -> None:
    """Multi(multiplex=False): one stream per connection at a time (CURLMOPT_PIPELINING 0)."""
    server = h2_server({"/slow": slow(b"late", 0.3)})
    driver = make_driver(multiplex=False)
    easies = fetch_all(driver, [server.url("/slow")] * 4, ca_file=ca_file)
    assert all(e.result is Code.OK and e.http_version == "2" for e in easies)
    assert server.accepted == 4


def test_max_concurrent_streams_of_the_multi(
    h2_server: Callable[..., H2Server], make_driver: Callable[..., Any], ca_file: str
) -> None:
    """Multi(max_concurrent_streams=3) and max_host_connections=1: 3 streams at a time."""
    server = h2_server({"/slow": slow(b"late", 0.3)})
    driver = make_driver(max_concurrent_streams=3, max_host_connections=1)
    easies = fetch_all(driver, [server.url("/slow")] * 6, ca_file=ca_file)
    assert all(e.result is Code.OK for e in easies)
    assert server.accepted == 1
    first, second = sorted(easies, key=lambda e: e.total_time)[:3], easies
    assert len(second) == 6
    assert max(e.pretransfer_time for e in first) < min(e.total_time for e in first)


def test_one_socket_announced_once_for_all_streams(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """The socket callback: the connection's fd announced once, REMOVEd once, not per stream."""
    server = h2_server({"/": answer(BODY)})
    easies = fetch_all(drv, [server.url("/")] * 20, ca_file=ca_file)
    assert all(e.result is Code.OK for e in easies)
    sockets = [c for c in drv.calls if c[0] == "socket"]
    fds = {fd for _kind, _easy, fd, _what in sockets}
    per_fd = {fd: [what for _k, _e, f, what in sockets if f == fd] for fd in fds}
    assert len(per_fd) == 1  # one connection, one fd (a numeric address: no resolver)
    (whats,) = per_fd.values()
    assert whats.count(POLL_REMOVE) == 1
    assert whats[-1] == POLL_REMOVE
    assert len(whats) < 10  # not one announcement per stream (20 streams)
    assert not drv.watched


# --- GOAWAY, resets, connection errors --------------------------------------------------


def test_goaway_streams_above_last_id_are_retried(
    h2_server: Callable[..., H2Server], make_driver: Callable[..., Any], ca_file: str
) -> None:
    """GOAWAY after 3 streams: the other transfers go to a new connection, none fails."""
    server = h2_server({"/": goaway_after(3, BODY)})
    driver = make_driver(max_host_connections=1)
    easies = fetch_all(driver, [server.url(f"/?{i}") for i in range(9)], ca_file=ca_file)
    assert [e.result for e in easies] == [Code.OK] * 9, {e.error for e in easies}
    assert all(body_of(e) == BODY for e in easies)
    assert server.accepted == 3
    ports = [port for port, _sid, _path in server.streams()]
    assert sorted(ports.count(p) for p in set(ports)) >= [3, 3, 3]


def test_goaway_while_a_stream_below_last_id_runs_then_it_ends(
    h2_server: Callable[..., H2Server], make_driver: Callable[..., Any], ca_file: str
) -> None:
    """GOAWAY read while the last processed stream still runs: the refused transfers wait
    (max_host_connections=1, the GOAWAY'd connection still counts); when that stream ends
    and the connection closes, its slot goes to them (it was lost: they waited forever)."""
    server = h2_server({"/": goaway_after(3, BODY, last_after=0.5)})
    driver = make_driver(max_host_connections=1)
    easies = fetch_all(
        driver, [server.url(f"/?{i}") for i in range(9)], ca_file=ca_file, timeout=15.0
    )
    assert [e.result for e in easies] == [Code.OK] * 9, {e.error for e in easies}
    assert all(body_of(e) == BODY for e in easies)
    assert server.accepted == 3
    ports = [port for port, _sid, _path in server.streams()]
    assert sorted(ports.count(p) for p in set(ports)) >= [3, 3, 3]


def test_rst_stream_fails_only_that_transfer(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """RST_STREAM is HTTP2_STREAM (92) for its transfer; the others on the connection finish."""
    server = h2_server({"/": answer(BODY), "/reset": reset(h2.errors.ErrorCodes.INTERNAL_ERROR)})
    urls = [server.url("/"), server.url("/reset"), server.url("/")]
    good1, bad, good2 = fetch_all(drv, urls, ca_file=ca_file)
    assert (bad.result, bad.http_version) == (Code.HTTP2_STREAM, "2")
    assert "INTERNAL_ERROR" in bad.error
    assert (good1.result, good2.result) == (Code.OK, Code.OK)
    assert server.accepted == 1


def test_refused_stream_is_retried(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """REFUSED_STREAM: the server did nothing with it; retried once on a fresh connection."""
    refused: list[int] = []

    def refuse_once(peer: H2Peer, request: H2Request) -> None:
        if not refused:
            refused.append(request.stream_id)
            peer.reset(request.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        else:
            peer.respond(request.stream_id, BODY)

    server = h2_server({"/": refuse_once})
    (easy,) = fetch_all(drv, [server.url("/")], ca_file=ca_file)
    assert easy.result is Code.OK, easy.error
    assert refused
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("route", "needle"),
    [
        (huge_headers(), "Oversized header block"),
        (hpack_bomb(), "Oversized header block"),
        (endless_continuation(), "continuation"),
        (ping_flood(), "flood"),
    ],
    ids=["header-list-150k", "hpack-bomb", "endless-continuation", "ping-flood"],
)
def test_connection_errors_fail_every_stream_with_16(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str, route: Any, needle: str
) -> None:
    """A limit broken on the connection: HTTP2 (16) for every stream on it, socket closed."""
    server = h2_server({"/bad": route, "/slow": slow(BODY, 2.0)})
    slow_one, bad = fetch_all(drv, [server.url("/slow"), server.url("/bad")], ca_file=ca_file)
    assert bad.result is Code.HTTP2, bad.error
    assert needle.lower() in bad.error.lower()
    assert slow_one.result is Code.HTTP2
    assert server.accepted == 1
    assert not drv.watched


# --- one stream's trouble stays on its stream -------------------------------------------


def test_remove_handle_resets_only_its_stream(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """remove_handle mid-transfer: RST_STREAM(CANCEL) for it; the others finish on the socket."""
    server = h2_server({"/slow": slow(BODY, 0.5), "/": answer(BODY)})
    removed = Easy(server.url("/slow"), ca_file=ca_file)
    others = [Easy(server.url("/slow"), ca_file=ca_file) for _ in range(3)]
    for easy in [removed, *others]:
        drv.multi.add_handle(easy)
    deadline = time.monotonic() + 10
    while len(server.requests) < 4 and time.monotonic() < deadline:
        drv.step(0.05)
    assert len(server.requests) == 4
    drv.multi.remove_handle(removed)
    messages = drv.run(timeout=10)
    assert {m.easy for m in messages} == set(others)
    assert all(m.result is Code.OK for m in messages)
    assert server.wait_for(lambda: bool(server.client_resets))
    assert len(server.client_resets) == 1
    assert server.accepted == 1


def test_refusing_write_callback_fails_only_its_stream(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """A write callback that refuses: 23 for its transfer, the others go on (same socket)."""
    server = h2_server({"/": answer(BODY)})
    refusing = Easy(server.url("/"), ca_file=ca_file, write_function=lambda data: 0)
    fine = [Easy(server.url("/"), ca_file=ca_file) for _ in range(3)]
    drv.perform(refusing, *fine, timeout=20)
    assert refusing.result is Code.WRITE_ERROR
    assert [e.result for e in fine] == [Code.OK] * 3
    assert server.accepted == 1


def test_timeout_of_one_stream(h2_server: Callable[..., H2Server], drv: Any, ca_file: str) -> None:
    """timeout_ms on a stream that never ends: 28 for it; a later transfer reuses the socket."""
    server = h2_server({"/never": slow(BODY, 30.0), "/": answer(BODY)})
    (stuck,) = fetch_all(drv, [server.url("/never")], ca_file=ca_file, timeout_ms=300)
    assert stuck.result is Code.OPERATION_TIMEDOUT
    (after,) = fetch_all(drv, [server.url("/")], ca_file=ca_file)
    assert after.result is Code.OK
    assert after.num_connects == 0  # the same connection, still good
    assert server.accepted == 1


# --- everything else unchanged over HTTP/2 ----------------------------------------------


def test_post_body_and_redirect_on_the_same_connection(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """A 200 KB POST goes out paced by the windows; a redirect follows on the same socket."""

    def redirect(peer: H2Peer, request: H2Request) -> None:
        fields = [(":status", "302"), ("location", "/echo"), ("content-length", "0")]
        peer.conn.send_headers(request.stream_id, fields, end_stream=True)

    server = h2_server({"/echo": echo(), "/go": redirect})
    data = bytes(range(256)) * 800
    (posted,) = fetch_all(drv, [server.url("/echo")], ca_file=ca_file, method="POST", body=data)
    assert posted.result is Code.OK, posted.error
    assert body_of(posted) == data
    (followed,) = fetch_all(drv, [server.url("/go")], ca_file=ca_file, follow_location=True)
    assert followed.result is Code.OK
    assert followed.redirect_count == 1
    assert followed.effective_url == server.url("/echo")
    assert server.accepted == 1


def test_fail_on_error_and_compressed_bodies(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """fail_on_error (22) and accept_encoding (gzip decoded) work as on HTTP/1.1."""
    packed = gzip.compress(BODY)
    server = h2_server(
        {
            "/gz": answer(packed, headers=[("content-encoding", "gzip")]),
            "/missing": answer(b"no", status=404),
        }
    )
    (gz,) = fetch_all(drv, [server.url("/gz")], ca_file=ca_file, accept_encoding="")
    assert gz.result is Code.OK
    assert body_of(gz) == BODY
    assert server.requests[-1].header("accept-encoding")
    (missing,) = fetch_all(drv, [server.url("/missing")], ca_file=ca_file, fail_on_error=True)
    assert (missing.result, missing.response_code) == (Code.HTTP_RETURNED_ERROR, 404)


def test_timings_are_in_order(h2_server: Callable[..., H2Server], drv: Any, ca_file: str) -> None:
    """getinfo timings over HTTP/2 keep libcurl's order."""
    server = h2_server({"/": answer(BODY)})
    (easy,) = fetch_all(drv, [server.url("/")], ca_file=ca_file)
    assert 0 < easy.connect_time <= easy.appconnect_time <= easy.pretransfer_time
    assert easy.pretransfer_time <= easy.starttransfer_time <= easy.total_time
    assert easy.primary_ip == "127.0.0.1"
    assert easy.num_connects == 1


# --- Debian's nginx: the ground truth of its access log -----------------------------------


@pytest.fixture(scope="module")
def nginx(ca: trustme.CA) -> Iterator[H2Nginx]:
    if not H2Nginx.available():
        pytest.skip(NGINX_HINT)
    server = H2Nginx(ca, goaway_after=10).start()
    server.write("1k", BODY)
    server.write("slow/96k", b"s" * 96 * 1024)
    yield server
    server.close()


def new_lines(nginx: H2Nginx, before: int, count: int) -> list[Any]:
    lines = nginx.wait_log(before + count)
    return lines[before:]


def test_nginx_100_gets_one_connection(nginx: H2Nginx, drv: Any, ca_file: str) -> None:
    """100 GETs to one https origin: one TCP connection in nginx's log, every body intact."""
    before = len(nginx.log())
    easies = fetch_all(drv, [nginx.url("/1k")] * 100, ca_file=ca_file)
    assert all(e.result is Code.OK and body_of(e) == BODY for e in easies)
    lines = new_lines(nginx, before, 100)
    assert len(lines) == 100
    assert {line.protocol for line in lines} == {"HTTP/2.0"}
    assert len({line.connection for line in lines}) == 1
    assert sorted(line.connection_requests for line in lines) == list(range(1, 101))


def test_nginx_slow_responses_finish_together(
    nginx: H2Nginx, make_driver: Callable[..., Any], ca_file: str
) -> None:
    """10 slow responses (96 KiB at 64 KiB/s) with max_host_connections=1 overlap in time."""
    before = len(nginx.log())
    driver = make_driver(max_host_connections=1)
    easies = fetch_all(driver, [nginx.url("/slow/96k")] * 10, ca_file=ca_file)
    assert all(e.result is Code.OK and len(body_of(e)) == 96 * 1024 for e in easies)
    assert max(e.pretransfer_time for e in easies) < min(e.total_time for e in easies)
    lines = new_lines(nginx, before, 10)
    assert len({line.connection for line in lines}) == 1


def test_nginx_goaway_after_keepalive_requests(
    nginx: H2Nginx, make_driver: Callable[..., Any], ca_file: str
) -> None:
    """keepalive_requests 10 (GOAWAY after 10 streams): 50 transfers over 5 connections."""
    before = len(nginx.log())
    driver = make_driver(max_host_connections=1)
    url = nginx.url("/1k", port=nginx.goaway_port)
    easies = fetch_all(driver, [url] * 50, ca_file=ca_file)
    assert [e.result for e in easies] == [Code.OK] * 50, {e.error for e in easies}
    lines = new_lines(nginx, before, 50)
    assert len(lines) == 50  # none sent twice
    per_connection = sorted(
        sum(1 for line in lines if line.connection == c) for c in {ln.connection for ln in lines}
    )
    assert per_connection == [10] * 5


def test_nginx_http11_when_asked(nginx: H2Nginx, drv: Any, ca_file: str) -> None:
    """http_version="1.1" to the same nginx: HTTP/1.1 in its log."""
    before = len(nginx.log())
    easies = fetch_all(drv, [nginx.url("/1k")] * 3, ca_file=ca_file, http_version="1.1")
    assert all(e.result is Code.OK and e.http_version == "1.1" for e in easies)
    assert {line.protocol for line in new_lines(nginx, before, 3)} == {"HTTP/1.1"}


def test_nginx_h2c_prior_knowledge(nginx: H2Nginx, drv: Any) -> None:
    """h2c by prior knowledge to nginx's `listen ... http2` port without ssl."""
    before = len(nginx.log())
    url = nginx.url("/1k", port=nginx.h2c_port, scheme="http")
    easies = fetch_all(drv, [url] * 5, http_version="2-prior-knowledge")
    assert all(e.result is Code.OK and e.http_version == "2" for e in easies)
    lines = new_lines(nginx, before, 5)
    assert {line.protocol for line in lines} == {"HTTP/2.0"}
    assert len({line.connection for line in lines}) == 1


def test_idle_connection_that_got_goaway_is_not_reused(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """A GOAWAY that arrives while the connection is idle is read before reuse: a new one."""

    sent = threading.Event()

    def answer_then_goaway(peer: H2Peer, request: H2Request) -> None:
        peer.respond(request.stream_id, BODY)

        def goaway() -> None:
            peer.goaway(request.stream_id)
            sent.set()

        peer.later(0.05, goaway)

    server = h2_server({"/": answer_then_goaway})
    (first,) = fetch_all(drv, [server.url("/")], ca_file=ca_file)
    assert first.result is Code.OK
    assert sent.wait(10)
    (second,) = fetch_all(drv, [server.url("/")], ca_file=ca_file)
    assert second.result is Code.OK, second.error
    assert second.num_connects == 1
    assert server.accepted == 2


def test_idle_connection_closed_by_the_server(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str
) -> None:
    """The server hangs up an idle HTTP/2 connection: the next transfer gets a new one, OK."""

    hung_up = threading.Event()

    def answer_then_hang_up(peer: H2Peer, request: H2Request) -> None:
        peer.respond(request.stream_id, BODY)

        def hang_up() -> None:
            peer.hang_up()
            hung_up.set()

        peer.later(0.05, hang_up)

    server = h2_server({"/": answer_then_hang_up})
    for _ in range(3):
        hung_up.clear()
        (easy,) = fetch_all(drv, [server.url("/")], ca_file=ca_file)
        assert easy.result is Code.OK, easy.error
        assert easy.num_connects == 1
        assert hung_up.wait(10)
    assert server.accepted == 3


def test_idle_http2_connections_count_in_max_connects(
    h2_server: Callable[..., H2Server], make_driver: Callable[..., Any], ca_file: str
) -> None:
    """max_connects bounds idle HTTP/2 connections too: the oldest idle one is closed."""
    first, second = h2_server({"/": answer(BODY)}), h2_server({"/": answer(BODY)})
    driver = make_driver(max_connects=1)
    (a,) = fetch_all(driver, [first.url("/")], ca_file=ca_file)
    (b,) = fetch_all(driver, [second.url("/")], ca_file=ca_file)
    assert (a.result, b.result) == (Code.OK, Code.OK)
    assert first.wait_for(lambda: first.active == 0)  # closed by the client
    assert second.active == 1  # kept for reuse
    (c,) = fetch_all(driver, [second.url("/")], ca_file=ca_file)
    assert (c.result, c.num_connects) == (Code.OK, 0)


def test_h2_inside_a_connect_tunnel(
    h2_server: Callable[..., H2Server], drv: Any, ca_file: str, tmp_path: Any
) -> None:
    """Through an HTTP proxy: CONNECT, then TLS with ALPN h2 inside the tunnel, streams shared."""
    from proxies import start_proxy

    server = h2_server({"/": answer(BODY)})
    proxy = start_proxy("proxy.py", tmp_path)
    try:
        easies = fetch_all(drv, [server.url("/")] * 5, ca_file=ca_file, proxy=proxy.url)
        assert [(e.result, e.http_version) for e in easies] == [(Code.OK, "2")] * 5
        assert all(body_of(e) == BODY for e in easies)
        assert server.accepted == 1
        assert proxy.log().count(f"CONNECT {server.netloc}") == 1
    finally:
        proxy.stop()


def test_idle_http2_connection_gives_way_to_another_host(
    h2_server: Callable[..., H2Server],
    http_server: HTTPServer,
    make_driver: Callable[..., Any],
    ca_file: str,
) -> None:
    """max_total_connections=1: a transfer queued for another host gets the slot of an idle
    HTTP/2 connection (closed to make room), as an idle HTTP/1.1 one would give it."""
    server = h2_server({"/": answer(BODY)})
    driver = make_driver(max_total_connections=1)
    first = Easy(server.url("/"), ca_file=ca_file)
    second = Easy(http_server.url("/"))
    driver.perform(first, second, timeout=20)
    assert (first.result, first.http_version) == (Code.OK, "2")
    assert second.result is Code.OK, second.error
    assert server.wait_for(lambda: server.active == 0)  # closed to make room
