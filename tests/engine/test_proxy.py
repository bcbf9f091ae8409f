"""HTTP proxies and CONNECT tunnels: pure rules, real proxies (proxy.py, tinyproxy), and
proxies that misbehave."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import trustme
from proxies import PROXY_KINDS, RealProxy, start_proxy
from servers import Request, Server, closed_port, tls_context
from tls_servers import HttpServer, answer_once, hold, relay, response

from hiperfifo.engine import Code, Easy
from hiperfifo.engine.proxy import bypasses, proxy_from_environ

Fetch = Callable[..., tuple[Easy, bytes]]
HELLO = response(200, b"from the origin")


@pytest.fixture(scope="module", params=PROXY_KINDS)
def real_proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealProxy]:
    """A real proxy process: proxy.py, and tinyproxy where Debian's package is installed."""
    proxy = start_proxy(request.param, tmp_path_factory.mktemp("proxy"))
    yield proxy
    proxy.stop()


def tls_origin(ca: trustme.CA) -> HttpServer:
    return HttpServer(lambda _r: HELLO, ssl_context=tls_context(ca, "127.0.0.1"))


# --- which proxy, in pure code ----------------------------------------------------------


def test_environ_http_proxy_lower_case_only() -> None:
    """http URLs use http_proxy; HTTP_PROXY is ignored (a CGI sets it from a header)."""
    assert proxy_from_environ("http", {"http_proxy": "http://p:1"}) == ("http://p:1", "")
    assert proxy_from_environ("http", {"HTTP_PROXY": "http://evil:1"}) == (None, "")


def test_environ_https_proxy_either_case() -> None:
    """https URLs use https_proxy or HTTPS_PROXY, not http_proxy."""
    assert proxy_from_environ("https", {"https_proxy": "http://p:1"})[0] == "http://p:1"
    assert proxy_from_environ("https", {"HTTPS_PROXY": "http://p:2"})[0] == "http://p:2"
    assert proxy_from_environ("https", {"http_proxy": "http://p:3"})[0] is None


def test_environ_all_proxy_is_the_fallback() -> None:
    """all_proxy (or ALL_PROXY) applies when the scheme has no proxy of its own."""
    env = {"all_proxy": "http://all:1", "https_proxy": "http://tls:1"}
    assert proxy_from_environ("http", env)[0] == "http://all:1"
    assert proxy_from_environ("https", env)[0] == "http://tls:1"
    assert proxy_from_environ("http", {"ALL_PROXY": "http://ALL:1"})[0] == "http://ALL:1"


def test_environ_empty_values_mean_no_proxy() -> None:
    """An empty http_proxy is no proxy and does not hide all_proxy."""
    assert proxy_from_environ("http", {"http_proxy": ""}) == (None, "")
    assert proxy_from_environ("http", {"http_proxy": "", "all_proxy": "http://a:1"})[0] == (
        "http://a:1"
    )


def test_environ_no_proxy_either_case() -> None:
    """no_proxy (or NO_PROXY) comes back with the proxy."""
    assert proxy_from_environ("http", {"no_proxy": "a.example"}) == (None, "a.example")
    assert proxy_from_environ("https", {"NO_PROXY": "b.example"}) == (None, "b.example")


@pytest.mark.parametrize(
    ("host", "noproxy", "bypass"),
    [
        ("anything.example", "*", True),
        ("example.com", "example.com", True),
        ("www.example.com", "example.com", True),
        ("badexample.com", "example.com", False),
        ("www.example.com", ".example.com", True),
        ("example.com", ".example.com", True),
        ("WWW.Example.COM", "example.com", True),
        ("example.com.", "example.com", True),
        ("b.example", " a.example , b.example ", True),
        ("c.example", "a.example,b.example", False),
        ("127.0.0.1", "127.0.0.0/8", True),
        ("10.1.2.3", "127.0.0.0/8", False),
        ("192.168.1.1", "192.168.1.1", True),
        ("::1", "::1", True),
        ("::1", "[::1]", True),
        ("fd00::1", "fd00::/8", True),
        ("127.0.0.1", "localhost", False),
        ("example.com", "", False),
    ],
)
def test_bypasses(host: str, noproxy: str, bypass: bool) -> None:
    """no_proxy matching: *, exact names, domain suffixes, IPs, CIDR ranges; no resolving."""
    assert bypasses(host, noproxy) is bypass


