"""accept_encoding, max_filesize and fail_on_error against real local servers."""

from __future__ import annotations

import gzip
import hashlib
import resource
import time
import zlib
from collections.abc import Callable

import pytest
from servers import Request, chunked_response
from tls_servers import HttpServer, gzip_of_zeros, response

from hiperfifo.engine import Code, Easy
from hiperfifo.engine.testing import SelectorDriver

# 3 MiB that compress like text, not like zeros: a decoded body spanning many chunks
TEXT = b"".join(hashlib.sha256(b"%d" % i).hexdigest().encode() + b"\n" for i in range(48_000))


def serve(answer: bytes) -> HttpServer:
    """A server giving `answer` to every request (HEAD gets the head only)."""

    def app(request: Request) -> bytes:
        if request.method == "HEAD":
            return answer.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        return answer

    return HttpServer(app)


def encoded(body: bytes, encoding: str = "gzip") -> bytes:
    return response(200, body, [("Content-Encoding", encoding)])


def fetch(drv: SelectorDriver, url: str, **options: object) -> tuple[Easy, list[bytes]]:
    """Run one transfer; returns the easy and the chunks write_function got."""
    chunks: list[bytes] = []
    easy = Easy(url, write_function=chunks.append, **options)  # type: ignore[arg-type]
    drv.perform(easy, timeout=20)
    return easy, chunks


@pytest.mark.parametrize(
    ("option", "sent"), [("", "gzip, deflate"), ("gzip", "gzip"), ("deflate", "deflate")]
)
def test_accept_encoding_header(drv: SelectorDriver, option: str, sent: str) -> None:
    """accept_encoding="" asks for all it decodes (gzip, deflate); a value is sent as given."""
    with serve(response(200, b"plain")) as srv:
        easy, chunks = fetch(drv, srv.url(), accept_encoding=option)
    assert easy.result is Code.OK, easy.error
    assert srv.requests[0].header("accept-encoding") == sent
    assert b"".join(chunks) == b"plain"


def test_no_accept_encoding_by_default_and_bytes_left_alone(drv: SelectorDriver) -> None:
    """Without the option no header is sent and an encoded body is delivered as it came."""
    squeezed = gzip.compress(b"left alone")
    with serve(encoded(squeezed)) as srv:
        easy, chunks = fetch(drv, srv.url())
    assert easy.result is Code.OK, easy.error
    assert srv.requests[0].header("accept-encoding") is None
    assert b"".join(chunks) == squeezed


def test_gzip_body_decoded_as_it_streams(drv: SelectorDriver) -> None:
    """A 3 MiB gzip body reaches write_function decoded, in several chunks."""
    squeezed = gzip.compress(TEXT)
    with serve(encoded(squeezed)) as srv:
        easy, chunks = fetch(drv, srv.url(), accept_encoding="")
    assert easy.result is Code.OK, easy.error
    assert b"".join(chunks) == TEXT
    assert len(chunks) > 1
    assert easy.size_download == len(squeezed)  # curl counts the bytes as received


