"""The FIFO: create, adopt or refuse the named pipe, read it, split it into tokens.

Owns the path rules (mode, O_NOFOLLOW, refusal of anything but a FIFO),
systemd's ListenFIFO descriptor, the pure `Tokenizer` that turns bytes into
accepted URLs, `stop` and rejections (`classify` checks one token on its own),
and `FifoSource`: the FIFO as a source (sources/base.py), read on the loop,
recreated when its path is deleted. Imports no pyuv (the loop comes in through
`Loop`) and no engine; it logs only what happens to the pipe itself.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import sys
import termios
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from structlog.typing import FilteringBoundLogger

from hiperfifo.sources.base import SHOWN_TOKEN_CHARS, Alarm, Inbox, Loop, Watcher
from hiperfifo.sources.base import Item as Item
from hiperfifo.sources.base import Rejected as Rejected
from hiperfifo.sources.base import Stop as Stop
from hiperfifo.sources.base import Url as Url
from hiperfifo.sources.base import Urls as Urls

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEMES = frozenset({"http", "https"})
# The common case, which urlsplit() accepts: http(s)://, a host of letters, digits, dots
# and dashes, an optional port of 1-5 digits (1-65535 checked), then only printable ASCII.
# Whatever else (userinfo, IPv6, non-ASCII, no host ...) is looked at with urlsplit().
_PLAIN_URL = re.compile(r"(?i:https?)://[A-Za-z0-9.-]+(?::([0-9]{1,5}))?(?:[/?#][!-~]*)?\Z")
# A run of such URLs, each ended by ASCII whitespace (\s under (?a:) is exactly what
# bytes.split() splits on), checked in one match (the ports spelled out as 1-65535
# without leading zeros; any other port: token by token). The five-digit ports come
# first: tried the other way, a port like 40123 first matched as 4012 and backtracked
# through 401, 40, 4 (3,000 instructions per URL under callgrind). Possessive (++, ?+):
# what follows each part can never start inside it (a host is followed by ":", "/",
# "?", "#" or whitespace, a port by a non-digit), so giving back is never useful, and
# not remembering where to is a third cheaper (~1,650 instructions per URL, was ~2,550).
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_PLAIN_RUN = re.compile(
    rf"(?a:\s*+(?:(?i:https?)://[A-Za-z0-9.-]++(?::{_PORT})?+(?:[/?#][!-~]*+)?+\s++)++)"
)
_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.split() splits on
_TOKEN = re.compile(rb"[^ \t\n\r\x0b\x0c]+")  # what bytes.split() gives


class FifoError(Exception):
    """The FIFO path cannot be used; the message says why and what to do."""


# -- tokens ----------------------------------------------------------------


def show(raw: bytes) -> str:
    """A token for a log line: cut to 200 characters, non-UTF-8 bytes as \\xNN."""
    return raw.decode("utf-8", "backslashreplace")[:SHOWN_TOKEN_CHARS]


def classify(raw: bytes) -> Item:
    """One complete token (no whitespace in it) → URL, stop or a rejection."""
    if b"\x00" in raw:
        return Rejected("NUL byte in token", show(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected("not UTF-8", show(raw))
    if text == "stop":
        return Stop()
    reason = url_problem(text)
    if reason:
        return Rejected(reason, show(raw))
    return Url(text)


def url_problem(text: str) -> str | None:
    """Why `text` is not a fetchable http/https URL, or None when it is."""
    plain = _PLAIN_URL.match(text)
    if plain is not None and (plain.group(1) is None or 0 < int(plain.group(1)) <= 65535):
        return None  # what the checks below would say of it, without urlsplit()
    return _parsed_url_problem(text)


def _parsed_url_problem(text: str) -> str | None:
    if _CONTROL.search(text):
        return "control character in URL"
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        return f"unparseable URL: {exc}"
    if not parts.scheme:
        return "not a URL (no scheme)"
    if parts.scheme.lower() not in _SCHEMES:
        return f"unsupported scheme {parts.scheme!r}"
    return _authority_problem(parts)


def _authority_problem(parts: SplitResult) -> str | None:
    try:
        host = parts.hostname
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        return f"unparseable URL: {exc}"
    if not host:
        return "unparseable URL: no host"
    if port == 0:  # libcurl: "Port number was not a decimal number between 0 and 65535"
        return "bad port number 0 (a port is 1-65535)"
    return None


@dataclass
class Tokenizer:
    """Bytes in, items out: ASCII-whitespace-separated tokens, split across reads.

    A token longer than `max_length` bytes is rejected once and skipped up to
    the next whitespace. Feeding the same bytes in any pieces gives the same
    items as feeding them at once.
    """

    max_length: int = 8192
    _pending: bytearray = field(default_factory=bytearray, repr=False)
    _skipping: bool = False

    def feed(self, data: bytes) -> list[Item]:
        """Split `data`; a token not yet ended by whitespace waits for more."""
        items: list[Item] = []
        if not data:
            return items
        if data[-1] in _WHITESPACE:
            closed, tail = data, b""
        else:  # the last token stays open
            tail = data.rsplit(None, 1)[-1]
            if len(tail) == len(data):  # no whitespace at all: it goes on the open token
                self._extend(data, items)
                return items
            closed = data[: len(data) - len(tail)]
        # `closed`: tokens each ended by whitespace; the first goes on with the open one
        if self._skipping:
            if closed[0] not in _WHITESPACE:  # the rest of the token too long to keep
                closed = closed[len(closed.split(None, 1)[0]) :]
            self._skipping = False
        elif self._pending:
            closed = bytes(self._pending) + closed
            self._pending.clear()
        self._emit_run(closed, items)
        if tail:
            self._extend(tail, items)
        return items

    def flush(self) -> list[Item]:
        """End the open token as whitespace would (the writer went quiet without a newline)."""
        items: list[Item] = []
        self._finish(items)
        return items

    @property
    def pending(self) -> int:
        """Bytes of an unfinished token held back (0 when skipping)."""
        return len(self._pending)

    @property
    def open(self) -> bool:
        """A token has begun and no whitespace has ended it yet (held, or being skipped)."""
        return bool(self._pending) or self._skipping

    def _extend(self, chunk: bytes, items: list[Item]) -> None:
        if self._skipping or not chunk:
            return
        if len(self._pending) + len(chunk) > self.max_length:
            self._pending += chunk[: self.max_length + 1 - len(self._pending)]
            items.append(self._too_long(bytes(self._pending)))
            self._pending.clear()
            self._skipping = True
            return
        self._pending += chunk

    def _finish(self, items: list[Item]) -> None:
        if self._skipping:
            self._skipping = False
            return
        if self._pending:
            raw = bytes(self._pending)
            self._pending.clear()
            self._emit(raw, items)

    def _emit_run(self, run: bytes, items: list[Item]) -> None:
        """Emit the tokens of `run`, each ended by whitespace: each run of plain URLs in it
        (the common case: all of them) checked in one match and handed on as one `Urls`,
        any other token on its own (classify())."""
        text = run.decode("latin-1")  # a character per byte: the same positions in both
        pos = 0
        while True:
            match = _PLAIN_RUN.match(text, pos)
            if match is not None:
                end = match.end()
                part = text[pos:end] if pos or end < len(text) else text
                urls = part.split()  # plain URLs are ASCII: split where bytes.split() does
                if len(part) <= self.max_length or max(map(len, urls)) <= self.max_length:
                    items.append(Urls(urls, part))
                else:
                    for raw in run[pos:end].split():
                        self._emit(raw, items)
                pos = end
            token = _TOKEN.search(run, pos)  # not a plain URL (or not a URL at all)
            if token is None:
                return
            self._emit(token.group(), items)
            pos = token.end()

    def _emit(self, raw: bytes, items: list[Item]) -> None:
        if len(raw) > self.max_length:
            items.append(self._too_long(raw))
        elif raw:
            items.append(classify(raw))

    def _too_long(self, raw: bytes) -> Rejected:
        return Rejected(
            f"token longer than {self.max_length} bytes", show(raw[: self.max_length + 1])
        )


# -- the pipe itself --------------------------------------------------------


@dataclass
class Fifo:
    """An open FIFO descriptor (read-write, non-blocking) and whether we made it."""

    fd: int
    path: Path
    created: bool
    _identity: tuple[int, int] = (0, 0)
    adopted: bool = False  # handed over by systemd (LISTEN_FDS): never recreated by us

    def lost(self) -> str | None:
        """Why `path` no longer leads to this FIFO ("deleted", "replaced by ..."), or None.

        A FIFO deleted while we run keeps working through our descriptor, but a
        writer's `echo URL > path` then creates a regular file and the URL is lost.
        """
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return "deleted"
        except OSError:
            return None  # cannot look (a directory made unreadable): nothing to act on
        if (st.st_dev, st.st_ino) == self._identity:
            return None
        if stat.S_ISFIFO(st.st_mode):
            return "replaced by another FIFO"
        return f"replaced by {_kind(st.st_mode)}"

    def warning(self) -> str | None:
        """What is unsafe about who may write this FIFO, or None (group-writable is fine)."""
        st = os.fstat(self.fd)
        problems = []
        if st.st_mode & stat.S_IWOTH:
            problems.append(f"writable by every user (mode {stat.S_IMODE(st.st_mode):04o})")
        if st.st_uid not in (os.geteuid(), 0):
            problems.append(f"owned by uid {st.st_uid}, neither this user nor root")
        if not problems:
            return None
        return f"{self.path}: {' and '.join(problems)}: anyone who can write it chooses the URLs"

    def unread(self) -> int:
        """Bytes written into the pipe and not read yet (FIONREAD)."""
        buf = bytearray(4)
        try:
            fcntl.ioctl(self.fd, termios.FIONREAD, buf)
        except OSError:
            return 0
        return int.from_bytes(buf, sys.byteorder)

    def read(self, limit: int) -> bytes:
        """At most `limit` bytes; b"" when nothing is there right now."""
        try:
            return os.read(self.fd, limit)
        except (BlockingIOError, InterruptedError):
            return b""

    def close(self) -> None:
        """Close the descriptor; unlink the path only if we created it and it is still ours."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self.created:
            return
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._identity:
            os.unlink(self.path)