# --- a proxy in front of http URLs ------------------------------------------------------


def test_http_url_asks_the_proxy_in_absolute_form(fetch: Fetch) -> None:
    """Through a proxy the request target is the absolute URL; the origin is never resolved."""
    with HttpServer(lambda _r: HELLO) as proxy:
        easy, body = fetch("http://origin.invalid:8080/p?q=1", proxy=proxy.url(""))
    assert easy.result is Code.OK, easy.error
    assert body == b"from the origin"
    (request,) = proxy.requests
    assert (request.method, request.target) == ("GET", "http://origin.invalid:8080/p?q=1")
    assert request.header("host") == "origin.invalid:8080"
    assert easy.primary_port == proxy.port


def test_scheme_less_proxy_is_http(fetch: Fetch) -> None:
    """A proxy given as host:port is an http:// proxy."""
    with HttpServer(lambda _r: HELLO) as proxy:
        easy, _ = fetch("http://origin.invalid/", proxy=f"127.0.0.1:{proxy.port}")
    assert easy.result is Code.OK, easy.error
    assert proxy.requests[0].target == "http://origin.invalid/"


def test_one_proxy_connection_serves_several_origins(fetch: Fetch) -> None:
    """http URLs of different origins reuse the kept-alive connection to the proxy."""
    with HttpServer(lambda _r: HELLO) as proxy:
        first, _ = fetch("http://one.invalid/", proxy=proxy.url(""))
        second, _ = fetch("http://two.invalid/", proxy=proxy.url(""))
    assert (first.result, second.result) == (Code.OK, Code.OK)
    assert (first.num_connects, second.num_connects) == (1, 0)
    assert proxy.accepted == 1
    assert [r.header("host") for r in proxy.requests] == ["one.invalid", "two.invalid"]


def test_http_through_a_real_proxy(fetch: Fetch, real_proxy: RealProxy) -> None:
    """A real proxy forwards an http GET: the origin answers, the client only talked to it."""
    with HttpServer(lambda _r: HELLO) as origin:
        easy, body = fetch(origin.url("/via?x=1"), proxy=real_proxy.url)
    assert easy.result is Code.OK, f"{easy.error}\n{real_proxy.log()}"
    assert (easy.response_code, body) == (200, b"from the origin")
    assert easy.primary_port == real_proxy.port
    (request,) = origin.requests
    assert request.target == "/via?x=1"
    assert request.client_port != easy.local_port


def test_several_http_transfers_through_a_real_proxy(fetch: Fetch, real_proxy: RealProxy) -> None:
    """Back-to-back transfers through the real proxy all succeed, reused connection or not."""
    with HttpServer(lambda r: response(200, r.target.encode())) as origin:
        results = [fetch(origin.url(f"/{i}"), proxy=real_proxy.url) for i in range(4)]
    for i, (easy, body) in enumerate(results):
        assert easy.result is Code.OK, f"{easy.error}\n{real_proxy.log()}"
        assert body == f"/{i}".encode()
    assert [r.target for r in origin.requests] == ["/0", "/1", "/2", "/3"]


def test_noproxy_goes_direct(fetch: Fetch) -> None:
    """A host in noproxy is reached directly even though the proxy is dead."""
    dead = f"http://127.0.0.1:{closed_port()}"
    with HttpServer(lambda _r: HELLO) as origin:
        exact, _ = fetch(origin.url(), proxy=dead, noproxy="127.0.0.1")
        wildcard, _ = fetch(origin.url(), proxy=dead, noproxy="*")
        cidr, _ = fetch(origin.url(), proxy=dead, noproxy="example.com, 127.0.0.0/8")
    for easy in (exact, wildcard, cidr):
        assert easy.result is Code.OK, easy.error
        assert easy.primary_port == origin.port
    assert len(origin.requests) == 3


