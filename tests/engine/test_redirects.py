"""follow_location against real local servers: hops, methods, limits, schemes, credentials."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trustme
from servers import Request, chunked_response, tls_context
from tls_servers import HttpServer, response

from hiperfifo.engine import Code, Easy
from hiperfifo.engine.testing import SelectorDriver

Answer = bytes | Callable[[Request], bytes]


def routes(table: dict[str, Answer], default: bytes | None = None) -> Callable[[Request], bytes]:
    """An app answering by path (query ignored); HEAD gets the head only."""

    def app(request: Request) -> bytes:
        answer = table.get(request.target.split("?")[0], default)
        if answer is None:
            answer = response(404, b"no route")
        data = answer(request) if callable(answer) else answer
        if request.method == "HEAD":
            data = data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        return data

    return app


def moved(location: str, status: int = 302, body: bytes = b"redirect body") -> bytes:
    return response(status, body, [("Location", location)])


FINAL = response(200, b"final body")
Fetch = Callable[..., tuple[Easy, bytes]]


def test_without_follow_location_a_302_is_the_result(fetch: Fetch) -> None:
    """Not following: OK with response_code 302, its body delivered, nothing else fetched."""
    with HttpServer(routes({"/start": moved("/final"), "/final": FINAL})) as srv:
        easy, body = fetch(srv.url("/start"))
    assert (easy.result, easy.response_code) == (Code.OK, 302)
    assert body == b"redirect body"
    assert easy.effective_url == srv.url("/start")
    assert easy.redirect_count == 0
    assert [r.target for r in srv.requests] == ["/start"]


def test_follows_absolute_and_relative_locations(fetch: Fetch) -> None:
    """Absolute, relative, dot-dot and root-relative Locations resolve like a browser's."""
    srv: HttpServer
    table: dict[str, Answer] = {
        "/a": lambda _r: moved(srv.url("/b/c"), 301),
        "/b/c": moved("d?x=1", 302),
        "/b/d": moved("../e", 303),
        "/e": moved("/f", 307),
        "/f": FINAL,
    }
    with HttpServer(routes(table)) as srv:
        easy, body = fetch(srv.url("/a"), follow_location=True)
    assert easy.result is Code.OK, easy.error
    assert [r.target for r in srv.requests] == ["/a", "/b/c", "/b/d?x=1", "/e", "/f"]
    assert easy.response_code == 200
    assert easy.effective_url == srv.url("/f")
    assert easy.redirect_count == 4
    assert body == b"final body"


def test_redirect_bodies_are_not_delivered(fetch: Fetch) -> None:
    """Bodies of followed redirects (Content-Length and chunked) never reach write_function."""
    table: dict[str, Answer] = {
        "/1": moved("/2", body=b"FIRST-REDIRECT-BODY" * 100),
        "/2": chunked_response([b"SECOND-", b"REDIRECT"], [("Location", "/3")]).replace(
            b"200 OK", b"302 Found"
        ),
        "/3": FINAL,
    }
    headers: list[bytes] = []
    with HttpServer(routes(table)) as srv:
        easy, body = fetch(srv.url("/1"), follow_location=True, header_function=headers.append)
    assert easy.result is Code.OK, easy.error
    assert body == b"final body"
    assert easy.redirect_count == 2
    assert sum(line.startswith(b"HTTP/1.1 ") for line in headers) == 3


def test_effective_url_after_a_redirect_is_normalised(fetch: Fetch) -> None:
    """An absolute Location with dot segments: the hop goes to the resolved path and
    effective_url shows it so (libcurl parses every Location with its URL API)."""
    srv: HttpServer
    table: dict[str, Answer] = {"/a": lambda _r: moved(srv.url("/x/../y/./f")), "/y/f": FINAL}
    with HttpServer(routes(table)) as srv:
        easy, body = fetch(srv.url("/a"), follow_location=True)
    assert (easy.result, body) == (Code.OK, b"final body")
    assert [r.target for r in srv.requests] == ["/a", "/y/f"]
    assert easy.effective_url == srv.url("/y/f")


