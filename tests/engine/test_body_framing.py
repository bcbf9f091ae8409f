"""Content-Length bodies that arrive after their head: the engine frames them without h11.

The head and the first body bytes come in one read, the rest in later reads,
so the engine's own Content-Length framing (not h11's) decides where the body
ends, whether the connection is kept, and what a short body is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from servers import HTTPServer, Peer, Request, Route

from hiperfifo.engine import Code, Easy


def split_body(
    body: bytes,
    *,
    head_extra: str = "",
    version: str = "1.1",
    tail: bytes = b"",
    then: str = "keep",
) -> Route:
    """The head plus one body byte at once, the rest 50 ms later (then `tail`, if any)."""

    def route(request: Request, peer: Peer) -> bool:
        head = f"HTTP/{version} 200 OK\r\nContent-Length: {len(body)}\r\n{head_extra}\r\n"
        peer.send(head.encode() + body[:1])
        peer.sleep(0.05)
        peer.send(body[1:] + tail)
        return then != "close"

    return route


def fetch_twice(drv: Any, server: HTTPServer, path: str) -> tuple[Easy, Easy, bytes]:
    received = bytearray()
    first = Easy(server.url(path), write_function=received.extend)
    drv.perform(first)
    second = Easy(server.url(path))
    drv.perform(second)
    return first, second, bytes(received)


def test_split_body_delivered_whole_and_connection_reused(
    drv: Any, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """A 200 KB body split across reads arrives whole; the kept-alive connection is reused."""
    body = bytes(range(256)) * 800
    server = serve(HTTPServer({"/big": split_body(body)}))
    first, second, received = fetch_twice(drv, server, "/big")
    assert (first.result, second.result) == (Code.OK, Code.OK)
    assert received == body
    assert (first.num_connects, second.num_connects) == (1, 0)
    assert server.accepted == 1


def test_connection_close_response_is_not_reused(
    drv: Any, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Connection: close on a split body: OK, and the next transfer opens a new connection."""
    server = serve(HTTPServer({"/c": split_body(b"x" * 5000, head_extra="Connection: close\r\n")}))
    first, second, received = fetch_twice(drv, server, "/c")
    assert (first.result, second.result) == (Code.OK, Code.OK)
    assert received == b"x" * 5000
    assert (first.num_connects, second.num_connects) == (1, 1)


def test_http10_response_is_not_reused(
    drv: Any, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """An HTTP/1.0 answer without keep-alive: the connection is not reused."""
    server = serve(HTTPServer({"/old": split_body(b"y" * 3000, version="1.0")}))
    first, second, _received = fetch_twice(drv, server, "/old")
    assert (first.result, second.result) == (Code.OK, Code.OK)
    assert second.num_connects == 1
    assert first.http_version == "1.0"  # the response's version, as CURLINFO_HTTP_VERSION


def test_bytes_beyond_content_length_close_the_connection(
    drv: Any, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """Extra bytes after a split body are not the next response: OK, then a fresh connection."""
    fake_next = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"
    server = serve(HTTPServer({"/x": split_body(b"z" * 1000, tail=fake_next)}))
    first, second, received = fetch_twice(drv, server, "/x")
    assert first.result is Code.OK
    assert received == b"z" * 1000
    assert second.result is Code.OK
    assert second.size_download == 1000
    assert second.num_connects == 1


def test_short_split_body_is_partial_file(
    drv: Any, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """A split body cut short by a clean close: PARTIAL_FILE (18) with the missing count."""

    def short(request: Request, peer: Peer) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a")
        peer.sleep(0.05)
        peer.send(b"b" * 9)
        return False

    server = serve(HTTPServer({"/short": short}))
    easy = Easy(server.url("/short"))
    drv.perform(easy)
    assert easy.result is Code.PARTIAL_FILE
    assert "90 bytes missing" in easy.error
    assert easy.size_download == 10
