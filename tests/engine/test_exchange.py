"""A request that dies on a reused connection before any response byte is sent again on a
fresh one, once per request: each redirect hop is a request of its own (libcurl's
Curl_retry_request), and a reset while the request is still being sent counts too."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from servers import HELLO, HTTPServer, Peer, Server, respond

from hiperfifo.engine import Code, InfoType

Fetch = Callable[..., tuple[Any, bytes]]


def hop(n: int, last: int) -> Callable[..., bool]:
    """/hN: a 302 to /h(N+1), /h<last>: 200 HELLO; each closes the connection right after,
    without announcing it (keep-alive by its headers)."""
    if n == last:
        return respond(HELLO, then="hangup")
    return respond(
        b"", status=302, reason="Found", headers=[("Location", f"/h{n + 1}")], then="hangup"
    )


def test_redirect_chain_on_a_server_closing_after_each_response_ends_200(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """curl -L gives 200 after 3 redirects; every hop's request meets the closed connection
    of the hop before (taken back in the same call, so not asked) and goes again on a new
    one (was 52 from the second reused hop on: one retry per transfer)."""
    server = serve(HTTPServer({f"/h{n}": hop(n, 3) for n in range(4)}))
    easy, body = fetch(server.url("/h0"), follow_location=True)
    assert (easy.result, easy.response_code, body) == (Code.OK, 200, HELLO), easy.error
    assert easy.redirect_count == 3
    assert server.paths() == ["/h0", "/h1", "/h2", "/h3"]
    assert server.accepted == 4  # one connection per request: none answered twice


def test_redirect_loop_on_a_server_closing_after_each_response_ends_47(
    fetch: Fetch, serve: Callable[[HTTPServer], HTTPServer]
) -> None:
    """A redirect to itself on such a server ends with TOO_MANY_REDIRECTS after max_redirs,
    not with GOT_NOTHING on the third hop."""
    loop = respond(b"", status=302, reason="Found", headers=[("Location", "/loop")], then="hangup")
    server = serve(HTTPServer({"/loop": loop}))
    easy, _ = fetch(server.url("/loop"), follow_location=True, max_redirs=5)
    assert (easy.result, easy.redirect_count) == (Code.TOO_MANY_REDIRECTS, 5), easy.error
    assert server.paths() == ["/loop"] * 6


BODY = b"x" * (16 << 20)  # far more than the socket buffers between client and server hold


def test_reset_while_the_request_is_sent_is_retried_on_a_new_connection(
    fetch: Fetch, serve: Callable[[Server], Server]
) -> None:
    """Each connection answers one request (307s, so the POST and its body go on); when the
    next request's first bytes arrive on it, the server resets it (RST) while the client is
    still sending the 16 MiB body: the request goes again on a new connection, for every
    hop, and the transfer ends OK (was 55 on the second reused hop)."""
    received: list[tuple[str, int]] = []  # (target, body bytes) of each request answered

    def one_answer_then_reset(peer: Peer) -> None:
        sock = peer.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # no autotuning
        head = b""
        while b"\r\n\r\n" not in head:
            data = peer.recv()
            if not data:
                return
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        target = head.split()[1].decode()
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        left = length - len(rest)
        while left > 0:  # counted, not kept
            data = peer.recv()
            if not data:
                return
            left -= len(data)
        received.append((target, length))
        n = int(target.removeprefix("/p"))
        if n < 2:
            peer.send(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /p%d\r\n" % (n + 1))
            peer.send(b"Content-Length: 0\r\n\r\n")
        else:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n" + HELLO)
        if peer.recv():  # the next request on this connection has begun: cut it off
            peer.reset()

    server = serve(Server(one_answer_then_reset))
    states: list[str] = []

    def debug(kind: InfoType, text: str) -> None:
        if kind is InfoType.STATE:
            states.append(text)

    easy, body = fetch(
        server.url("/p0"),
        method="POST",
        body=BODY,
        follow_location=True,
        debug_function=debug,
        timeout=60,
    )
    assert (easy.result, easy.response_code, body) == (Code.OK, 200, HELLO), easy.error
    assert easy.redirect_count == 2
    assert received == [(f"/p{n}", len(BODY)) for n in range(3)]
    assert server.accepted == 3
    assert states.count("SENDING -> CONNECT") == 2, states  # each reset came while sending
