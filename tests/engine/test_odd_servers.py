"""Odd but real servers (issue 18): libcurl's verdict on each, and never a wait.

Each server sends exact bytes in small pieces and keeps the connection open
unless the reply says otherwise, as a keep-alive server does: an engine that
waits for something libcurl does not wait for would hang here, and the
transfers have a 5 s timeout_ms so that a hang shows as OPERATION_TIMEDOUT
(28), never as a stuck test. After each odd one, a transfer to a good server
on the same multi must still succeed. Where the engine deliberately answers
otherwise than libcurl, docs/engine.md says so and why.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from servers import HELLO, HTTPServer, Peer, Server, in_pieces, respond

from hiperfifo.engine import Code

Fetch = Callable[..., tuple[Any, bytes]]
OK_HEAD = b"HTTP/1.1 200 OK\r\n"
CHUNKED_HEAD = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"


def outcome(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], good: HTTPServer, route: Any
) -> tuple[Code, bytes, Any]:
    """Fetch from a server answering with `route`, then check a good transfer still works."""
    odd = serve(HTTPServer(default=route))
    easy, body = fetch(odd.url(), timeout_ms=5000)
    assert easy.result is Code.OK or easy.error, "a failure must say why in easy.error"
    after, after_body = fetch(good.url())
    assert (after.result, after_body) == (Code.OK, HELLO), after.error
    return easy.result, body, easy


# --- 1. hangs: a transfer that cannot go on must end, with libcurl's code -------------


@pytest.mark.parametrize(
    "body",
    [b"5\nhello\n0\n\n", b"5\r\nhello\n0\r\n\r\n", b"5\nhello\r\n0\n\r\n", b"5;x\nhello\n0\n\n"],
    ids=["all-bare-lf", "bare-lf-after-data", "bare-lf-size-lines", "extension"],
)
def test_chunk_lines_ending_in_bare_lf_are_read_as_libcurl_reads_them(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], http_server: HTTPServer, body: bytes
) -> None:
    """libcurl ends a chunk-size line at its LF: OK (0) with the body, connection held open."""
    result, got, _ = outcome(fetch, serve, http_server, in_pieces(CHUNKED_HEAD + body))
    assert (result, got) == (Code.OK, b"hello")


@pytest.mark.parametrize("size", [3, 4096], ids=["small-pieces", "one-piece"])
def test_garbage_after_100_continue_is_weird_server_reply_8(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], http_server: HTTPServer, size: int
) -> None:
    """A 100 Continue head, then bytes that cannot start a status line: 8 at once (libcurl),
    however the bytes arrive (was a wait, or 1)."""
    reply = b"HTTP/1.1 100 Continue\r\n\r\ngarbage"
    result, _, easy = outcome(fetch, serve, http_server, in_pieces(reply, size=size))
    assert result is Code.WEIRD_SERVER_REPLY, easy.error
    assert easy.total_time < 4


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: /next\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 301 Moved Permanently\r\nLocation: /next\r\n\r\n",
        b"HTTP/1.1 302 Found\r\nLocation: /next\r\nConnection: close\r\n"
        b"Content-Length: 100000\r\n\r\n",
    ],
    ids=["close-no-length", "http10-no-length", "close-long-length"],
)
def test_redirect_on_a_closing_connection_is_followed_after_its_head(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], head: bytes
) -> None:
    """A redirect whose connection ends with it, the server holding it open mid-body: when
    following, libcurl stops after the head and follows (0); the engine waited for the close."""
    stuck = in_pieces(head + b"<html>moved, and the rest never comes", then="hold")
    server = serve(HTTPServer({"/next": respond(b"arrived")}, default=stuck))
    easy, body = fetch(server.url("/start"), timeout_ms=5000, follow_location=True)
    assert (easy.result, body) == (Code.OK, b"arrived"), easy.error
    assert server.paths() == ["/start", "/next"]
    assert easy.total_time < 4


def test_redirect_on_a_kept_connection_is_read_to_its_end_and_the_connection_reused(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """The control: a redirect on a keep-alive connection is read whole (libcurl ignores its
    body to keep the connection), and the next hop reuses the connection."""
    moved = in_pieces(
        b"HTTP/1.1 301 Moved\r\nLocation: /next\r\nContent-Length: 5\r\n\r\nmoved", then="keep"
    )
    server = serve(HTTPServer({"/next": respond(b"arrived")}, default=moved))
    easy, body = fetch(server.url("/start"), timeout_ms=5000, follow_location=True)
    assert (easy.result, body) == (Code.OK, b"arrived"), easy.error
    assert server.accepted == 1


@pytest.mark.parametrize("then_close", [False, True], ids=["held-open", "closed"])
def test_upload_refused_early_ends_with_the_servers_answer(
    fetch: Fetch, serve: Callable[[Server], Server], then_close: bool
) -> None:
    """A server that answers a POST with 413 after its head and stops reading the body: libcurl
    reads while it sends, stops sending and reports the answer (0, 413); the engine waited to
    write until timeout_ms (28)."""

    def handler(peer: Peer) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            more = peer.recv()
            if not more:
                return
            data += more
        peer.send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
        if not then_close:
            peer.server.stopping.wait()  # neither reads nor closes

    server = serve(Server(handler))
    easy, body = fetch(server.url("/up"), timeout_ms=5000, method="POST", body=b"x" * (16 << 20))
    assert (easy.result, easy.response_code, body) == (Code.OK, 413, b"big!"), easy.error
    assert easy.total_time < 4


# --- 2. what libcurl accepts ---------------------------------------------------------


@pytest.mark.parametrize("digits", ["99999999999999999999", "9" * 25], ids=["20", "25"])
def test_content_length_beyond_2_pow_63_is_ignored_and_the_body_read_to_the_close(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], http_server: HTTPServer, digits: str
) -> None:
    """libcurl ignores an overflowing Content-Length and reads until the close: 0 (was 18/8)."""
    reply = OK_HEAD + f"Content-Length: {digits}\r\n\r\n".encode() + b"hello"
    result, got, _ = outcome(fetch, serve, http_server, in_pieces(reply, then="close"))
    assert (result, got) == (Code.OK, b"hello")


@pytest.mark.parametrize(
    "lines",
    [b"Content-Length: 5\r\nContent-Length: 5\r\n", b"Content-Length: 5, 05\r\n"],
    ids=["two-headers", "list"],
)
def test_repeated_equal_content_length_is_one_length(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], http_server: HTTPServer, lines: bytes
) -> None:
    """Equal values (as numbers) in two headers or a list: OK (0), as libcurl."""
    reply = OK_HEAD + lines + b"\r\nhello"
    result, got, _ = outcome(fetch, serve, http_server, in_pieces(reply))
    assert (result, got) == (Code.OK, b"hello")


def test_conflicting_content_length_is_weird_server_reply_8(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], http_server: HTTPServer
) -> None:
    reply = OK_HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    result, _, easy = outcome(fetch, serve, http_server, in_pieces(reply))
    assert result is Code.WEIRD_SERVER_REPLY, easy.error


def test_folded_first_header_line_is_a_header(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], http_server: HTTPServer
) -> None:
    """An obs-fold line right after the status line: libcurl takes it as a header (0)."""
    lines: list[bytes] = []
    reply = OK_HEAD + b" X-Folded: yes\r\nContent-Length: 5\r\n\r\nhello"
    route = in_pieces(reply)
    odd = serve(HTTPServer(default=route))
    easy, body = fetch(odd.url(), timeout_ms=5000, header_function=lines.append)
    assert (easy.result, body) == (Code.OK, b"hello"), easy.error
    assert b"X-Folded: yes\r\n" in lines


@pytest.mark.parametrize(
    "coding",
    [
        b"chunked, chunked",
        b"identity, chunked",
        b"Chunked",
        b"chunked\r\nTransfer-Encoding: chunked",
    ],
    ids=["chunked-twice", "identity-first", "capital", "two-headers"],
)
def test_transfer_encoding_lists_libcurl_reads_as_chunked(
    fetch: Fetch,
    serve: Callable[[HTTPServer], HTTPServer],
    http_server: HTTPServer,
    coding: bytes,
) -> None:
    reply = OK_HEAD + b"Transfer-Encoding: " + coding + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    result, got, _ = outcome(fetch, serve, http_server, in_pieces(reply))
    assert (result, got) == (Code.OK, b"hello")


@pytest.mark.parametrize(
    "coding",
    [b"gzip, chunked", b"chunked, identity", b"chunked, gzip", b"foo", b"chunked;q=1"],
    ids=["gzip-first", "identity-after", "gzip-after", "unknown", "parameter"],
)
def test_transfer_encoding_libcurl_refuses_is_bad_content_encoding_61(
    fetch: Fetch,
    serve: Callable[[HTTPServer], HTTPServer],
    http_server: HTTPServer,
    coding: bytes,
) -> None:
    """libcurl decodes only chunked: any other coding is 61 (was 8)."""
    reply = OK_HEAD + b"Transfer-Encoding: " + coding + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    result, _, easy = outcome(fetch, serve, http_server, in_pieces(reply))
    assert result is Code.BAD_CONTENT_ENCODING, easy.error


def test_three_host_headers_given_are_all_sent(
    fetch: Fetch, serve: Callable[[Server], Server]
) -> None:
    """libcurl sends every Host header the user gave (the engine refused before sending: 43)."""
    heads: list[bytes] = []

    def handler(peer: Peer) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            more = peer.recv()
            if not more:
                return
            data += more
        heads.append(data)
        peer.send(OK_HEAD + b"Content-Length: 5\r\n\r\nhello")
        peer.hold()

    server = serve(Server(handler))
    hosts = [("Host", "one.example"), ("Host", "two.example"), ("Host", "three.example")]
    easy, body = fetch(server.url(), timeout_ms=5000, headers=hosts)
    assert (easy.result, body) == (Code.OK, b"hello"), easy.error
    lines = heads[0].split(b"\r\n")
    assert lines[1:4] == [b"Host: one.example", b"Host: two.example", b"Host: three.example"]
    assert sum(line.lower().startswith(b"host:") for line in lines) == 3


def encoded_reply(body: bytes, *codings: bytes) -> bytes:
    """A Content-Length response whose Content-Encoding header(s) are `codings`, in order."""
    lines = b"".join(b"Content-Encoding: " + coding + b"\r\n" for coding in codings)
    return OK_HEAD + lines + b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize("coding", [b"none", b"identity", b"None, identity"])
def test_content_encoding_none_passes_the_body_through(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], http_server: HTTPServer, coding: bytes
) -> None:
    """libcurl's identity coding and its alias `none`: the body as sent, 0 (was 61)."""
    route = in_pieces(encoded_reply(b"hello", coding))
    odd = serve(HTTPServer(default=route))
    easy, body = fetch(odd.url(), timeout_ms=5000, accept_encoding="")
    assert (easy.result, body) == (Code.OK, b"hello"), easy.error