def open_fifo(path: Path, mode: int, passed_fd: int | None = None) -> Fifo:
    """Adopt `passed_fd` (systemd's ListenFIFO), or create/reuse the FIFO at `path`.

    FifoError when unusable."""
    if passed_fd is not None:
        return adopt_fifo(passed_fd, path)
    created = _make_fifo(path, mode)
    fd = _open_nofollow(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISFIFO(st.st_mode):
            raise FifoError(f"{path}: {_kind(st.st_mode)}, not a FIFO; refusing to use it")
        if created:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return Fifo(fd, path, created, (st.st_dev, st.st_ino))


def _make_fifo(path: Path, mode: int) -> bool:
    """mkfifo with exactly `mode` (umask ignored); False when something is already there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISFIFO(st.st_mode):
            return False
        raise FifoError(
            f"{path} exists and is {_kind(st.st_mode)}, not a FIFO; refusing to use or "
            "replace it (remove it or choose another --fifo)"
        )
    old = os.umask(0)
    try:
        os.mkfifo(path, mode)
    except FileExistsError:
        return False
    except OSError as exc:
        raise FifoError(f"cannot create FIFO {path}: {exc.strerror}") from exc
    finally:
        os.umask(old)
    return True


def _open_nofollow(path: Path) -> int:
    flags = os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FifoError(f"{path} is a symbolic link; refusing to follow it") from exc
        raise FifoError(f"cannot open FIFO {path}: {exc.strerror}") from exc


def _kind(mode: int) -> str:
    kinds = {
        stat.S_IFREG: "a regular file",
        stat.S_IFDIR: "a directory",
        stat.S_IFLNK: "a symbolic link",
        stat.S_IFSOCK: "a socket",
        stat.S_IFCHR: "a character device",
        stat.S_IFBLK: "a block device",
    }
    return kinds.get(stat.S_IFMT(mode), "not a FIFO")


def adopt_fifo(fd: int, path: Path) -> Fifo:
    """The FIFO descriptor systemd passed (LISTEN_FDS): checked with fstat, never unlinked.

    Its path is what /proc says the descriptor is (for logs), else `path`.
    """
    origin = f"descriptor {fd} from systemd (LISTEN_FDS)"
    try:
        st = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as exc:
        raise FifoError(f"{origin} is not usable: {exc.strerror}") from exc
    if not stat.S_ISFIFO(st.st_mode):
        raise FifoError(
            f"{origin} is {_kind(st.st_mode)}, not a FIFO; check the socket unit's ListenFIFO="
        )
    if flags & os.O_ACCMODE != os.O_RDWR:
        raise FifoError(f"{origin} is not open read-write (systemd's ListenFIFO= is)")
    os.set_blocking(fd, False)
    os.set_inheritable(fd, False)
    return Fifo(fd, _proc_path(fd) or path, False, (st.st_dev, st.st_ino), adopted=True)


def _proc_path(fd: int) -> Path | None:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return Path(target) if target.startswith("/") and not target.endswith(")") else None


# -- the FIFO as a source -----------------------------------------------------

READ_CHUNK = 8 * 1024  # FIFO input per loop iteration: ~200 URLs, ~25 ms of engine work
FIFO_CHECK_EVERY = 1.0  # seconds between checks that the FIFO path still leads to our FIFO


class FifoSource:
    """The FIFO, read on the loop: tokens to the inbox; recreated when deleted."""

    name = "fifo"
    journaled = True  # a pipe forgets what was read: --state-dir records it
    wants_done = False  # the writer of a FIFO does not wait for results

    def __init__(
        self,
        fifo: Fifo,
        mode: int,
        max_url_length: int,
        log: FilteringBoundLogger,
        token_timeout: float = 0.0,
    ) -> None:
        self.fifo = fifo  # the current one: it may be recreated
        self._mode = mode
        self._tokens = Tokenizer(max_url_length)
        self._log = log
        # --token-timeout: seconds of quiet after which a token left open is complete (0: never)
        self._token_timeout = token_timeout
        self._loop: Loop | None = None
        self._inbox: Inbox | None = None
        self._watch: Watcher | None = None
        self._quiet: Alarm | None = None  # set while a token is open
        self._quiet_set = False
        self._paused = False
        self._stopped = False

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "paused" if self._paused else "reading"
        return f"<FifoSource {self.fifo.path} {state}>"

    def describe(self) -> dict[str, object]:
        return {"fifo": str(self.fifo.path), "created_fifo": self.fifo.created}

    def status(self) -> str:
        """Nothing for STATUS= beyond the daemon's counts."""
        return ""

    def start(self, loop: Loop, inbox: Inbox) -> None:
        self._loop, self._inbox = loop, inbox
        self._watch = loop.watch_readable(self.fifo.fd, self._read)
        if self._token_timeout > 0:
            self._quiet = loop.alarm(self._went_quiet)
        if self.fifo.lost() is None:  # else its path is unknown (systemd's, renamed)
            loop.every(FIFO_CHECK_EVERY, self.check)

    def pause(self) -> None:
        self._paused = True
        if self._watch is not None:
            self._watch.pause()

    def resume(self) -> None:
        self._paused = False
        if self._watch is not None:
            self._watch.resume()

    def stop(self) -> None:
        self._stopped = True
        if self._watch is not None:
            self._watch.stop()

    def done(self, fields: Mapping[str, object]) -> None:
        """Nothing to answer (never called: wants_done is False)."""

    def close(self) -> None:
        self.fifo.close()

    def _read(self) -> None:
        assert self._inbox is not None
        data = self.fifo.read(READ_CHUNK)
        self._inbox.take(self, self._tokens.feed(data))
        self._watch_open_token()

    def _watch_open_token(self) -> None:
        """A token the last read left open is complete after --token-timeout of quiet."""
        if self._quiet is None:
            return
        if self._tokens.open:
            self._quiet.set(self._token_timeout)
            self._quiet_set = True
        elif self._quiet_set:
            self._quiet.cancel()
            self._quiet_set = False

    def _went_quiet(self) -> None:
        """No byte for --token-timeout: the open token is complete, as if a newline had come
        (`printf URL > fifo`). Not while bytes wait unread (input paused): the read that
        takes them decides."""
        self._quiet_set = False
        if self._stopped or self.fifo.unread():
            return
        assert self._inbox is not None
        self._inbox.take(self, self._tokens.flush())

    def check(self) -> None:
        """Every FIFO_CHECK_EVERY s: recreate a deleted FIFO; the daemon stops (exit 2)
        if we cannot."""
        fifo = self.fifo
        why = fifo.lost()
        if why is None or self._stopped:
            return
        assert self._inbox is not None
        fields = {"fifo": str(fifo.path), "reason": why}
        if fifo.adopted or not (why == "deleted" or why.endswith("FIFO")):
            self._log.error("fifo.lost", **fields, action="stopping, exit status 2")
            self._inbox.lost(self, "fifo lost")
            return
        try:
            new = open_fifo(fifo.path, self._mode)
        except FifoError as exc:
            self._log.error("fifo.lost", **fields, error=str(exc), action="stopping (2)")
            self._inbox.lost(self, "fifo lost")
            return
        self._switch(new)
        self._log.warning("fifo.recreated", **fields, created=new.created)
        if (warning := new.warning()) is not None:
            self._log.warning("fifo.insecure", fifo=str(new.path), reason=warning)

    def _switch(self, new: Fifo) -> None:
        """Read what is left in the old FIFO, close it, and read the new one from now on."""
        assert self._inbox is not None
        assert self._loop is not None
        old, self.fifo = self.fifo, new
        while data := old.read(READ_CHUNK):
            self._inbox.take(self, self._tokens.feed(data))
        self._inbox.take(self, self._tokens.feed(b"\n"))  # a token cut off in the old one ends
        old.close()  # not unlinked: the path is no longer the old FIFO's
        if self._watch is not None:
            self._watch.stop()
        self._watch = self._loop.watch_readable(new.fd, self._read)
        if self._paused or self._stopped:
            self._watch.pause()
