"""`hiperfifo send`: write URLs into the FIFO so that concurrent writers never interleave.

A pipe keeps one write() whole only up to PIPE_BUF bytes (4096 on Linux); `cat`
writes 128 KiB at a time, so two `cat`s into one FIFO can cut each other's
lines. This writer sends whole lines only, each write() at most PIPE_BUF bytes
and ending at a newline, on a blocking descriptor (a full pipe makes it wait,
never split). Owns nothing else: no argv, no environment (cli.py), no logging.
"""

from __future__ import annotations

import errno
import os
import re
import select
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

PIPE_BUF = select.PIPE_BUF  # POSIX: writes of at most this many bytes are atomic
READ_SIZE = 64 * 1024
_SEPARATORS = re.compile(rb"[ \t\r\n\x0b\x0c]+")  # fifo.py's token separators

EXIT_OK = 0
EXIT_FAILED = 1


class SendError(Exception):
    """The FIFO cannot be written (missing, not a FIFO, the reader went away)."""


@dataclass
class Report:
    """What one run wrote and what it refused."""

    written: int = 0  # tokens (URLs or `stop`) written
    refused: int = 0  # tokens longer than one atomic write


def token_groups(chunks: Iterable[bytes]) -> Iterator[list[bytes]]:
    """The whitespace-separated tokens completed by each piece of a byte stream, one list
    per piece (a token may span pieces), so that what a slow writer sends goes out at once.

    A token already past PIPE_BUF is kept as its first PIPE_BUF + 1 bytes only: it will be
    refused anyway, and holding all of a huge one would cost its size.
    """
    pending = b""
    for chunk in chunks:
        parts = _SEPARATORS.split(pending + chunk)
        pending = parts.pop()[: PIPE_BUF + 1]
        yield [part for part in parts if part]
    if pending:
        yield [pending]


def tokens(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Whitespace-separated tokens of a byte stream read in pieces."""
    for group in token_groups(chunks):
        yield from group


def batches(items: Iterable[bytes], report: Report, errors: TextIO) -> Iterator[bytes]:
    """Lines packed into blocks of at most PIPE_BUF bytes, each ending with a newline.

    A token that cannot fit one block with its newline is refused (counted, one message).
    """
    block = bytearray()
    for token in items:
        line = token + b"\n"
        if len(line) > PIPE_BUF:
            report.refused += 1
            shown = token[:80].decode("utf-8", "backslashreplace")
            print(
                f"hiperfifo send: refused a URL longer than {PIPE_BUF - 1} bytes ({shown}...):"
                " it cannot be written in one atomic write",
                file=errors,
            )
            continue
        if len(block) + len(line) > PIPE_BUF:
            yield bytes(block)
            block.clear()
        block += line
    if block:
        yield bytes(block)


def open_fifo(path: Path) -> int:
    """A blocking write descriptor on the FIFO at `path` (waits for a reader, as `echo >` does).

    SendError when nothing is there or it is not a FIFO (a regular file would be
    written to, and the daemon would never see it).
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SendError(f"{path}: {exc.strerror}; is the daemon running (--fifo)?") from exc
    if not stat.S_ISFIFO(st.st_mode):
        raise SendError(f"{path} is not a FIFO; refusing to write into it")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SendError(f"cannot open {path}: {exc.strerror}") from exc
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):  # replaced between stat and open
        os.close(fd)
        raise SendError(f"{path} is not a FIFO; refusing to write into it")
    return fd


def write_all(fd: int, blocks: Iterable[bytes], report: Report) -> None:
    """Each block in one write(): on a blocking pipe a write <= PIPE_BUF is all or nothing."""
    for block in blocks:
        try:
            written = os.write(fd, block)
        except BrokenPipeError as exc:
            raise SendError("the reader closed the FIFO; not everything was written") from exc
        if written != len(block):  # cannot happen on a pipe; say so rather than mangle
            raise SendError(f"short write ({written} of {len(block)} bytes)")
        report.written += block.count(b"\n")


def chunks(fd: int) -> Iterator[bytes]:
    """What `fd` gives, in pieces as they come (a line typed at a terminal goes out at once)."""
    while chunk := os.read(fd, READ_SIZE):
        yield chunk


def send(path: Path, urls: list[str], stdin: int, errors: TextIO) -> int:
    """Write `urls` (or, when empty, the tokens read from the descriptor `stdin`) into the
    FIFO at `path`; the exit status (1 with a message on `errors` when not all was written)."""
    report = Report()
    source = token_groups([" ".join(urls).encode()] if urls else chunks(stdin))
    try:
        fd = open_fifo(path)
    except SendError as exc:
        print(f"hiperfifo send: error: {exc}", file=errors)
        return EXIT_FAILED
    try:
        for group in source:  # what each read completed is written before the next read
            write_all(fd, batches(group, report, errors), report)
    except SendError as exc:
        print(f"hiperfifo send: error: {exc} ({report.written} written)", file=errors)
        return EXIT_FAILED
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "?")
        print(f"hiperfifo send: error: writing {path}: {exc.strerror} ({name})", file=errors)
        return EXIT_FAILED
    finally:
        os.close(fd)
    return EXIT_FAILED if report.refused else EXIT_OK
