"""TLS through ssl.MemoryBIO against real local TLS servers with trustme certificates."""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from servers import Peer, Request, Server, server_context, tls_context
from tls_servers import HttpServer, answer_once, hold, relay, response

from hiperfifo.engine import Code, Easy
from hiperfifo.engine.testing import SelectorDriver

Fetch = Callable[..., tuple[Easy, bytes]]
HELLO = response(200, b"hello over tls", [("Content-Type", "text/plain")])


def tls_server(ca: trustme.CA, *names: str, app: object = None) -> HttpServer:
    """An HTTPS keep-alive server whose certificate (for `names`) is signed by `ca`."""
    context = tls_context(ca, *names)
    return HttpServer(app or (lambda _request: HELLO), ssl_context=context)  # type: ignore[arg-type]


def test_https_get_verified_with_ca_file(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """A valid chain from ca_file: OK, the body, status 200, the server saw one GET."""
    with tls_server(ca) as srv:
        easy, body = fetch(srv.url("/x"), ca_file=ca_file)
    assert (easy.result, easy.error) == (Code.OK, "")
    assert easy.response_code == 200
    assert body == b"hello over tls"
    assert [(r.method, r.target) for r in srv.requests] == [("GET", "/x")]
    assert srv.sni == [None]  # no SNI for an IP literal (RFC 6066), as curl
    assert srv.tls_errors == []
    assert srv.errors == []


def test_https_sends_sni_and_offers_alpn_http11(
    fetch: Fetch, ca: trustme.CA, ca_file: str
) -> None:
    """Through a host name the client sends SNI for it and negotiates ALPN http/1.1."""
    with tls_server(ca, "localhost") as srv:
        easy, _body = fetch(srv.url("/", host="localhost"), ca_file=ca_file)
    assert easy.result is Code.OK, easy.error
    assert srv.sni == ["localhost"]
    assert srv.alpn == ["http/1.1"]
    assert easy.http_version == "1.1"


def test_appconnect_time_filled_in_order(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """appconnect_time is > 0, after connect_time and no later than pretransfer_time."""
    with tls_server(ca) as srv:
        easy, _body = fetch(srv.url(), ca_file=ca_file)
    assert easy.result is Code.OK, easy.error
    assert 0 < easy.connect_time <= easy.appconnect_time <= easy.pretransfer_time
    assert easy.pretransfer_time <= easy.starttransfer_time <= easy.total_time
    assert easy.num_connects == 1


def test_default_verification_rejects_unknown_ca(fetch: Fetch, ca: trustme.CA) -> None:
    """verify=True with the system CAs refuses a private CA: 60, and no request is sent."""
    with tls_server(ca) as srv:
        easy, body = fetch(srv.url())
    assert easy.result is Code.PEER_FAILED_VERIFICATION
    assert "certificate" in easy.error
    assert body == b""
    assert easy.response_code == 0
    assert srv.requests == []


SYSTEM_STORE_PROBE = """
import sys
from hiperfifo.engine import Easy
from hiperfifo.engine.testing import SelectorDriver
drv = SelectorDriver()
easy = Easy(sys.argv[1])
drv.perform(easy, timeout=20)
drv.close()
print(int(easy.result), easy.response_code)
"""


def test_default_verification_uses_the_system_store(ca: trustme.CA, ca_file: str) -> None:
    """verify=True without ca_file trusts OpenSSL's default store (here SSL_CERT_FILE)."""
    env = dict(os.environ, SSL_CERT_FILE=ca_file)
    with tls_server(ca) as srv:
        done = subprocess.run(
            [sys.executable, "-c", SYSTEM_STORE_PROBE, srv.url()],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.stdout.split() == ["0", "200"], done.stderr


def test_ca_file_of_another_ca_rejected(fetch: Fetch, ca_file: str, tmp_path: Path) -> None:
    """A server signed by a CA other than the one in ca_file: PEER_FAILED_VERIFICATION."""
    with tls_server(trustme.CA()) as srv:
        easy, _body = fetch(srv.url(), ca_file=ca_file)
    assert easy.result is Code.PEER_FAILED_VERIFICATION
    assert srv.requests == []


@pytest.mark.parametrize("content", [None, "not a certificate\n"], ids=["missing", "garbage"])
def test_unusable_ca_file_is_cacert_badfile(
    fetch: Fetch, ca: trustme.CA, tmp_path: Path, content: str | None
) -> None:
    """A ca_file that is missing or holds no certificate: 77 SSL_CACERT_BADFILE, no exception."""
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    with tls_server(ca) as srv:
        easy, body = fetch(srv.url(), ca_file=str(path))
    assert body == b""
    assert int(easy.result) == 77
    assert easy.result.name == "SSL_CACERT_BADFILE"
    assert str(path) in easy.error
    assert srv.requests == []


def test_unusable_ca_file_ignored_without_verification(
    fetch: Fetch, ca: trustme.CA, tmp_path: Path
) -> None:
    """verify=False with a missing ca_file still connects, as curl -k --cacert does."""
    with tls_server(ca) as srv:
        easy, body = fetch(srv.url(), verify=False, ca_file=str(tmp_path / "missing.pem"))
    assert easy.result is Code.OK, easy.error
    assert body == b"hello over tls"


def test_wrong_hostname_rejected(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """A trusted certificate for another name: PEER_FAILED_VERIFICATION (60)."""
    with tls_server(ca, "other.example") as srv:
        easy, _body = fetch(srv.url(), ca_file=ca_file)
    assert easy.result is Code.PEER_FAILED_VERIFICATION
    assert "127.0.0.1" in easy.error or "mismatch" in easy.error.lower()
    assert srv.requests == []


def test_expired_certificate_rejected(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """A trusted certificate for the right name that has expired: 60."""
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = ca.issue_cert("127.0.0.1", not_before=past, not_after=past + datetime.timedelta(days=1))
    with HttpServer(lambda _r: HELLO, ssl_context=server_context(cert)) as srv:
        easy, _body = fetch(srv.url(), ca_file=ca_file)
    assert easy.result is Code.PEER_FAILED_VERIFICATION
    assert "expired" in easy.error
    assert srv.requests == []


def test_verify_false_accepts_untrusted_and_mismatched(fetch: Fetch) -> None:
    """verify=False takes a certificate from an unknown CA for another name."""
    with tls_server(trustme.CA(), "other.example") as srv:
        easy, body = fetch(srv.url(), verify=False)
    assert easy.result is Code.OK, easy.error
    assert body == b"hello over tls"


def test_tls_connection_kept_alive_and_reused(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """A second transfer to the same origin reuses the TLS connection: no new connect."""
    with tls_server(ca) as srv:
        first, body1 = fetch(srv.url("/1"), ca_file=ca_file)
        second, body2 = fetch(srv.url("/2"), ca_file=ca_file)
    assert (first.result, second.result) == (Code.OK, Code.OK)
    assert body1 == body2 == b"hello over tls"
    assert (first.num_connects, second.num_connects) == (1, 0)
    assert second.local_port == first.local_port
    assert srv.accepted == 1
    assert [r.client_port for r in srv.requests] == [first.local_port] * 2


def test_unverified_connection_not_reused_by_verified_transfer(fetch: Fetch) -> None:
    """A verify=False connection is never handed to a verify=True transfer: that one fails 60."""
    with tls_server(trustme.CA()) as srv:
        loose, _ = fetch(srv.url("/loose"), verify=False)
        strict, body = fetch(srv.url("/strict"))
    assert loose.result is Code.OK, loose.error
    assert strict.result is Code.PEER_FAILED_VERIFICATION
    assert body == b""
    assert strict.num_connects == 1
    assert srv.accepted == 2
    assert [r.target for r in srv.requests] == ["/loose"]


def test_verified_transfer_opens_its_own_connection(
    fetch: Fetch, ca: trustme.CA, ca_file: str
) -> None:
    """Same CA file, verify off then on: the verified transfer still makes its own handshake."""
    with tls_server(ca) as srv:
        loose, _ = fetch(srv.url("/loose"), verify=False, ca_file=ca_file)
        strict, _ = fetch(srv.url("/strict"), ca_file=ca_file)
    assert (loose.result, strict.result) == (Code.OK, Code.OK)
    assert strict.num_connects == 1
    assert strict.local_port != loose.local_port
    assert srv.accepted == 2


def test_stale_pooled_tls_connection_replaced(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """The server closes an idle TLS connection: the next transfer connects anew, OK."""
    served = threading.Event()

    def once_then_close(peer: Peer) -> None:
        request = peer.read_request()
        if request is not None:  # recorded in srv.requests by read_request
            peer.send(HELLO)
            served.set()
        # return: the connection closes (close_notify, then FIN) without a word

    cert = ca.issue_cert("127.0.0.1")
    with Server(once_then_close, ssl_context=server_context(cert)) as srv:
        first, _ = fetch(srv.url("/1"), ca_file=ca_file)
        assert served.wait(5)
        assert srv.wait_for(lambda: srv.active == 0)  # closed: the pool's check sees it
        second, body = fetch(srv.url("/2"), ca_file=ca_file)
    assert (first.result, second.result) == (Code.OK, Code.OK), second.error
    assert body == b"hello over tls"
    assert second.num_connects == 1
    assert srv.accepted == 2
    assert srv.paths() == ["/1", "/2"]  # found closed before reuse: nothing sent on it


def test_pooled_tls_connection_closed_when_the_request_arrives_is_retried(
    fetch: Fetch, ca: trustme.CA, ca_file: str
) -> None:
    """The retry path over TLS: the kept connection is alive when reused, the server reads
    the second request on it and closes without a word; the request is sent again on a
    fresh connection, OK (the server saw /2 twice)."""

    def one_answer_per_connection(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.send(HELLO)
            peer.read_request()  # the next request on this connection: never answered

    cert = ca.issue_cert("127.0.0.1")
    with Server(one_answer_per_connection, ssl_context=server_context(cert)) as srv:
        first, _ = fetch(srv.url("/1"), ca_file=ca_file)
        second, body = fetch(srv.url("/2"), ca_file=ca_file)
        assert srv.wait_for(lambda: len(srv.requests) == 3)
    assert (first.result, second.result) == (Code.OK, Code.OK), second.error
    assert body == b"hello over tls"
    assert srv.paths() == ["/1", "/2", "/2"]
    assert srv.accepted == 2
    assert second.num_connects == 1


def test_large_body_and_upload_over_tls(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """A 1 MiB upload and a 6 MiB download cross the MemoryBIO intact."""
    upload = bytes(range(256)) * 4096
    download = hashlib.sha256(b"seed").digest() * (6 * 1024 * 1024 // 32)

    def app(request: Request) -> bytes:
        digest = hashlib.sha256(request.body).hexdigest()
        return response(200, download, [("X-Upload-Sha256", digest)])

    with tls_server(ca, app=app) as srv:
        easy, body = fetch(srv.url("/up"), ca_file=ca_file, method="POST", body=upload)
    assert easy.result is Code.OK, easy.error
    assert srv.requests[0].body == upload
    assert hashlib.sha256(body).digest() == hashlib.sha256(download).digest()
    assert easy.size_download == len(download)


def test_stalled_handshake_times_out(fetch: Fetch, ca_file: str) -> None:
    """A server that takes the ClientHello and never answers: 28 after connect_timeout_ms."""
    with Server(hold) as srv:
        started = time.monotonic()
        easy, _ = fetch(srv.url(scheme="https"), ca_file=ca_file, connect_timeout_ms=300)
        elapsed = time.monotonic() - started
    assert easy.result is Code.OPERATION_TIMEDOUT
    assert "timed out" in easy.error.lower()
    assert 0.25 <= elapsed < 5
    assert easy.appconnect_time == 0


def test_plain_http_on_tls_port(fetch: Fetch, ca_file: str) -> None:
    """A plain HTTP answer to the ClientHello is a TLS connect error (35), not a response."""
    plain = response(400, b"plain http here", [("Connection", "close")])
    with Server(answer_once(plain)) as srv:
        easy, body = fetch(srv.url(scheme="https"), ca_file=ca_file)
    assert easy.result is Code.SSL_CONNECT_ERROR
    assert body == b""
    assert easy.response_code == 0


def test_handshake_failure_alert(fetch: Fetch, ca_file: str) -> None:
    """A server answering with a fatal handshake_failure alert: SSL_CONNECT_ERROR (35)."""
    alert = b"\x15\x03\x03\x00\x02\x02\x28"  # TLS record: alert, fatal, handshake_failure
    with Server(answer_once(alert)) as srv:
        easy, _ = fetch(srv.url(scheme="https"), ca_file=ca_file)
    assert easy.result is Code.SSL_CONNECT_ERROR
    assert easy.error


def test_server_closes_mid_handshake(fetch: Fetch, ca_file: str) -> None:
    """The server reads the ClientHello and closes: SSL_CONNECT_ERROR (35)."""
    with Server(answer_once(b"")) as srv:
        easy, _ = fetch(srv.url(scheme="https"), ca_file=ca_file)
    assert easy.result is Code.SSL_CONNECT_ERROR
    assert easy.error


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "abrupt"])
def test_body_until_close_over_tls(
    fetch: Fetch, ca: trustme.CA, ca_file: str, close_notify: bool
) -> None:
    """No Content-Length: the body ends when the server closes, with or without close_notify."""

    def answer(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\n\r\n" + b"until close " * 1000)
            if close_notify:
                assert isinstance(peer.sock, ssl.SSLSocket)
                peer.sock.unwrap()

    with Server(answer, ssl_context=server_context(ca.issue_cert("127.0.0.1"))) as srv:
        easy, body = fetch(srv.url(), ca_file=ca_file)
    assert easy.result is Code.OK, easy.error
    assert body == b"until close " * 1000
    assert srv.errors == []


def test_short_body_over_tls_is_partial_file(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """A TLS server closing before Content-Length bytes: PARTIAL_FILE (18), as curl."""

    def answer(peer: Peer) -> None:
        if peer.read_request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")

    with Server(answer, ssl_context=server_context(ca.issue_cert("127.0.0.1"))) as srv:
        easy, body = fetch(srv.url(), ca_file=ca_file)
    assert easy.result is Code.PARTIAL_FILE, easy.error
    assert body == b"abc"


def test_handshake_and_body_in_tiny_pieces(fetch: Fetch, ca: trustme.CA, ca_file: str) -> None:
    """TLS records split into 7-byte reads (through a relay): handshake and body still complete."""
    payload = bytes(range(256)) * 16
    with (
        tls_server(ca, app=lambda _r: response(200, payload)) as srv,
        Server(relay(srv.port)) as hop,
    ):
        easy, body = fetch(hop.url(scheme="https"), ca_file=ca_file)
    assert easy.result is Code.OK, easy.error
    assert body == payload
    assert srv.accepted == 1


def test_concurrent_handshakes(drv: SelectorDriver, ca: trustme.CA, ca_file: str) -> None:
    """Eight https transfers at once on one multi: eight handshakes interleaved, all OK.

    HTTP/1.1 only: offering h2, the other seven would wait for the first one's ALPN
    answer (PIPEWAIT) and then might reuse connections instead of opening their own."""
    bodies: list[bytearray] = [bytearray() for _ in range(8)]
    with tls_server(ca, app=lambda r: response(200, r.target.encode() * 5000)) as srv:
        easies = [
            Easy(
                srv.url(f"/{i}"),
                write_function=bodies[i].extend,
                ca_file=ca_file,
                http_version="1.1",
            )
            for i in range(8)
        ]
        drv.perform(*easies, timeout=20)
    for i, easy in enumerate(easies):
        assert easy.result is Code.OK, easy.error
        assert bytes(bodies[i]) == f"/{i}".encode() * 5000
    assert srv.accepted == 8
