"""Transfer options of the daemon against real servers: TLS, proxies, encodings, limits."""

from __future__ import annotations

import gzip
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from hf_support import WAIT, Daemon, Server, spawn
from proxies import PROXY_KINDS, RealProxy, start_proxy
from servers import HTTPServer, Peer, Request, respond, tls_context

from hiperfifo.config import ConfigError, build

BODY = b"the same line again\n" * 200


class ContentServer(HTTPServer):
    """Any path: BODY, gzip-encoded when the request accepts gzip; `seen` records each
    request's (target, Accept-Encoding). TLS with a context (servers.tls_context)."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.seen: list[tuple[str, str | None]] = []
        super().__init__(default=self._answer, ssl_context=context)

    def _answer(self, request: Request, peer: Peer) -> bool:
        accepted = request.header("accept-encoding")
        self.seen.append((request.target, accepted))
        if accepted and "gzip" in accepted:
            return respond(gzip.compress(BODY), headers=[("Content-Encoding", "gzip")])(
                request, peer
            )
        return respond(BODY)(request, peer)

    def url(self, path: str = "/", host: str | None = None, **kw: Any) -> str:  # type: ignore[override]
        return super().url(path, host=host, **kw)


@pytest.fixture
def tls_server(ca: trustme.CA, serve: Callable[[ContentServer], ContentServer]) -> ContentServer:
    """HTTPS on 127.0.0.1 with a certificate for 127.0.0.1 and localhost from `ca`."""
    return serve(ContentServer(tls_context(ca)))


@pytest.fixture
def content_server(serve: Callable[[ContentServer], ContentServer]) -> ContentServer:
    """Plain HTTP on 127.0.0.1."""
    return serve(ContentServer())


@pytest.fixture(params=PROXY_KINDS)
def real_proxy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RealProxy]:
    """A real proxy process: proxy.py, and tinyproxy where Debian's package is installed."""
    proxy = start_proxy(request.param, tmp_path)
    yield proxy
    proxy.stop()


def fetch(daemon: Daemon, *urls: str) -> list[dict[str, Any]]:
    """Write the URLs and `stop`; the transfer.done lines in the order of `urls`."""
    daemon.write(("".join(f"{url}\n" for url in urls) + "stop\n").encode())
    assert daemon.wait() == 0
    done = {event["url"]: event for event in daemon.events("transfer.done")}
    return [done[url] for url in urls]


# -- TLS ------------------------------------------------------------------------


def test_https_verified_with_cacert_and_refused_without(
    run_daemon: Callable[..., Daemon], tls_server: ContentServer, ca_file: str
) -> None:
    """--cacert: 127.0.0.1 and localhost fetch (0); without it the same URL fails with 60."""
    urls = [tls_server.url("/a"), tls_server.url("/b", host="localhost")]
    trusted = fetch(run_daemon("--cacert", str(ca_file)), *urls)
    assert [(e["result"], e["status"], e["bytes"]) for e in trusted] == [(0, 200, len(BODY))] * 2
    (untrusted,) = fetch(run_daemon(), tls_server.url("/c"))
    assert untrusted["result"] == 60
    assert untrusted["result_name"] == "PEER_FAILED_VERIFICATION"


def test_insecure_logs_one_warning_and_skips_verification(
    run_daemon: Callable[..., Daemon], tls_server: ContentServer
) -> None:
    """--insecure: one daemon.insecure warning at start; an unknown CA is then accepted."""
    daemon = run_daemon("--insecure")
    (done,) = fetch(daemon, tls_server.url("/x"))
    assert done["result"] == 0
    events = daemon.events()
    warnings = [e for e in events if e["event"] == "daemon.insecure"]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert [e["event"] for e in events].index("daemon.insecure") == 1  # right after started
    assert events[0]["verify"] is False


