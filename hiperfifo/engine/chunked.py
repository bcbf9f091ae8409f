"""A chunked response body, decoded as libcurl decodes it (lib/http_chunks.c).

Owns the chunked coding's state machine and libcurl's limits on it: bytes in,
the data pieces and (at the end) the trailer lines and what followed out. It
knows nothing of heads, connections or h11; http1.py feeds it and turns what
it returns into events. It does no I/O and keeps no clock.
"""

from __future__ import annotations

import re

from hiperfifo.engine.codes import Code, TransferError

# libcurl's limits on a chunked body (lib/http_chunks.h, lib/dynbuf.h)
MAX_TRAILER_LINE = 4093  # DYN_H1_TRAILER (4096) less CRLF and NUL: one trailer line -> 100
MAX_CHUNK_DIGITS = 16  # CHUNK_MAXNUM_LEN: hex digits of a chunk size
MAX_OFF_T = 2**63 - 1  # curl_off_t: larger sizes and lengths overflow

# The states of a chunked body (lib/http_chunks.c)
_HEX, _SIZE_LINE, _DATA, _DATA_END, _TRAILER, _TRAILER_CR, _TRAILER_END, _LAST_LF, _DONE = range(9)
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_CR, _LF = 0x0D, 0x0A
_LINE_BREAK = re.compile(rb"[\r\n]")


class ChunkDecoder:
    """A chunked body, decoded as libcurl decodes it, whatever the read sizes.

    Laxer than RFC 9112 where libcurl is: a size line ends at its LF (a bare LF,
    extensions and anything else before it are skipped), any CRs before the LF
    that ends a chunk, trailer lines ended by LF alone. Errors are libcurl's: a
    bad size or a stray byte after a chunk is RECV_ERROR (56), a trailer line
    with a NUL or without a colon WEIRD_SERVER_REPLY (8), a trailer line over
    libcurl's 4 KiB TOO_LARGE (100).
    """

    __slots__ = ("_digits", "_left", "_state", "_trailer", "trailers")

    def __init__(self) -> None:
        self._state = _HEX
        self._digits = bytearray()  # the hex digits of the size being read
        self._left = 0  # bytes of the current chunk still due
        self._trailer = bytearray()  # the trailer line being read
        self.trailers: list[bytes] = []  # the trailer lines read, each with CRLF (libcurl's)

    def feed(self, data: bytes) -> tuple[list[bytes], int | None]:
        """The data pieces in `data`, and None, or (at the end) how many bytes follow it."""
        out: list[bytes] = []
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == _DATA:
                take = min(self._left, n - i)
                out.append(data[i : i + take])
                i += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
            elif state == _DONE:
                return out, n - i
            else:
                i = _CHUNK_STEPS[state](self, data, i)
        return out, (0 if self._state == _DONE else None)

    # Each step reads from data[i] on, sets the next state, and returns where it stopped.

    def _hex(self, data: bytes, i: int) -> int:
        byte = data[i]
        if byte in _HEX_DIGITS:
            if len(self._digits) >= MAX_CHUNK_DIGITS:
                raise _bad_chunk(f"chunk hex-length longer than {MAX_CHUNK_DIGITS}")
            self._digits.append(byte)
            return i + 1
        if not self._digits:
            raise _bad_chunk(f"chunk hex-length char not a hex digit: 0x{byte:x}")
        self._left = int(self._digits, 16)
        if self._left > MAX_OFF_T:
            raise _bad_chunk(f"invalid chunk size: '{self._digits.decode()}'")
        self._digits.clear()
        self._state = _SIZE_LINE
        return i

    def _size_line(self, data: bytes, i: int) -> int:
        """Everything up to the LF is skipped: extensions, a CR, anything (libcurl)."""
        lf = data.find(b"\n", i)
        if lf < 0:
            return len(data)
        self._state = _DATA if self._left else _TRAILER
        return lf + 1

    def _data_end(self, data: bytes, i: int) -> int:
        byte = data[i]
        if byte == _LF:
            self._state = _HEX
        elif byte != _CR:
            raise _bad_chunk("Malformed encoding found in chunked-encoding")
        return i + 1

    def _trailer_line(self, data: bytes, i: int) -> int:
        byte = data[i]
        if byte not in (_CR, _LF):
            brk = _LINE_BREAK.search(data, i)
            stop = brk.start() if brk is not None else len(data)
            self._trailer += data[i:stop]
            if len(self._trailer) > MAX_TRAILER_LINE:
                raise TransferError(
                    Code.TOO_LARGE, "Out of memory in chunked-encoding (trailer too long)"
                )
            return stop
        if not self._trailer:  # no (more) trailers: this is the final line break
            self._state = _TRAILER_END
            return i
        line = bytes(self._trailer)
        _check_trailer(line)
        self.trailers.append(line + b"\r\n")
        self._trailer.clear()
        self._state = _TRAILER_CR
        return i if byte == _LF else i + 1  # already on the LF, or past the CR

    def _trailer_cr(self, data: bytes, i: int) -> int:
        if data[i] != _LF:
            raise _bad_chunk("Malformed encoding found in chunked-encoding")
        self._state = _TRAILER_END
        return i + 1

    def _trailer_end(self, data: bytes, i: int) -> int:
        byte = data[i]
        if byte not in (_CR, _LF):  # another trailer line
            self._state = _TRAILER
            return i
        self._state = _LAST_LF
        return i + 1 if byte == _CR else i

    def _last_lf(self, data: bytes, i: int) -> int:
        if data[i] != _LF:
            raise _bad_chunk("Malformed encoding found in chunked-encoding")
        self._state = _DONE
        return i + 1


_CHUNK_STEPS = (
    ChunkDecoder._hex,
    ChunkDecoder._size_line,
    ChunkDecoder._hex,  # _DATA: handled inline in feed()
    ChunkDecoder._data_end,
    ChunkDecoder._trailer_line,
    ChunkDecoder._trailer_cr,
    ChunkDecoder._trailer_end,
    ChunkDecoder._last_lf,
)


def _bad_chunk(text: str) -> TransferError:
    return TransferError(Code.RECV_ERROR, text)


def _check_trailer(line: bytes) -> None:
    """libcurl stores trailers as headers: a NUL or a missing colon is a weird reply."""
    if b"\x00" in line:
        raise TransferError(Code.WEIRD_SERVER_REPLY, "Nul byte in trailer header")
    if b":" not in line:
        raise TransferError(Code.WEIRD_SERVER_REPLY, "Trailer header without colon")
