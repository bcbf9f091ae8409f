"""Which failure gets which code (docs/engine.md's table), each against a server failing so.

Every failing transfer is followed by one to a good server on the same multi:
a failure must leave nothing behind that hurts the next transfer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from servers import (
    HELLO,
    Blackhole,
    HTTPServer,
    Server,
    answers_with,
    closed_port,
    closes_before_any_byte,
    never_answers,
    raw,
    tls_context,
)

from hiperfifo.engine import Code, Easy

Fetch = Callable[..., tuple[Any, bytes]]


def fails_with(
    fetch: Fetch, good: HTTPServer, url: str, code: Code, **options: Any
) -> tuple[Any, bytes]:
    """Run a transfer that must fail with `code`, then one to `good` that must succeed."""
    easy, body = fetch(url, **options)
    assert easy.result == code, f"{easy.result!r} {easy.error!r}"
    assert easy.error, "a failure must say why in easy.error"
    after, after_body = fetch(good.url())
    assert after.result == Code.OK, f"the next transfer failed: {after.result!r} {after.error!r}"
    assert after_body == HELLO
    return easy, body


def test_refused_port_is_couldnt_connect_7(fetch: Fetch, http_server: HTTPServer) -> None:
    """A port where nothing listens fails with COULDNT_CONNECT (7)."""
    easy, _ = fails_with(
        fetch, http_server, f"http://127.0.0.1:{closed_port()}/", Code.COULDNT_CONNECT
    )
    assert easy.response_code == 0


def test_unresolvable_name_is_couldnt_resolve_host_6(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """A name under .invalid (RFC 6761: never resolves) fails with COULDNT_RESOLVE_HOST (6)."""
    easy, _ = fails_with(
        fetch, http_server, "http://nonexistent.invalid/", Code.COULDNT_RESOLVE_HOST
    )
    assert "nonexistent.invalid" in easy.error


def test_no_answer_within_timeout_ms_is_operation_timedout_28(
    fetch: Fetch, http_server: HTTPServer, serve: Callable[[Server], Server]
) -> None:
    """A server that accepts and never answers fails with OPERATION_TIMEDOUT (28) at timeout_ms."""
    silent = serve(never_answers())
    easy, _ = fails_with(fetch, http_server, silent.url(), Code.OPERATION_TIMEDOUT, timeout_ms=300)
    assert 0.25 <= easy.total_time < 2.0


def test_no_connect_within_connect_timeout_ms_is_operation_timedout_28(
    fetch: Fetch, http_server: HTTPServer, serve: Callable[[Blackhole], Blackhole]
) -> None:
    """A connect that never completes fails with OPERATION_TIMEDOUT (28) at connect_timeout_ms."""
    hole = serve(Blackhole())
    easy, _ = fails_with(
        fetch, http_server, hole.url(), Code.OPERATION_TIMEDOUT, connect_timeout_ms=300
    )
    assert 0.25 <= easy.total_time < 2.0


@pytest.mark.parametrize(
    "reply",
    [b"SSH-2.0-OpenSSH_9.2p1\r\n", b"hello there, I am not HTTP\r\n\r\n"],
    ids=["ssh-banner", "plain-text"],
)
def test_reply_not_starting_with_http_is_unsupported_protocol_1(
    fetch: Fetch, http_server: HTTPServer, serve: Callable[[Server], Server], reply: bytes
) -> None:
    """A reply that is not HTTP at all (libcurl: HTTP/0.9, refused) is UNSUPPORTED_PROTOCOL (1)."""
    odd = serve(answers_with(reply))
    fails_with(fetch, http_server, odd.url(), Code.UNSUPPORTED_PROTOCOL)


def test_status_line_with_non_numeric_code_is_unsupported_protocol_1(
    fetch: Fetch, http_server: HTTPServer, serve: Callable[[Server], Server]
) -> None:
    """`HTTP/1.1 abc OK` fails with UNSUPPORTED_PROTOCOL (1), as libcurl answers it."""
    odd = serve(answers_with(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"))
    fails_with(fetch, http_server, odd.url(), Code.UNSUPPORTED_PROTOCOL)


def test_header_line_without_colon_is_weird_server_reply_8(
    fetch: Fetch, http_server: HTTPServer, serve: Callable[[Server], Server]
) -> None:
    """A header line without a colon after a valid status line is WEIRD_SERVER_REPLY (8)."""
    odd = serve(
        answers_with(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nthis has no colon\r\n\r\nok")
    )
    fails_with(fetch, http_server, odd.url(), Code.WEIRD_SERVER_REPLY)


def test_closed_before_any_byte_is_got_nothing_52(
    fetch: Fetch, http_server: HTTPServer, serve: Callable[[Server], Server]
) -> None:
    """A fresh connection closed (FIN) before any reply byte is GOT_NOTHING (52)."""
    mute = serve(closes_before_any_byte())
    fails_with(fetch, http_server, mute.url(), Code.GOT_NOTHING)
    assert mute.accepted == 1, "a fresh connection is not retried"


def test_clean_close_before_content_length_is_partial_file_18(
    fetch: Fetch, http_server: HTTPServer, serve: Callable[[Server], Server]
) -> None:
    """Content-Length 10, 3 bytes, then FIN: PARTIAL_FILE (18), the 3 bytes delivered."""
    short = serve(answers_with(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
    easy, body = fails_with(fetch, http_server, short.url(), Code.PARTIAL_FILE)
    assert easy.response_code == 200
    assert body == b"abc"


def test_reset_mid_body_is_recv_error_56(
    fetch: Fetch, http_server: HTTPServer, serve: Callable[[Server], Server]
) -> None:
    """Headers and 10 of 100 body bytes, then RST: RECV_ERROR (56), not PARTIAL_FILE."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
    rude = serve(HTTPServer(default=raw(head, then="reset", delay=0.1)))
    easy, _ = fails_with(fetch, http_server, rude.url(), Code.RECV_ERROR)
    assert easy.response_code == 200