def test_cacert_that_is_not_pem_is_a_usage_error(tmp_path: Path) -> None:
    """--cacert pointing at garbage or nothing: exit 2 before any FIFO is made."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for path in (junk, tmp_path / "missing.pem"):
        proc = spawn(["--fifo", str(tmp_path / "x.fifo"), "--cacert", str(path)])
        _out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 2
        assert f"--cacert: cannot load CA certificates from '{path}'" in err.decode()
    assert not (tmp_path / "x.fifo").exists()


# -- proxies -----------------------------------------------------------------------


def test_proxy_option_for_http_and_connect_tunnel_for_https(
    run_daemon: Callable[..., Daemon],
    real_proxy: RealProxy,
    content_server: ContentServer,
    tls_server: ContentServer,
    ca_file: str,
) -> None:
    """--proxy: http goes through the proxy as an absolute-URI request, https as CONNECT."""
    daemon = run_daemon("--proxy", real_proxy.url, "--cacert", str(ca_file))
    plain, tls = fetch(daemon, content_server.url("/via-proxy"), tls_server.url("/tunneled"))
    assert (plain["result"], plain["status"], tls["result"], tls["status"]) == (0, 200, 0, 200)
    log = real_proxy.log()
    assert f"GET {content_server.url('/via-proxy')} HTTP/1.1" in log
    assert f"CONNECT 127.0.0.1:{tls_server.port} HTTP/1.1" in log
    assert daemon.events("daemon.started")[0]["proxy"] == real_proxy.url


def test_proxy_from_environment_with_noproxy_and_empty_proxy_option(
    run_daemon: Callable[..., Daemon],
    real_proxy: RealProxy,
    content_server: ContentServer,
    dead_port: int,
) -> None:
    """http_proxy is used, --noproxy hosts go direct; --proxy '' ignores a dead http_proxy."""
    env = {"http_proxy": real_proxy.url}
    daemon = run_daemon("--noproxy", "localhost", env=env)
    proxied, direct = fetch(
        daemon, content_server.url("/env-proxied"), content_server.url("/direct", "localhost")
    )
    assert (proxied["result"], direct["result"]) == (0, 0)
    assert "/env-proxied" in real_proxy.log()
    assert "/direct" not in real_proxy.log()

    dead = {"http_proxy": f"http://127.0.0.1:{dead_port}"}
    (refused,) = fetch(run_daemon(env=dead), content_server.url("/dead-proxy"))
    assert refused["result"] == 7
    (ignored,) = fetch(run_daemon("--proxy", "", env=dead), content_server.url("/no-proxy"))
    assert ignored["result"] == 0


# -- content and limits ---------------------------------------------------------------


def test_compressed_asks_for_gzip_and_writes_the_decoded_body(
    run_daemon: Callable[..., Daemon], content_server: ContentServer, tmp_path: Path
) -> None:
    """--compressed: Accept-Encoding sent, the file holds the decoded body; else not asked."""
    out = tmp_path / "out"
    (done,) = fetch(run_daemon("--compressed", "--output", str(out)), content_server.url("/z"))
    assert done["result"] == 0
    assert (out / "z").read_bytes() == BODY
    (plain,) = fetch(run_daemon(), content_server.url("/plain"))
    assert plain["bytes"] == len(BODY)
    assert content_server.seen == [("/z", "gzip, deflate"), ("/plain", None)]


def test_max_filesize_and_max_redirs(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """--max-filesize 1k: 2000 bytes fail with 63; --max-redirs 2: a third redirect is 47."""
    daemon = run_daemon("--max-filesize", "1k", "--max-redirs", "2")
    big, small, far, near = fetch(
        daemon,
        http_server.url("/size/2000"),
        http_server.url("/size/1024"),
        http_server.url("/redirect/3"),
        http_server.url("/redirect/2"),
    )
    assert (big["result"], small["result"]) == (63, 0)
    assert (far["result"], far["result_name"]) == (47, "TOO_MANY_REDIRECTS")
    assert (near["result"], near["redirects"]) == (0, 2)


@pytest.mark.parametrize(
    ("option", "text", "message"),
    [
        ("proxy", "socks5://127.0.0.1:1080", "only http:// proxies are supported"),
        ("proxy", "http://127.0.0.1:99999", "bad proxy URL"),
        ("max_filesize", "10X", "not a size in bytes"),
        ("max_redirs", "-1", "--max-redirs: must be at least 0"),
        ("retry", "-2", "--retry: must be at least 0"),
        ("retry_max_time", "-1", "--retry-max-time: must not be negative"),
    ],
)
def test_transfer_option_values_are_checked(option: str, text: str, message: str) -> None:
    """Bad --proxy, --max-filesize, --max-redirs, --retry values: a ConfigError naming them."""
    with pytest.raises(ConfigError, match=message):
        build({option: text})


def test_transfer_option_values_parse_like_curl() -> None:
    """Sizes take k/M/G (1024-based); a scheme-less proxy is kept; defaults as documented."""
    config = build({"max_filesize": "2M", "proxy": "127.0.0.1:3128"})
    assert (config.max_filesize, config.proxy) == (2 * 1024 * 1024, "127.0.0.1:3128")
    defaults = build({})
    assert (defaults.max_redirs, defaults.retry, defaults.proxy, defaults.insecure) == (
        30,
        0,
        None,
        False,
    )


def test_http2_by_default_and_http11_when_asked(
    run_daemon: Callable[..., Daemon],
    ca: trustme.CA,
    ca_file: str,
    tls_server: ContentServer,
    serve: Callable[[Any], Any],
) -> None:
    """transfer.done says http_version: 2 from an h2 server by default, 1.1 from an HTTP/1.1
    one (it picks no ALPN protocol), and 1.1 with --http1.1."""
    from h2_servers import H2Server, answer, h2_context

    h2_server = serve(H2Server({"/": answer(BODY)}, ssl_context=h2_context(ca)))
    urls = [h2_server.url("/"), tls_server.url("/x")]
    default = fetch(run_daemon("--cacert", str(ca_file)), *urls)
    assert [(d["result"], d["http_version"]) for d in default] == [(0, "2"), (0, "1.1")]
    forced = fetch(run_daemon("--cacert", str(ca_file), "--http1.1"), tls_server.url("/y"))
    assert [(d["result"], d["http_version"]) for d in forced] == [(0, "1.1")]


def test_http2_prior_knowledge_option_and_env(
    run_daemon: Callable[..., Daemon], serve: Callable[[Any], Any]
) -> None:
    """--http2-prior-knowledge (or HIPERFIFO_HTTP2_PRIOR_KNOWLEDGE=true) speaks h2c."""
    from h2_servers import H2Server, answer

    h2c = serve(H2Server({"/": answer(BODY)}))
    (done,) = fetch(run_daemon("--http2-prior-knowledge"), h2c.url("/"))
    assert (done["result"], done["http_version"], done["bytes"]) == (0, "2", len(BODY))
    env = {"HIPERFIFO_HTTP2_PRIOR_KNOWLEDGE": "true"}
    (again,) = fetch(run_daemon(env=env), h2c.url("/"))
    assert (again["result"], again["http_version"]) == (0, "2")


def test_http11_and_prior_knowledge_together_are_refused(tmp_path: Path) -> None:
    """--http1.1 with --http2-prior-knowledge: a usage error (exit 2), naming both."""
    proc = spawn(["--fifo", str(tmp_path / "x.fifo"), "--http1.1", "--http2-prior-knowledge"])
    _out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 2
    assert "--http2-prior-knowledge" in err.decode()
    assert "--http1.1" in err.decode()