@pytest.mark.parametrize(
    ("name", "wbits"), [("zlib", zlib.MAX_WBITS), ("raw", -zlib.MAX_WBITS)], ids=["zlib", "raw"]
)
def test_deflate_decoded(drv: SelectorDriver, name: str, wbits: int) -> None:
    """deflate is decoded whether the server wraps it in zlib (RFC) or sends it raw."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    squeezed = compressor.compress(TEXT) + compressor.flush()
    with serve(encoded(squeezed, "deflate")) as srv:
        easy, chunks = fetch(drv, srv.url(), accept_encoding="")
    assert easy.result is Code.OK, f"{name}: {easy.error}"
    assert b"".join(chunks) == TEXT


def test_gzip_in_small_chunks_decoded(drv: SelectorDriver) -> None:
    """Chunked transfer coding carrying gzip in 1000-byte pieces decodes to the whole body."""
    squeezed = gzip.compress(TEXT[:200_000])
    pieces = [squeezed[i : i + 1000] for i in range(0, len(squeezed), 1000)]
    with serve(chunked_response(pieces, [("Content-Encoding", "gzip")])) as srv:
        easy, chunks = fetch(drv, srv.url(), accept_encoding="")
    assert easy.result is Code.OK, easy.error
    assert b"".join(chunks) == TEXT[:200_000]


def test_decoded_connection_is_reused(drv: SelectorDriver) -> None:
    """After a decoded body the kept-alive connection serves the next transfer."""
    with serve(encoded(gzip.compress(b"again"))) as srv:
        first, _ = fetch(drv, srv.url("/1"), accept_encoding="")
        second, chunks = fetch(drv, srv.url("/2"), accept_encoding="")
    assert (first.result, second.result) == (Code.OK, Code.OK)
    assert b"".join(chunks) == b"again"
    assert second.num_connects == 0
    assert srv.accepted == 1


def test_head_with_content_encoding_has_no_body(drv: SelectorDriver) -> None:
    """A HEAD answer announcing gzip has no body to decode: OK."""
    with serve(encoded(gzip.compress(TEXT[:1000]))) as srv:
        easy, chunks = fetch(drv, srv.url(), accept_encoding="", method="HEAD")
    assert easy.result is Code.OK, easy.error
    assert chunks == []


def test_unknown_content_encoding_refused(drv: SelectorDriver) -> None:
    """An encoding the engine cannot decode: BAD_CONTENT_ENCODING (61), as curl."""
    with serve(encoded(b"\x00\x01\x02", "x-unheard-of")) as srv:
        easy, chunks = fetch(drv, srv.url(), accept_encoding="")
    assert easy.result is Code.BAD_CONTENT_ENCODING
    assert b"".join(chunks) == b""


def corrupt(kind: str) -> bytes:
    good = gzip.compress(TEXT[:100_000])
    if kind == "header":
        return b"\x1f\x8b\x09" + good[3:]  # compression method 9 does not exist
    if kind == "flipped":
        middle = len(good) // 2
        return good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :]
    if kind == "crc":
        return good[:-8] + bytes(4) + good[-4:]
    return good[: len(good) // 2]  # truncated


@pytest.mark.parametrize("kind", ["header", "flipped", "crc", "truncated"])
def test_corrupt_gzip_is_bad_content_encoding(drv: SelectorDriver, kind: str) -> None:
    """A damaged gzip stream (header, data, checksum, or cut short): 61."""
    with serve(encoded(corrupt(kind))) as srv:
        easy, chunks = fetch(drv, srv.url(), accept_encoding="")
    assert easy.result is Code.BAD_CONTENT_ENCODING, easy.error
    assert len(b"".join(chunks)) < 100_000


BOMB_SIZE = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """200 MiB of zeros, gzipped (about 200 KiB)."""
    return gzip_of_zeros(BOMB_SIZE)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_gzip_bomb_refused_without_exhausting_memory(drv: SelectorDriver, bomb: bytes) -> None:
    """200 MiB of zeros in ~200 KiB of gzip: 61, fast, the process's peak RSS barely moves."""
    delivered = 0

    def count(data: bytes) -> None:
        nonlocal delivered
        delivered += len(data)

    with serve(encoded(bomb)) as srv:
        before = peak_rss_mib()
        started = time.monotonic()
        easy = Easy(srv.url(), write_function=count, accept_encoding="")
        drv.perform(easy, timeout=20)
        elapsed = time.monotonic() - started
    assert easy.result is Code.BAD_CONTENT_ENCODING, easy.error
    assert delivered < BOMB_SIZE
    assert elapsed < 10
    assert peak_rss_mib() - before < 64


def test_gzip_bomb_stops_at_max_filesize(drv: SelectorDriver, bomb: bytes) -> None:
    """With max_filesize the decoded size is capped: FILESIZE_EXCEEDED (63) near the cap."""
    limit = 5 * 1024 * 1024
    with serve(encoded(bomb)) as srv:
        easy, chunks = fetch(drv, srv.url(), accept_encoding="", max_filesize=limit)
    assert easy.result is Code.FILESIZE_EXCEEDED, easy.error
    assert sum(map(len, chunks)) <= limit