def test_more_redirects_than_max_redirs_is_too_many_redirects_47(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """A redirect loop followed with max_redirs=3 stops with TOO_MANY_REDIRECTS (47)."""
    easy, _ = fails_with(
        fetch,
        http_server,
        http_server.url("/loop"),
        Code.TOO_MANY_REDIRECTS,
        follow_location=True,
        max_redirs=3,
    )
    assert easy.redirect_count == 3
    assert easy.response_code == 302


def tls_server(ca: trustme.CA, *names: str) -> HTTPServer:
    """An HTTPS server with a certificate for `names`, signed by `ca`."""
    ok = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return HTTPServer(default=ok, ssl_context=tls_context(ca, *names))


def test_untrusted_certificate_is_peer_failed_verification_60(
    fetch: Fetch, http_server: HTTPServer, serve: Callable[[Server], Server], ca: trustme.CA
) -> None:
    """A certificate from a CA nobody trusts fails with PEER_FAILED_VERIFICATION (60)."""
    tls = serve(tls_server(ca, "127.0.0.1"))
    fails_with(fetch, http_server, tls.url(), Code.PEER_FAILED_VERIFICATION)


def test_certificate_for_another_host_is_peer_failed_verification_60(
    fetch: Fetch,
    http_server: HTTPServer,
    serve: Callable[[Server], Server],
    ca: trustme.CA,
    tmp_path: Path,
) -> None:
    """A trusted certificate for another name fails with PEER_FAILED_VERIFICATION (60)."""
    tls = serve(tls_server(ca, "other.example"))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    fails_with(fetch, http_server, tls.url(), Code.PEER_FAILED_VERIFICATION, ca_file=str(ca_file))


@pytest.mark.parametrize("returned", [0, 1, -1], ids=["zero", "short", "negative"])
def test_write_callback_returning_other_count_is_write_error_23(
    fetch: Fetch, http_server: HTTPServer, returned: int
) -> None:
    """A write callback that returns a count other than len(data) aborts with WRITE_ERROR (23)."""
    fails_with(
        fetch, http_server, http_server.url(), Code.WRITE_ERROR, write_function=lambda d: returned
    )


def test_write_callback_returning_full_count_is_ok(fetch: Fetch, http_server: HTTPServer) -> None:
    """A write callback returning exactly len(data) (or None) is a normal write."""
    got = bytearray()

    def write(data: bytes) -> int:
        got.extend(data)
        return len(data)

    easy, _ = fetch(http_server.url(), write_function=write)
    assert easy.result == Code.OK
    assert easy.error == ""
    assert bytes(got) == HELLO


def test_progress_callback_returning_true_is_aborted_by_callback_42(
    fetch: Fetch, http_server: HTTPServer
) -> None:
    """A progress callback returning a truthy value aborts with ABORTED_BY_CALLBACK (42)."""
    fails_with(
        fetch,
        http_server,
        http_server.url(),
        Code.ABORTED_BY_CALLBACK,
        progress_function=lambda *_: True,
    )


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:99999/", "http:///no-host", "http://[::1/", "http://exa mple.org/"],
    ids=["port-out-of-range", "no-host", "open-bracket", "space-in-host"],
)
def test_url_that_does_not_parse_is_url_malformat_3(
    fetch: Fetch, http_server: HTTPServer, url: str
) -> None:
    """A URL that does not parse fails with URL_MALFORMAT (3) at info_read time, no exception."""
    fails_with(fetch, http_server, url, Code.URL_MALFORMAT)


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/file", "file:///etc/passwd", "gopher://127.0.0.1/", "ws://h/"]
)
def test_scheme_other_than_http_is_unsupported_protocol_1(
    fetch: Fetch, http_server: HTTPServer, url: str
) -> None:
    """A scheme other than http/https fails with UNSUPPORTED_PROTOCOL (1) before any I/O."""
    easy, _ = fails_with(fetch, http_server, url, Code.UNSUPPORTED_PROTOCOL)
    assert easy.num_connects == 0


def test_bad_url_fails_through_info_read_not_as_exception(drv: Any) -> None:
    """Easy() and add_handle accept a bad URL; the failure arrives as a DONE message."""
    easy = Easy("http://127.0.0.1:99999/")
    drv.multi.add_handle(easy)
    messages = drv.run(timeout=5)
    drv.multi.remove_handle(easy)
    assert [(m.easy, m.result) for m in messages] == [(easy, Code.URL_MALFORMAT)]


def test_http_error_status_is_ok_result(fetch: Fetch, http_server: HTTPServer) -> None:
    """A 404 is a successful transfer (result OK, response_code 404), as in libcurl."""
    easy, body = fetch(http_server.url("/missing"))
    assert easy.result == Code.OK
    assert easy.response_code == 404
    assert body == b"not found"


def test_every_code_has_a_strerror_text() -> None:
    """strerror gives a short text for every Code and MCode, like curl_easy_strerror."""
    from hiperfifo.engine import MCode, strerror

    for code in [*Code, *MCode]:
        text = strerror(code)
        assert isinstance(text, str)
        assert text.strip()
    assert strerror(Code.OPERATION_TIMEDOUT) != strerror(Code.COULDNT_CONNECT)
