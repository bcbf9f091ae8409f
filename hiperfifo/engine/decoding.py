"""Content-Encoding, decoded as it streams, with bounds a bomb cannot get past.

gzip and deflate through zlib's streaming decompressor, `max_length` per
call so no single chunk inflates without bound, a cap on the ratio of
decoded to received bytes, and the transfer's max_filesize on the decoded
total. Errors map to BAD_CONTENT_ENCODING (61) and FILESIZE_EXCEEDED (63).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from hiperfifo.engine.codes import Code, TransferError

SUPPORTED = ("gzip", "deflate")
STEP = 256 * 1024  # most bytes one decompress call may produce
MAX_RATIO = 1000  # decoded / encoded, checked once past RATIO_GRACE decoded bytes
RATIO_GRACE = 1 << 20


def accept_header(accept_encoding: str) -> str:
    """The Accept-Encoding value for the option: "" means every encoding we decode."""
    return accept_encoding or ", ".join(SUPPORTED)


class Decoder:
    """Streams one response body through its Content-Encoding."""

    def __init__(self, encoding: str, max_size: int = 0, max_ratio: int = MAX_RATIO) -> None:
        name = encoding.strip().lower()
        if name in ("gzip", "x-gzip"):
            wbits = 16 + zlib.MAX_WBITS
        elif name == "deflate":
            wbits = zlib.MAX_WBITS
        else:
            raise TransferError(
                Code.BAD_CONTENT_ENCODING, f"Unrecognized content encoding: {name}"
            )
        self._raw_deflate_tried = name != "deflate"
        self._zlib = zlib.decompressobj(wbits)
        self._max_size = max_size
        self._max_ratio = max_ratio
        self.encoded = 0
        self.decoded = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decoded chunks for `data`, each at most STEP bytes."""
        self.encoded += len(data)
        pending = data
        while True:
            chunk = self._decompress(pending)
            pending = self._zlib.unconsumed_tail
            if chunk:
                self._account(len(chunk))
                yield chunk
            if not pending:
                return

    def finish(self) -> None:
        """The body ended: a stream cut short is an error, as curl reports it."""
        if not self._zlib.eof and self.encoded:
            raise TransferError(
                Code.BAD_CONTENT_ENCODING,
                "Error while processing content unencoding: incomplete stream",
            )

    def _decompress(self, data: bytes) -> bytes:
        try:
            return self._zlib.decompress(data, STEP)
        except zlib.error as exc:
            if not self._raw_deflate_tried and self.decoded == 0:
                # Some servers send raw deflate without the zlib header; curl accepts it.
                self._raw_deflate_tried = True
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self._decompress(data)
            raise TransferError(
                Code.BAD_CONTENT_ENCODING, f"Error while processing content unencoding: {exc}"
            ) from exc

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