def test_proxy_from_environ_drives_an_easy(fetch: Fetch, real_proxy: RealProxy) -> None:
    """The environment's proxy and no_proxy, read by proxy_from_environ, steer real transfers."""
    with HttpServer(lambda _r: HELLO) as origin:
        proxied, _ = fetch(origin.url(), **_env_proxy({"http_proxy": real_proxy.url}))
        direct, _ = fetch(
            origin.url(),
            **_env_proxy({"http_proxy": real_proxy.url, "no_proxy": "localhost,127.0.0.1"}),
        )
    assert (proxied.result, direct.result) == (Code.OK, Code.OK)
    assert proxied.primary_port == real_proxy.port
    assert direct.primary_port == origin.port


def _env_proxy(environ: dict[str, str]) -> dict[str, object]:
    proxy, noproxy = proxy_from_environ("http", environ)
    return {"proxy": proxy, "noproxy": noproxy}


def test_dead_proxy_is_couldnt_connect(fetch: Fetch) -> None:
    """Nothing listens on the proxy port: COULDNT_CONNECT (7), naming the proxy."""
    port = closed_port()
    easy, _ = fetch("http://origin.invalid/", proxy=f"http://127.0.0.1:{port}")
    assert easy.result is Code.COULDNT_CONNECT
    assert "proxy" in easy.error
    assert str(port) in easy.error


def test_unresolvable_proxy_is_couldnt_resolve_proxy(fetch: Fetch) -> None:
    """A proxy host name that does not resolve: COULDNT_RESOLVE_PROXY (5), not 6."""
    easy, _ = fetch("http://127.0.0.1:9/", proxy="http://proxy.invalid:3128")
    assert easy.result is Code.COULDNT_RESOLVE_PROXY
    assert "proxy.invalid" in easy.error


def test_proxied_and_direct_connections_are_not_mixed(
    fetch: Fetch, real_proxy: RealProxy, ca: trustme.CA, ca_file: str
) -> None:
    """A tunnel or proxy connection is never reused for a direct transfer, nor the reverse."""
    with tls_origin(ca) as secure, HttpServer(lambda _r: HELLO) as plain:
        runs = [
            fetch(secure.url(), proxy=real_proxy.url, ca_file=ca_file)[0],
            fetch(secure.url(), ca_file=ca_file)[0],
            fetch(secure.url(), proxy=real_proxy.url, ca_file=ca_file)[0],
            fetch(plain.url(), proxy=real_proxy.url)[0],
            fetch(plain.url())[0],
        ]
    assert [e.result for e in runs] == [Code.OK] * 5, [e.error for e in runs]
    ports = [e.primary_port for e in runs]
    assert ports == [real_proxy.port, secure.port, real_proxy.port, real_proxy.port, plain.port]
    assert [e.num_connects for e in runs[:2]] == [1, 1]
    assert runs[4].num_connects == 1


def test_http_url_through_a_refusing_proxy_is_its_answer(fetch: Fetch) -> None:
    """For an http URL a proxy's 403 is the response: OK with response_code 403, as curl."""
    forbidden = response(403, b"not you", reason="Forbidden")
    with HttpServer(lambda _r: forbidden) as proxy:
        easy, body = fetch("http://origin.invalid/", proxy=proxy.url(""))
    assert (easy.result, easy.response_code, body) == (Code.OK, 403, b"not you")


# --- CONNECT tunnels for https URLs ------------------------------------------------------


def test_https_through_a_real_proxy_tunnel(
    fetch: Fetch, real_proxy: RealProxy, ca: trustme.CA, ca_file: str
) -> None:
    """https through a real proxy: CONNECT, then TLS end to end with the origin, verified."""
    with tls_origin(ca) as origin:
        easy, body = fetch(origin.url("/secret"), proxy=real_proxy.url, ca_file=ca_file)
    assert easy.result is Code.OK, f"{easy.error}\n{real_proxy.log()}"
    assert (easy.response_code, body) == (200, b"from the origin")
    assert easy.primary_port == real_proxy.port
    assert 0 < easy.connect_time <= easy.appconnect_time <= easy.pretransfer_time
    assert [r.target for r in origin.requests] == ["/secret"]
    assert f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1" in real_proxy.log()