def test_max_filesize_refuses_a_large_content_length_before_the_body(
    drv: SelectorDriver,
) -> None:
    """Content-Length above max_filesize: 63 before a single body byte is written."""
    with serve(response(200, b"x" * 5000)) as srv:
        easy, chunks = fetch(drv, srv.url(), max_filesize=1000)
    assert easy.result is Code.FILESIZE_EXCEEDED
    assert chunks == []
    assert easy.response_code == 200


def test_max_filesize_on_a_body_of_unknown_length(drv: SelectorDriver) -> None:
    """Chunked, no Content-Length: 63 once more than max_filesize bytes arrive."""
    with serve(chunked_response([b"a" * 600] * 5)) as srv:
        easy, chunks = fetch(drv, srv.url(), max_filesize=1000)
    assert easy.result is Code.FILESIZE_EXCEEDED
    assert sum(map(len, chunks)) <= 1000


def test_max_filesize_at_the_limit_is_fine(drv: SelectorDriver) -> None:
    """A body exactly max_filesize long is OK."""
    with serve(response(200, b"y" * 1000)) as srv:
        easy, chunks = fetch(drv, srv.url(), max_filesize=1000)
    assert easy.result is Code.OK, easy.error
    assert b"".join(chunks) == b"y" * 1000


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_fail_on_error_fails_on_4xx_and_5xx(drv: SelectorDriver, status: int) -> None:
    """fail_on_error: HTTP_RETURNED_ERROR (22) with curl's text, the error body not written."""
    with serve(response(status, b"error page")) as srv:
        easy, chunks = fetch(drv, srv.url(), fail_on_error=True)
    assert easy.result is Code.HTTP_RETURNED_ERROR
    assert easy.error == f"The requested URL returned error: {status}"
    assert easy.response_code == status
    assert chunks == []


def test_without_fail_on_error_a_404_is_ok(drv: SelectorDriver) -> None:
    """Without fail_on_error a 404 is a successful transfer of the error page."""
    with serve(response(404, b"error page")) as srv:
        easy, chunks = fetch(drv, srv.url())
    assert (easy.result, easy.response_code) == (Code.OK, 404)
    assert b"".join(chunks) == b"error page"


@pytest.mark.parametrize("status", [200, 204, 301, 399])
def test_fail_on_error_lets_lower_statuses_through(drv: SelectorDriver, status: int) -> None:
    """fail_on_error leaves statuses below 400 alone."""
    with serve(response(status, b"" if status == 204 else b"fine")) as srv:
        easy, _ = fetch(drv, srv.url(), fail_on_error=True)
    assert (easy.result, easy.response_code) == (Code.OK, status)


def test_fail_on_error_applies_after_redirects(drv: SelectorDriver) -> None:
    """A redirect to a 404 with fail_on_error: 22 for the final response."""
    answers: dict[str, bytes] = {
        "/start": response(302, b"", [("Location", "/missing")]),
        "/missing": response(404, b"gone"),
    }
    app: Callable[[Request], bytes] = lambda request: answers[request.target]  # noqa: E731
    with HttpServer(app) as srv:
        easy, chunks = fetch(drv, srv.url("/start"), follow_location=True, fail_on_error=True)
    assert easy.result is Code.HTTP_RETURNED_ERROR
    assert (easy.response_code, easy.redirect_count) == (404, 1)
    assert chunks == []


def test_skipped_redirect_body_is_not_decoded_or_counted(drv: SelectorDriver) -> None:
    """A followed redirect's body (bad gzip, over max_filesize) is dropped, not judged."""
    answers: dict[str, bytes] = {
        "/start": response(
            302, b"\x1f\x8bnot gzip" * 500, [("Location", "/final"), ("Content-Encoding", "gzip")]
        ),
        "/final": encoded(gzip.compress(b"the end")),
    }
    app: Callable[[Request], bytes] = lambda request: answers[request.target]  # noqa: E731
    with HttpServer(app) as srv:
        easy, chunks = fetch(
            drv, srv.url("/start"), follow_location=True, accept_encoding="", max_filesize=1000
        )
    assert easy.result is Code.OK, easy.error
    assert b"".join(chunks) == b"the end"