@pytest.mark.parametrize(
    "codings",
    [(b"deflate, identity, gzip",), (b"deflate", b"identity", b"gzip"), (b"deflate,gzip",)],
    ids=["one-header", "three-headers", "no-blank"],
)
def test_stacked_content_encodings_are_decoded_in_order(
    fetch: Fetch,
    serve: Callable[[HTTPServer], HTTPServer],
    codings: tuple[bytes, ...],
) -> None:
    """deflate, then identity, then gzip applied: undone gzip first, then deflate (0, was 61)."""
    body = gzip.compress(zlib.compress(b"hello, stacked"))
    odd = serve(HTTPServer(default=in_pieces(encoded_reply(body, *codings))))
    easy, got = fetch(odd.url(), timeout_ms=5000, accept_encoding="")
    assert (easy.result, got) == (Code.OK, b"hello, stacked"), easy.error


def test_more_than_five_content_encodings_are_bad_content_encoding_61(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """libcurl refuses a stack of more than 5 codings (identity counts)."""
    odd = serve(
        HTTPServer(default=in_pieces(encoded_reply(b"hello", b"identity, " * 5 + b"none")))
    )
    easy, _ = fetch(odd.url(), timeout_ms=5000, accept_encoding="")
    assert easy.result is Code.BAD_CONTENT_ENCODING, easy.error


def test_multi_member_gzip_is_decoded_whole(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Two gzip members: both decoded (a documented difference: libcurl stops with 23; the
    engine used to keep the first member and drop the rest without a word)."""
    body = gzip.compress(b"first member, ") + gzip.compress(b"second member")
    odd = serve(HTTPServer(default=in_pieces(encoded_reply(body, b"gzip"))))
    easy, got = fetch(odd.url(), timeout_ms=5000, accept_encoding="")
    assert (easy.result, got) == (Code.OK, b"first member, second member"), easy.error


@pytest.mark.parametrize(
    "body",
    [gzip.compress(b"hello") + b"junk", zlib.compress(b"hello") + b"\x00"],
    ids=["gzip", "deflate"],
)
def test_bytes_after_the_compressed_stream_are_write_error_23(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], body: bytes
) -> None:
    """libcurl's answer to bytes after the end of the stream (they were dropped unseen)."""
    coding = b"gzip" if body.startswith(b"\x1f\x8b") else b"deflate"
    odd = serve(HTTPServer(default=in_pieces(encoded_reply(body, coding))))
    easy, _ = fetch(odd.url(), timeout_ms=5000, accept_encoding="")
    assert easy.result is Code.WRITE_ERROR, easy.error


def test_unknown_content_encoding_without_a_body_is_fine(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """libcurl fails an unknown coding at its first body byte: a HEAD answer is 0."""
    reply = OK_HEAD + b"Content-Encoding: x-unheard-of\r\nContent-Length: 5\r\n\r\n"
    odd = serve(HTTPServer(default=in_pieces(reply, then="keep")))
    easy, _ = fetch(odd.url(), timeout_ms=5000, accept_encoding="", method="HEAD")
    assert easy.result is Code.OK, easy.error


@pytest.mark.parametrize("location", [b"Location:", b"Location:   "], ids=["empty", "blank"])
def test_empty_location_is_not_followed(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], location: bytes
) -> None:
    """libcurl ignores an empty Location: the 3xx is the answer, 0 (was: followed to itself
    until TOO_MANY_REDIRECTS, 47)."""
    reply = b"HTTP/1.1 302 Found\r\n" + location + b"\r\nContent-Length: 4\r\n\r\nbody"
    odd = serve(HTTPServer(default=in_pieces(reply, then="keep")))
    easy, body = fetch(odd.url("/start"), timeout_ms=5000, follow_location=True)
    assert (easy.result, easy.response_code, body) == (Code.OK, 302, b"body"), easy.error
    assert easy.redirect_count == 0
    assert odd.paths() == ["/start"]


# --- 3. what libcurl refuses ---------------------------------------------------------


def test_http_1_2_status_line_is_unsupported_protocol_1(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], http_server: HTTPServer
) -> None:
    reply = b"HTTP/1.2 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    result, _, easy = outcome(fetch, serve, http_server, in_pieces(reply))
    assert result is Code.UNSUPPORTED_PROTOCOL, easy.error


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (b"099 Low", Code.UNSUPPORTED_PROTOCOL),
        (b"101 Switching Protocols", Code.WEIRD_SERVER_REPLY),
    ],
    ids=["below-100", "101-unasked"],
)
def test_status_libcurl_refuses(
    fetch: Fetch,
    serve: Callable[[HTTPServer], HTTPServer],
    http_server: HTTPServer,
    status: bytes,
    code: Code,
) -> None:
    """A status below 100 is not HTTP to libcurl (1; h11's refusal read as 8 before); a 101
    nobody asked for is 8 (libcurl: unexpected 101)."""
    reply = b"HTTP/1.1 " + status + b"\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nbytes"
    result, _, easy = outcome(fetch, serve, http_server, in_pieces(reply))
    assert result is code, easy.error