def test_tunnel_kept_alive_and_reused(
    fetch: Fetch, real_proxy: RealProxy, ca: trustme.CA, ca_file: str
) -> None:
    """A second https transfer to the same origin reuses the tunnel and its TLS session."""
    with tls_origin(ca) as origin:
        first, _ = fetch(origin.url("/1"), proxy=real_proxy.url, ca_file=ca_file)
        second, _ = fetch(origin.url("/2"), proxy=real_proxy.url, ca_file=ca_file)
    assert (first.result, second.result) == (Code.OK, Code.OK), second.error
    assert (first.num_connects, second.num_connects) == (1, 0)
    assert second.local_port == first.local_port
    assert origin.accepted == 1


def test_tunnel_through_a_fragmenting_hop(
    fetch: Fetch, real_proxy: RealProxy, ca: trustme.CA, ca_file: str
) -> None:
    """The proxy's CONNECT answer and the TLS records arriving in 7-byte pieces: still OK."""
    with tls_origin(ca) as origin, Server(relay(real_proxy.port)) as hop:
        easy, body = fetch(origin.url("/far"), proxy=hop.url("", scheme="http"), ca_file=ca_file)
    assert easy.result is Code.OK, f"{easy.error}\n{real_proxy.log()}"
    assert body == b"from the origin"
    assert easy.primary_port == hop.port


def test_tunnel_still_verifies_the_origin(
    fetch: Fetch, real_proxy: RealProxy, ca: trustme.CA
) -> None:
    """Through a tunnel, an origin certificate from an unknown CA is still refused (60)."""
    with tls_origin(ca) as origin:
        easy, body = fetch(origin.url(), proxy=real_proxy.url)
    assert easy.result is Code.PEER_FAILED_VERIFICATION
    assert body == b""
    assert origin.requests == []


