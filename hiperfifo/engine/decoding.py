"""Content-Encoding, decoded as it streams, with bounds a bomb cannot get past.

A response's Content-Encoding list is read as libcurl reads it: codings in
the order they were applied (so decoded last one first), `identity` and its
alias `none` passing bytes through, at most five. gzip and deflate go
through zlib's streaming decompressor, `max_length` per call so no single
chunk inflates without bound, with a cap on the ratio of decoded to
received bytes and the transfer's max_filesize on the decoded total. A
gzip body of several members is decoded whole (gzip -d does; libcurl stops
with WRITE_ERROR); other bytes after the end of a stream are WRITE_ERROR
(23), as in libcurl. Errors map to BAD_CONTENT_ENCODING (61), WRITE_ERROR
(23) and FILESIZE_EXCEEDED (63).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from hiperfifo.engine.codes import Code, TransferError, caused

SUPPORTED = ("gzip", "deflate")
PASS_THROUGH = ("identity", "none")  # libcurl's identity coding and its alias
MAX_CODINGS = 5  # libcurl's MAX_ENCODE_STACK
STEP = 256 * 1024  # most bytes one decompress call may produce
MAX_RATIO = 1000  # decoded / encoded, checked once past RATIO_GRACE decoded bytes
RATIO_GRACE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


def accept_header(accept_encoding: str) -> str:
    """The Accept-Encoding value for the option: "" means every encoding we decode."""
    return accept_encoding or ", ".join(SUPPORTED)


def codings(value: str) -> list[str]:
    """The codings of a Content-Encoding list that change the bytes, in the order applied;
    more than MAX_CODINGS is BAD_CONTENT_ENCODING, as in libcurl."""
    names = [item.strip().lower() for item in value.split(",") if item.strip()]
    if len(names) > MAX_CODINGS:
        raise TransferError(
            Code.BAD_CONTENT_ENCODING,
            f"Reject response exceeding limit of {MAX_CODINGS} content encodings",
        )
    return [name for name in names if name not in PASS_THROUGH]


class Decoder:
    """Streams one response body through its Content-Encoding list (see codings())."""

    def __init__(self, encoding: str, max_size: int = 0, max_ratio: int = MAX_RATIO) -> None:
        # The last coding applied is the first to undo. An unknown coding fails at its
        # first byte (libcurl's error writer), so a response without a body is fine.
        self.stages = [_Stage(name) for name in reversed(codings(encoding))]
        self._max_size = max_size
        self._max_ratio = max_ratio
        self.encoded = 0
        self.decoded = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decoded chunks for `data`, each at most STEP bytes."""
        self.encoded += len(data)
        chunks: Iterable[bytes] = (data,)
        for stage in self.stages:
            chunks = stage.feed_all(chunks)
        for chunk in chunks:
            self._account(len(chunk))
            yield chunk

    def finish(self) -> None:
        """The body ended: a stream cut short is an error, as curl reports it."""
        if not self.encoded:
            return
        for stage in self.stages:
            stage.finish()

    def _account(self, size: int) -> None:
        self.decoded += size
        if self._max_size and self.decoded > self._max_size:
            raise TransferError(
                Code.FILESIZE_EXCEEDED,
                f"Exceeded the maximum allowed file size ({self._max_size})",
            )
        if self.decoded > RATIO_GRACE and self.decoded > self._max_ratio * self.encoded:
            raise TransferError(
                Code.BAD_CONTENT_ENCODING,
                f"Decompression ratio above {self._max_ratio}:1: refusing a likely bomb",
            )


class _Stage:
    """One coding undone by zlib: gzip (every member) or deflate (zlib or raw)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._gzip = name in ("gzip", "x-gzip")
        self._known = self._gzip or name == "deflate"
        self._zlib = self._inflater()
        self._raw_deflate_tried = self._gzip
        self._produced = False  # any output from the current stream yet
        self._after = b""  # bytes after the end of a stream: maybe the next gzip member

    def _inflater(self) -> zlib._Decompress:
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)

    def feed_all(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            yield from self._feed(chunk)

    def _feed(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        if not self._known:
            raise TransferError(
                Code.BAD_CONTENT_ENCODING,
                f"Unrecognized content encoding type: {self._name}. "
                f"The engine understands {', '.join(SUPPORTED)} content encodings.",
            )
        pending = data
        while True:
            if self._zlib.eof:
                if not pending or not self._next_member(pending):
                    return
                pending, self._after = self._after, b""
            chunk = self._decompress(pending)
            pending = self._zlib.unconsumed_tail
            if self._zlib.eof:
                pending = self._zlib.unused_data + pending
            if chunk:
                self._produced = True
                yield chunk
            # A full chunk may leave output inside zlib even when all input was taken.
            if not pending and len(chunk) < STEP:
                return

    def _next_member(self, data: bytes) -> bool:
        """After the end of a stream: only another gzip member may follow."""
        self._after += data
        if (
            self._gzip
            and len(self._after) < len(GZIP_MAGIC)
            and GZIP_MAGIC.startswith(self._after)
        ):
            return False  # wait for the rest of the magic
        if not self._gzip or not self._after.startswith(GZIP_MAGIC):
            raise TransferError(
                Code.WRITE_ERROR,
                f"Failed writing received data: bytes after the end of the {self._name} stream",
            )
        self._zlib = self._inflater()
        self._produced = False
        return True

    def finish(self) -> None:
        if not self._known:
            return
        if self._after or not self._zlib.eof:
            raise TransferError(
                Code.BAD_CONTENT_ENCODING,
                "Error while processing content unencoding: incomplete stream",
            )

    def _decompress(self, data: bytes) -> bytes:
        try:
            return self._zlib.decompress(data, STEP)
        except zlib.error as exc:
            if not self._raw_deflate_tried and not self._produced:
                # Some servers send raw deflate without the zlib header; curl accepts it.
                self._raw_deflate_tried = True
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self._decompress(data)
            raise caused(
                TransferError(
                    Code.BAD_CONTENT_ENCODING, f"Error while processing content unencoding: {exc}"
                ),
                exc,
            )