def test_redirect_info_filled(fetch: Fetch) -> None:
    """redirect_time is > 0 and within total_time; same-host hops reuse one connection."""
    table: dict[str, Answer] = {"/1": moved("/2"), "/2": moved("/3"), "/3": FINAL}
    with HttpServer(routes(table)) as srv:
        easy, _ = fetch(srv.url("/1"), follow_location=True)
    assert easy.result is Code.OK, easy.error
    assert easy.redirect_count == 2
    assert 0 < easy.redirect_time <= easy.total_time
    assert easy.num_connects == 1
    assert srv.accepted == 1


def test_redirect_that_closes_its_connection(fetch: Fetch) -> None:
    """A redirect answered with Connection: close: the next hop opens a new connection."""
    closing = response(302, b"bye", [("Location", "/final"), ("Connection", "close")])
    with HttpServer(routes({"/start": closing, "/final": FINAL})) as srv:
        easy, body = fetch(srv.url("/start"), follow_location=True)
    assert easy.result is Code.OK, easy.error
    assert body == b"final body"
    assert easy.num_connects == 2
    assert srv.accepted == 2


def test_redirect_loop_stops_at_max_redirs(fetch: Fetch) -> None:
    """A 302 to itself with max_redirs=3: TOO_MANY_REDIRECTS after 4 requests, as curl."""
    with HttpServer(routes({"/loop": moved("/loop")})) as srv:
        easy, body = fetch(srv.url("/loop"), follow_location=True, max_redirs=3)
    assert easy.result is Code.TOO_MANY_REDIRECTS
    assert easy.error == "Maximum (3) redirects followed"
    assert easy.redirect_count == 3
    assert len(srv.requests) == 4
    assert body == b""


def test_max_redirs_zero_refuses_the_first_redirect(fetch: Fetch) -> None:
    """max_redirs=0 with follow_location: the first redirect is already too many (47)."""
    with HttpServer(routes({"/start": moved("/final"), "/final": FINAL})) as srv:
        easy, _ = fetch(srv.url("/start"), follow_location=True, max_redirs=0)
    assert easy.result is Code.TOO_MANY_REDIRECTS
    assert [r.target for r in srv.requests] == ["/start"]


def hops(count: int) -> Callable[[Request], bytes]:
    """/n redirects to /n+1 until /count, which answers 200."""

    def app(request: Request) -> bytes:
        n = int(request.target.strip("/"))
        return FINAL if n >= count else moved(f"/{n + 1}")

    return app


def test_default_max_redirs_is_thirty(fetch: Fetch) -> None:
    """libcurl's default: 30 redirects are followed, the 31st is TOO_MANY_REDIRECTS."""
    with HttpServer(hops(30)) as srv:
        ok, _ = fetch(srv.url("/0"), follow_location=True)
    with HttpServer(hops(31)) as srv:
        too_many, _ = fetch(srv.url("/0"), follow_location=True)
    assert (ok.result, ok.redirect_count) == (Code.OK, 30)
    assert (too_many.result, too_many.redirect_count) == (Code.TOO_MANY_REDIRECTS, 30)


def test_max_redirs_minus_one_is_unlimited(fetch: Fetch) -> None:
    """CURLOPT_MAXREDIRS -1 means no limit: a 40-hop chain ends OK."""
    with HttpServer(hops(40)) as srv:
        easy, body = fetch(srv.url("/0"), follow_location=True, max_redirs=-1)
    assert easy.result is Code.OK, easy.error
    assert easy.redirect_count == 40
    assert body == b"final body"


