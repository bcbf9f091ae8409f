"""A response head being collected, bounded by libcurl's limits as its bytes come.

Owns the bytes of the head not yet parsed, where it ends (its blank line, as
h11 finds it), and libcurl's limits on the heads of one response, 1xx heads
included: the size of every head, of one line, the number of header lines.
It also says which code an odd status line gets (a new connection's is not
HTTP, a reused one's is weird). It parses nothing: http1.py parses the head
it finds, by the fast path or h11. It does no I/O and keeps no clock.
"""

from __future__ import annotations

import re

from hiperfifo.engine.codes import Code, TransferError

# libcurl's limits on response heads (lib/http.h, lib/headers.h)
MAX_HEADER_BYTES = 300 * 1024  # MAX_HTTP_RESP_HEADER_SIZE: every head of a response -> 56
MAX_HEADER_LINE = 100 * 1024  # CURL_MAX_HTTP_HEADER: one head line -> TOO_LARGE (100)
MAX_HEADER_LINES = 5000  # MAX_HTTP_RESP_HEADER_COUNT: header lines of a response -> 100

BLANK_LINE = re.compile(rb"\n\r?\n")  # the end of a head, as h11 finds it
_HTTP_PREFIX = b"HTTP/"
_LONG_LINE = re.compile(rb"[^\n]{%d}" % MAX_HEADER_LINE)


class HeadBuffer:
    """The head of a response on one connection, collected to its blank line."""

    __slots__ = (
        "_line_start",
        "_lines",
        "_scanned",
        "buffer",
        "end",
        "prior_bytes",
        "prior_lines",
        "reused",
    )

    def __init__(self) -> None:
        self.buffer = bytearray()  # bytes of the head being collected (the caller adds them)
        # Where the head ends (after its blank line), -1 until seen, and how far the buffer
        # was searched: each byte is searched once, however slowly it trickles.
        self.end = -1
        self._scanned = 0
        # Earlier heads of this response (1xx) count towards libcurl's limits.
        self.prior_bytes = 0
        self.prior_lines = 0
        self._line_start = 0  # first byte of the first line not yet counted (large heads)
        self._lines = 0  # complete lines of this head counted so far (large heads)
        self.reused = False  # an earlier cycle ran on this connection

    def scan(self, eof: bool) -> None:
        """Refuse what is not HTTP/1.x at all, find the head's end, hold libcurl's limits."""
        head = self.buffer
        size = len(head)
        if not size:
            if eof:
                if self.prior_bytes:  # a 1xx came, then the close
                    raise TransferError(
                        Code.PARTIAL_FILE, "Connection closed in the response headers"
                    )
                raise TransferError(Code.GOT_NOTHING, "Empty reply from server")
            return
        prefix = bytes(head[: len(_HTTP_PREFIX)])
        if not _HTTP_PREFIX.startswith(prefix) or (eof and len(prefix) < len(_HTTP_PREFIX)):
            raise self.bad_status_line("Received HTTP/0.9 when not allowed")
        if self.end < 0:
            # CRLF CRLF ends every ordinary head (one find). Only without it is the head
            # searched for the blank line as h11 finds it (\n\r?\n); one that comes before a
            # CRLF CRLF in the same read is found by the fallback (Http1._receive_heads).
            crlf = head.find(b"\r\n\r\n", max(self._scanned - 3, 0))
            if crlf >= 0:
                self.end = crlf + 4
            else:
                found = BLANK_LINE.search(head, max(self._scanned - 2, 0))
                if found is not None:
                    self.end = found.end()
            self._scanned = size
        upto = self.end if self.end >= 0 else size
        total = self.prior_bytes + upto
        if total > MAX_HEADER_BYTES:
            raise TransferError(
                Code.RECV_ERROR, f"Too large response headers: {total} > {MAX_HEADER_BYTES}"
            )
        if upto >= MAX_HEADER_LINE or self.prior_lines + upto // 2 > MAX_HEADER_LINES:
            self._count_lines(upto)  # only a large head can break these two limits
        if eof and self.end < 0:
            raise TransferError(Code.PARTIAL_FILE, "Connection closed in the response headers")

    def _count_lines(self, upto: int) -> None:
        """libcurl's bounds on one line and on the number of header lines, judged as the
        bytes come (each byte is looked at once): both are TOO_LARGE (100)."""
        head = self.buffer
        start = self._line_start
        last = head.rfind(b"\n", start, upto)
        if last >= 0:
            if _LONG_LINE.search(head, start, last + 1):
                raise _too_large_line()
            self._lines += head.count(b"\n", start, last + 1)
            self._line_start = start = last + 1
        if upto - start >= MAX_HEADER_LINE:
            raise _too_large_line()
        # Complete lines less the status line, and less the blank line once it is in.
        if self.prior_lines + self._lines - 1 - (self.end >= 0) > MAX_HEADER_LINES:
            raise too_many_headers()

    def reset(self, data: bytes = b"") -> None:
        """Start a new head with `data` (the bytes that followed the last one)."""
        self.buffer[:] = data
        self.end = -1
        self._scanned = 0
        self._line_start = 0
        self._lines = 0

    def after_info(self, header_lines: int) -> None:
        """The head up to `end` was a 1xx: it counts towards the limits, and the next head
        starts with what followed it, judged at once."""
        end = self.end
        self.prior_bytes += end
        self.prior_lines += header_lines
        self.reset(bytes(self.buffer[end:]))
        self.scan(eof=False)

    def next_cycle(self) -> None:
        """A new response on the same connection (reset() inlined: once per cycle)."""
        if self.buffer:  # (most heads were parsed where they lay: nothing to empty)
            self.buffer[:] = b""
        self.end = -1
        self._scanned = self._line_start = self._lines = 0
        self.prior_bytes = self.prior_lines = 0
        self.reused = True

    def bad_status_line(self, text: str) -> TransferError:
        """libcurl's code for an odd first line: weird on a reused connection or after a
        1xx, else the server does not speak HTTP at all."""
        if self.reused or self.prior_bytes:
            return TransferError(Code.WEIRD_SERVER_REPLY, text)
        return TransferError(Code.UNSUPPORTED_PROTOCOL, text)


def too_many_headers() -> TransferError:
    """More header lines in the heads of one response than libcurl takes."""
    return TransferError(Code.TOO_LARGE, f"Too many response headers, {MAX_HEADER_LINES} is max")


def _too_large_line() -> TransferError:
    return TransferError(
        Code.TOO_LARGE, f"A response header line is longer than {MAX_HEADER_LINE} bytes"
    )