@pytest.mark.parametrize("follow", [True, False], ids=["following", "not-following"])
def test_two_different_locations_are_weird_server_reply_8(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], follow: bool
) -> None:
    """Which one would it follow? libcurl refuses the reply (8; the engine followed the first)."""
    reply = b"HTTP/1.1 301 Moved\r\nLocation: /a\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n"
    odd = serve(HTTPServer({"/a": respond(b"a"), "/b": respond(b"b")}, default=in_pieces(reply)))
    easy, _ = fetch(odd.url("/start"), timeout_ms=5000, follow_location=follow)
    assert easy.result is Code.WEIRD_SERVER_REPLY, easy.error
    assert odd.paths() == ["/start"]


def test_the_same_location_twice_is_followed(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    reply = b"HTTP/1.1 301 Moved\r\nLocation: /a\r\nLocation: /a\r\nContent-Length: 0\r\n\r\n"
    odd = serve(HTTPServer({"/a": respond(b"a")}, default=in_pieces(reply, then="keep")))
    easy, body = fetch(odd.url("/start"), timeout_ms=5000, follow_location=True)
    assert (easy.result, body, odd.paths()) == (Code.OK, b"a", ["/start", "/a"]), easy.error


@pytest.mark.parametrize(("count", "code"), [(5000, Code.OK), (5001, Code.TOO_LARGE)])
def test_more_than_5000_header_lines_is_too_large_100(
    fetch: Fetch,
    serve: Callable[[HTTPServer], HTTPServer],
    http_server: HTTPServer,
    count: int,
    code: Code,
) -> None:
    reply = OK_HEAD + b"X-N: 1\r\n" * (count - 1) + b"Content-Length: 5\r\n\r\nhello"
    result, _, easy = outcome(fetch, serve, http_server, in_pieces(reply, size=4096))
    assert result is code, easy.error


def test_header_line_over_100_kib_is_too_large_100(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], http_server: HTTPServer
) -> None:
    """One 150 KiB header line, never ended: TOO_LARGE (100) as it arrives (was 56)."""
    reply = OK_HEAD + b"X-Big: " + b"x" * (150 * 1024)
    result, _, easy = outcome(fetch, serve, http_server, in_pieces(reply, size=4096))
    assert result is Code.TOO_LARGE, easy.error
    assert easy.total_time < 4