@pytest.mark.parametrize(
    ("status", "method", "then_method", "body_kept"),
    [
        (301, "POST", "GET", False),
        (302, "POST", "GET", False),
        (303, "POST", "GET", False),
        (303, "PUT", "GET", False),
        (303, "HEAD", "HEAD", False),
        (307, "POST", "POST", True),
        (307, "PUT", "PUT", True),
        (308, "POST", "POST", True),
    ],
)
def test_redirect_method_and_body(
    fetch: Fetch, status: int, method: str, then_method: str, body_kept: bool
) -> None:
    """301/302 turn POST into GET, 303 turns all but HEAD into GET, 307/308 keep both."""
    table = {"/start": moved("/final", status), "/final": FINAL}
    upload = None if method == "HEAD" else b"field=value"
    with HttpServer(routes(table)) as srv:
        easy, _ = fetch(srv.url("/start"), follow_location=True, method=method, body=upload)
    assert easy.result is Code.OK, easy.error
    first, second = srv.requests
    assert (first.method, first.body) == (method, upload or b"")
    assert second.method == then_method
    if body_kept:
        assert second.body == upload
        assert second.header("content-length") == str(len(upload or b""))
    else:
        assert second.body == b""
        assert second.header("content-length") is None


@pytest.mark.parametrize(
    "location", ["ftp://127.0.0.1/file", "file:///etc/passwd", "gopher://127.0.0.1/"]
)
def test_redirect_to_other_schemes_refused(fetch: Fetch, location: str) -> None:
    """Only http and https are followed: anything else is UNSUPPORTED_PROTOCOL (1)."""
    with HttpServer(routes({"/start": moved(location)})) as srv:
        easy, body = fetch(srv.url("/start"), follow_location=True)
    assert easy.result is Code.UNSUPPORTED_PROTOCOL
    assert location.split(":")[0] in easy.error
    assert body == b""
    assert len(srv.requests) == 1


@pytest.mark.parametrize(
    ("location", "arrives_as"),
    [
        (b"/a b?c d", "/a%20b?c%20d"),
        (b"/\xc3\xbc", "/%c3%bc"),
        (b"/f?q=1#fragment", "/f?q=1"),
    ],
    ids=["space", "utf8", "fragment"],
)
def test_location_is_encoded_like_curl(fetch: Fetch, location: bytes, arrives_as: str) -> None:
    """Spaces and raw UTF-8 in a Location are percent-encoded as curl does; no fragment sent."""
    raw = b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\nLocation: " + location + b"\r\n\r\n"
    table: dict[str, Answer] = {"/start": raw}
    with HttpServer(routes(table, default=FINAL)) as srv:
        easy, body = fetch(srv.url("/start"), follow_location=True)
    assert easy.result is Code.OK, easy.error
    assert body == b"final body"
    assert [r.target.lower() for r in srv.requests] == ["/start", arrives_as]


def test_302_without_location_is_the_result(fetch: Fetch) -> None:
    """A redirect status with no Location header ends the transfer OK with its body."""
    with HttpServer(routes({"/start": response(302, b"nowhere to go")})) as srv:
        easy, body = fetch(srv.url("/start"), follow_location=True)
    assert (easy.result, easy.response_code, easy.redirect_count) == (Code.OK, 302, 0)
    assert body == b"nowhere to go"


SECRETS = (("Authorization", "Bearer secret"), ("Cookie", "session=secret"))


def test_credentials_kept_on_the_same_host(fetch: Fetch) -> None:
    """Authorization and Cookie headers go with a redirect that stays on the same origin."""
    with HttpServer(routes({"/start": moved("/final"), "/final": FINAL})) as srv:
        easy, _ = fetch(srv.url("/start"), follow_location=True, headers=SECRETS)
    assert easy.result is Code.OK, easy.error
    for request in srv.requests:
        assert request.header("authorization") == "Bearer secret"
        assert request.header("cookie") == "session=secret"


def test_credentials_not_sent_to_another_host(fetch: Fetch) -> None:
    """127.0.0.1 → localhost: a user's Authorization and Cookie are not sent to the new host."""
    srv: HttpServer
    table: dict[str, Answer] = {
        "/start": lambda _r: moved(srv.url("/final", host="localhost")),
        "/final": FINAL,
    }
    with HttpServer(routes(table)) as srv:
        easy, body = fetch(srv.url("/start"), follow_location=True, headers=SECRETS)
    assert easy.result is Code.OK, easy.error
    assert body == b"final body"
    first, second = srv.requests
    assert first.header("authorization") == "Bearer secret"
    assert first.header("cookie") == "session=secret"
    assert second.header("host") == f"localhost:{srv.port}"
    assert second.header("authorization") is None
    assert second.header("cookie") is None