def test_noproxy_https_goes_direct(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """An https host in noproxy skips the (dead) proxy: no CONNECT, direct TLS."""
    dead = f"http://127.0.0.1:{closed_port()}"
    with tls_origin(ca) as origin:
        easy, _ = fetch(origin.url(), proxy=dead, noproxy="127.0.0.1", ca_file=ca_file)
    assert easy.result is Code.OK, easy.error
    assert easy.primary_port == origin.port


def connect_refused(status: int, reason: str) -> HttpServer:
    return HttpServer(lambda _r: response(status, b"", reason=reason))


@pytest.mark.parametrize(
    ("status", "reason"), [(403, "Forbidden"), (407, "Proxy Authentication Required")]
)
def test_proxy_refusing_connect_is_recv_error(fetch: Fetch, status: int, reason: str) -> None:
    """A CONNECT answered with 403/407: RECV_ERROR (56) "CONNECT tunnel failed, response N"."""
    with connect_refused(status, reason) as proxy:
        easy, body = fetch("https://127.0.0.1:9/", proxy=proxy.url(""))
    assert easy.result is Code.RECV_ERROR
    assert easy.error == f"CONNECT tunnel failed, response {status}"
    assert body == b""
    (request,) = proxy.requests
    assert (request.method, request.target) == ("CONNECT", "127.0.0.1:9")
    assert request.header("host") == "127.0.0.1:9"


@pytest.mark.parametrize(
    ("url", "authority"),
    [
        ("https://[::1]/", "[::1]:443"),
        ("https://[::1]:8443/", "[::1]:8443"),
        ("https://origin.invalid/", "origin.invalid:443"),
    ],
)
def test_connect_authority(fetch: Fetch, url: str, authority: str) -> None:
    """CONNECT names host:port, the port always given, an IPv6 literal in brackets."""
    with connect_refused(403, "Forbidden") as proxy:
        easy, _ = fetch(url, proxy=proxy.url(""))
    assert easy.result is Code.RECV_ERROR, easy.error
    (request,) = proxy.requests
    assert (request.target, request.header("host")) == (authority, authority)


def test_proxy_credentials_sent_as_proxy_authorization(fetch: Fetch) -> None:
    """user:password@ in the proxy URL becomes Proxy-Authorization (Basic), as curl sends it."""
    with connect_refused(407, "Proxy Authentication Required") as proxy:
        url = proxy.url("").replace("http://", "http://user:pw@")
        plain, _ = fetch("http://origin.invalid/", proxy=url)
        tunnel, _ = fetch("https://origin.invalid/", proxy=url)
    assert plain.response_code == 407
    assert tunnel.result is Code.RECV_ERROR
    assert [(r.method, r.header("proxy-authorization")) for r in proxy.requests] == [
        ("GET", "Basic dXNlcjpwdw=="),
        ("CONNECT", "Basic dXNlcjpwdw=="),
    ]
    assert all(r.header("authorization") is None for r in proxy.requests)


def test_proxy_credentials_never_reach_the_origin(
    fetch: Fetch, real_proxy: RealProxy, ca: trustme.CA, ca_file: str
) -> None:
    """Proxy-Authorization is for the proxy: inside the tunnel the origin never sees it."""
    url = real_proxy.url.replace("http://", "http://user:pw@")
    with tls_origin(ca) as origin:
        easy, _ = fetch(origin.url("/inside"), proxy=url, ca_file=ca_file)
    assert easy.result is Code.OK, f"{easy.error}\n{real_proxy.log()}"
    (request,) = origin.requests
    assert request.header("proxy-authorization") is None
    assert request.header("authorization") is None


def test_proxy_closing_on_connect_is_recv_error(fetch: Fetch) -> None:
    """The proxy reads the CONNECT and hangs up: 56 "Proxy CONNECT aborted", as curl says."""
    with Server(answer_once(b"")) as proxy:
        easy, _ = fetch("https://127.0.0.1:9/", proxy=proxy.url(""))
    assert easy.result is Code.RECV_ERROR, easy.error
    assert easy.error == "Proxy CONNECT aborted"


def test_silent_proxy_times_out_in_connect(fetch: Fetch) -> None:
    """A proxy that never answers the CONNECT: OPERATION_TIMEDOUT after connect_timeout_ms."""
    with Server(hold) as proxy:
        started = time.monotonic()
        easy, _ = fetch("https://127.0.0.1:9/", proxy=proxy.url(""), connect_timeout_ms=300)
        elapsed = time.monotonic() - started
    assert easy.result is Code.OPERATION_TIMEDOUT
    assert 0.25 <= elapsed < 5


def test_https_via_plain_proxy_sends_no_plaintext_request(fetch: Fetch) -> None:
    """Only the CONNECT line reaches the proxy in clear: no GET, no path, no header."""
    seen: list[Request] = []

    def app(request: Request) -> bytes:
        seen.append(request)
        return response(403, b"", reason="Forbidden")

    with HttpServer(app) as proxy:
        easy, _ = fetch(
            "https://127.0.0.1:9/private/path",
            proxy=proxy.url(""),
            headers=[("Authorization", "Bearer secret")],
        )
    assert easy.result is Code.RECV_ERROR
    assert [r.method for r in seen] == ["CONNECT"]
    assert all("/private" not in r.target for r in seen)
    assert seen[0].header("authorization") is None


def test_redirect_from_http_to_https_through_a_real_proxy(
    fetch: Fetch, real_proxy: RealProxy, ca: trustme.CA, ca_file: str
) -> None:
    """An http URL forwarded by the proxy redirects to https: the next hop is a CONNECT tunnel."""
    with tls_origin(ca) as secure:
        moved = response(301, b"", [("Location", secure.url("/landed"))])
        with HttpServer(lambda _r: moved) as plain:
            easy, body = fetch(
                plain.url("/start"),
                proxy=real_proxy.url,
                ca_file=ca_file,
                follow_location=True,
            )
    assert easy.result is Code.OK, f"{easy.error}\n{real_proxy.log()}"
    assert body == b"from the origin"
    assert easy.effective_url == secure.url("/landed")
    assert easy.redirect_count == 1
    assert easy.primary_port == real_proxy.port
    assert [r.target for r in plain.requests] == ["/start"]
    assert [r.target for r in secure.requests] == ["/landed"]


# --- proxy_env: the environment's choice, made again for every hop --------------------


def test_proxy_env_http_proxy_then_direct_https_hop(
    fetch: Fetch, ca: trustme.CA, ca_file: str
) -> None:
    """http_proxy only: the http hop goes through the proxy, its https redirect goes direct."""
    with tls_origin(ca) as secure:
        moved = response(301, b"", [("Location", secure.url("/landed"))])
        with HttpServer(lambda _r: moved) as proxy:
            easy, body = fetch(
                "http://origin.invalid/start",
                proxy_env={"http_proxy": proxy.url("")},
                follow_location=True,
                ca_file=ca_file,
            )
    assert easy.result is Code.OK, easy.error
    assert body == b"from the origin"
    assert [r.target for r in proxy.requests] == ["http://origin.invalid/start"]
    assert [r.target for r in secure.requests] == ["/landed"]
    assert easy.primary_port == secure.port


def test_proxy_env_https_proxy_tunnels_the_https_hop(
    fetch: Fetch, real_proxy: RealProxy, ca: trustme.CA, ca_file: str
) -> None:
    """https_proxy only: the http hop goes direct, its https redirect through a CONNECT."""
    with tls_origin(ca) as secure:
        moved = response(301, b"", [("Location", secure.url("/landed"))])
        with HttpServer(lambda _r: moved) as plain:
            easy, body = fetch(
                plain.url("/direct-hop"),
                proxy_env={"https_proxy": real_proxy.url},
                follow_location=True,
                ca_file=ca_file,
            )
    assert easy.result is Code.OK, f"{easy.error}\n{real_proxy.log()}"
    assert body == b"from the origin"
    assert easy.primary_port == real_proxy.port
    log = real_proxy.log()
    assert f"CONNECT 127.0.0.1:{secure.port} " in log
    assert "/direct-hop" not in log
    assert [r.target for r in plain.requests] == ["/direct-hop"]


@pytest.mark.parametrize(
    ("options", "env"),
    [
        ({}, {"http_proxy": "DEAD", "no_proxy": "127.0.0.1"}),
        ({"noproxy": "127.0.0.1"}, {"http_proxy": "DEAD", "no_proxy": "other.example"}),
        ({"proxy": ""}, {"http_proxy": "DEAD"}),
        ({}, {"HTTP_PROXY": "DEAD"}),
        ({}, {"https_proxy": "DEAD"}),
    ],
    ids=["env-no_proxy", "noproxy-option-wins", "empty-proxy-option", "HTTP_PROXY", "other"],
)
def test_proxy_env_cases_that_go_direct(
    fetch: Fetch, options: dict[str, str], env: dict[str, str]
) -> None:
    """no_proxy, an explicit noproxy or proxy="", HTTP_PROXY, another scheme's proxy: direct."""
    dead = f"http://127.0.0.1:{closed_port()}"
    environ = {name: dead if value == "DEAD" else value for name, value in env.items()}
    with HttpServer(lambda _r: HELLO) as origin:
        easy, body = fetch(origin.url(), proxy_env=environ, **options)
    assert easy.result is Code.OK, easy.error
    assert body == b"from the origin"
    assert easy.primary_port == origin.port


def test_proxy_option_wins_over_proxy_env(fetch: Fetch) -> None:
    """An explicit proxy is used even when proxy_env names another (dead) one."""
    dead = f"http://127.0.0.1:{closed_port()}"
    with HttpServer(lambda _r: HELLO) as proxy:
        easy, _ = fetch(
            "http://origin.invalid/", proxy=proxy.url(""), proxy_env={"http_proxy": dead}
        )
    assert easy.result is Code.OK, easy.error
    assert easy.primary_port == proxy.port