@pytest.mark.parametrize(
    "reply",
    [OK_HEAD + b"Content-Len", OK_HEAD + b"Content-Length: 5\r\n", b"HTTP/1.1 200"],
    ids=["mid-line", "between-lines", "status-line"],
)
def test_connection_closed_in_the_headers_is_partial_file_18(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer], http_server: HTTPServer, reply: bytes
) -> None:
    """A clean close in the middle of the headers: 18, as libcurl (was 56)."""
    result, _, easy = outcome(fetch, serve, http_server, in_pieces(reply, then="close"))
    assert result is Code.PARTIAL_FILE, easy.error


@pytest.mark.parametrize(
    "trailer", [b"X-T: a\x00b\r\n", b"\x00\r\n", b"no colon\r\n"], ids=["nul", "nul-only", "colon"]
)
def test_bad_chunked_trailer_is_weird_server_reply_8(
    fetch: Fetch,
    serve: Callable[[HTTPServer], HTTPServer],
    http_server: HTTPServer,
    trailer: bytes,
) -> None:
    """A NUL in a trailer line (libcurl 8, was 56), or a trailer line without a colon."""
    reply = CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n"
    result, _, easy = outcome(fetch, serve, http_server, in_pieces(reply))
    assert result is Code.WEIRD_SERVER_REPLY, easy.error


def test_good_chunked_trailer_is_read_and_the_connection_kept(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """The control: well-formed trailers (one ended by a bare LF) reach the header callback
    after the head, as libcurl writes them; the connection is reused for the next request."""
    reply = CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-T: ok\r\nX-U: lf\n\r\n"
    server = serve(HTTPServer(default=in_pieces(reply, then="keep")))
    lines: list[bytes] = []
    first, body = fetch(server.url("/1"), timeout_ms=5000, header_function=lines.append)
    assert lines[-3:] == [b"\r\n", b"X-T: ok\r\n", b"X-U: lf\r\n"]
    second, again = fetch(server.url("/2"), timeout_ms=5000)
    assert (first.result, body, second.result, again) == (Code.OK, b"hello", Code.OK, b"hello")
    assert server.accepted == 1