def test_url_credentials_not_sent_to_another_host(fetch: Fetch) -> None:
    """user:password@ in the URL authenticates the first host only."""
    srv: HttpServer
    table: dict[str, Answer] = {
        "/start": lambda _r: moved(srv.url("/final", host="localhost")),
        "/final": FINAL,
    }
    with HttpServer(routes(table)) as srv:
        url = srv.url("/start").replace("http://", "http://user:pw@")
        easy, _ = fetch(url, follow_location=True)
    assert easy.result is Code.OK, easy.error
    first, second = srv.requests
    assert first.header("authorization") == "Basic dXNlcjpwdw=="
    assert second.header("authorization") is None


def test_credentials_not_sent_to_another_port(fetch: Fetch) -> None:
    """Same host, other port: another origin, no Authorization (curl >= 7.83, CVE-2022-27776)."""
    with HttpServer(routes({"/final": FINAL})) as other:
        table = {"/start": moved(other.url("/final"))}
        with HttpServer(routes(table)) as srv:
            easy, _ = fetch(srv.url("/start"), follow_location=True, headers=SECRETS)
    assert easy.result is Code.OK, easy.error
    assert srv.requests[0].header("authorization") == "Bearer secret"
    (arrived,) = other.requests
    assert arrived.header("authorization") is None
    assert arrived.header("cookie") is None


def test_credentials_return_with_the_first_host(fetch: Fetch) -> None:
    """127.0.0.1 → localhost → 127.0.0.1: sent, withheld, sent again (as curl does)."""
    srv: HttpServer
    table: dict[str, Answer] = {
        "/start": lambda _r: moved(srv.url("/away", host="localhost")),
        "/away": lambda _r: moved(srv.url("/back")),
        "/back": FINAL,
    }
    with HttpServer(routes(table)) as srv:
        easy, _ = fetch(srv.url("/start"), follow_location=True, headers=SECRETS)
    assert easy.result is Code.OK, easy.error
    assert [r.header("authorization") for r in srv.requests] == [
        "Bearer secret",
        None,
        "Bearer secret",
    ]


def test_cross_host_redirect_leaves_the_options_alone(drv: SelectorDriver) -> None:
    """After a redirect to another host, running the same Easy again still authenticates."""
    srv: HttpServer
    table: dict[str, Answer] = {
        "/start": lambda _r: moved(srv.url("/final", host="localhost")),
        "/final": FINAL,
    }
    with HttpServer(routes(table)) as srv:
        easy = Easy(srv.url("/start"), follow_location=True, headers=SECRETS)
        drv.perform(easy, timeout=20)
        drv.perform(easy, timeout=20)
    assert easy.result is Code.OK, easy.error
    assert easy.headers == SECRETS
    assert [(r.target, r.header("authorization")) for r in srv.requests] == [
        ("/start", "Bearer secret"),
        ("/final", None),
        ("/start", "Bearer secret"),
        ("/final", None),
    ]


def test_redirect_from_http_to_https(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """An http URL redirecting to https: TLS to the new origin, no credentials carried over."""
    tls = HttpServer(routes({"/secure": FINAL}), ssl_context=tls_context(ca, "127.0.0.1"))
    with tls, HttpServer(routes({"/start": moved(tls.url("/secure"), 301)})) as plain:
        easy, body = fetch(
            plain.url("/start"), follow_location=True, ca_file=ca_file, headers=SECRETS
        )
    assert easy.result is Code.OK, easy.error
    assert body == b"final body"
    assert easy.effective_url == tls.url("/secure")
    assert easy.appconnect_time > 0
    assert tls.requests[0].header("authorization") is None
    assert plain.requests[0].header("authorization") == "Bearer secret"
