"""The interface between a source of URLs and the daemon, and what a source hands in.

A source (the FIFO; a Redis stream) reads the outside world on the daemon's
loop and hands what it read to its `Inbox` as items: `Url`, `Urls` (a run of
URLs), `Stop` or `Rejected`. The daemon accepts them (intake.py), runs them (jobs.py) and tells
the source how each of its URLs ended (`Source.done`, after transfer.done is
logged). The daemon paces every source (`pause`/`resume`: --max-queued, a
full disk) and stops them on stop/SIGTERM. Sources never import the engine;
the engine never learns where a URL came from. Only driver.py imports pyuv: a
source gets the loop's services through `Loop`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

SHOWN_TOKEN_CHARS = 200  # a token in a log line is cut to this many characters

# -- what a source hands in ---------------------------------------------------


@dataclass(slots=True)
class Url:
    """An accepted http/https URL; `entry` is the source's own name for it, if any
    (a Redis stream entry id), logged as `entry` on transfer.added and transfer.done.

    Not frozen: one is made per URL read, and a frozen dataclass's __init__ (through
    object.__setattr__) cost twice a plain one. Nothing changes one once made.
    """

    url: str
    entry: str | None = None


@dataclass(slots=True)
class Urls:
    """A run of accepted http/https URLs without entries, as one item: what a FIFO read
    of plain lines gives (a few hundred URLs). One object per read, where a `Url` per
    URL cost ~2,300 instructions each. Same as `Url(url)` for each of `urls`, in order.

    `text` is the run as read, the URLs separated by whitespace: one `in` test on it
    answers for every URL (an "@" that may start a password, a character JSON escapes).
    """

    urls: list[str]
    text: str


@dataclass(frozen=True, slots=True)
class Stop:
    """The word `stop`: finish what runs, then exit."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A token that is not a usable URL: why, and the token shown safely."""

    reason: str
    token: str
    entry: str | None = None  # as Url.entry: so a source can answer for it


Item = Url | Urls | Stop | Rejected
Single = Url | Stop | Rejected  # an item that is not a run


def singles(items: Iterable[Item]) -> list[Single]:
    """`items` with each run of URLs (`Urls`) as one `Url` per URL, in order."""
    out: list[Single] = []
    for item in items:
        if isinstance(item, Urls):
            out.extend(map(Url, item.urls))
        else:
            out.append(item)
    return out


def shown(item: Single) -> str:
    """An item as a log line shows it (a URL cut to SHOWN_TOKEN_CHARS)."""
    if isinstance(item, Url):
        return item.url[:SHOWN_TOKEN_CHARS]
    return "stop" if isinstance(item, Stop) else item.token


# -- what the loop offers a source (driver.py implements it on pyuv) -----------


class Handle(Protocol):
    def stop(self) -> None:
        """Stop and close it; calling twice is harmless."""


class Watcher(Handle, Protocol):
    """A readable-descriptor watcher (Driver.watch_readable)."""

    def pause(self) -> None:
        """No callbacks until resume(); the descriptor stays open, its bytes unread."""

    def resume(self) -> None:
        """A callback on every loop iteration where the descriptor is readable."""


class Waker(Handle, Protocol):
    """Wakes the loop from another thread (a pyuv.Async)."""

    def send(self) -> None:
        """Thread-safe: the callback runs soon on the loop's thread (several sends may
        coalesce into one call)."""


class Alarm(Handle, Protocol):
    """A one-shot timer set again and again (Driver.alarm)."""

    def set(self, seconds: float) -> None:
        """Call back once, `seconds` from now, replacing any earlier setting."""

    def cancel(self) -> None:
        """Forget the setting; it can be set again."""


class Loop(Protocol):
    """The loop's services a source may use."""

    def watch_readable(self, fd: int, callback: Callable[[], None]) -> Watcher: ...

    def every(self, seconds: float, callback: Callable[[], None]) -> Handle: ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Handle: ...

    def waker(self, callback: Callable[[], None]) -> Waker: ...

    def alarm(self, callback: Callable[[], None]) -> Alarm: ...


# -- the two sides --------------------------------------------------------------


class Inbox(Protocol):
    """The daemon's side, given to Source.start(); call it on the loop's thread only."""

    def take(self, source: Source, items: Sequence[Item]) -> None:
        """Hand in what was read, in order: URLs are accepted (transfer.added) or held,
        `stop` begins the drain, rejections are logged (input.rejected)."""

    def room(self) -> int:
        """How many more URLs fit under --max-queued right now (0 while paused)."""

    def lost(self, source: Source, reason: str) -> None:
        """The source cannot go on (its FIFO is gone): the daemon stops, exit status 2."""


class Source(Protocol):
    """Where URLs come from. The daemon calls these on the loop's thread."""

    name: str  # "fifo", "redis": for logs
    # True: what was handed in exists nowhere else (a pipe forgets what was read), so
    # with --state-dir the daemon records it in the journal before transfer.added.
    # False: the source keeps its own record until done() (a Redis pending list).
    journaled: bool
    # True: done() is called for every item handed in (a Redis stream writes each result
    # back). False: never (a FIFO's writer hears nothing back), and the daemon does not
    # build the fields a done() call would get (a dict per URL).
    wants_done: bool

    def describe(self) -> dict[str, object]:
        """What daemon.started says about this source (the FIFO's path, ...)."""

    def status(self) -> str:
        """A few words for systemd's STATUS= line ("" for nothing to add)."""

    def start(self, loop: Loop, inbox: Inbox) -> None:
        """Begin reading; hand items to `inbox.take` from now on."""

    def pause(self) -> None:
        """Read nothing until resume() (back-pressure); calling twice is harmless."""

    def resume(self) -> None:
        """Read again."""

    def stop(self) -> None:
        """No more reads, for good (stop, SIGTERM): what runs still ends with done()."""

    def done(self, fields: Mapping[str, object]) -> None:
        """How one item of this source ended, after its line is logged (only when
        `wants_done`). A URL: `id`,
        `url` (as handed in), `entry` and the transfer.done fields (result, result_name,
        status, bytes, elapsed, error, effective_url, redirects, attempts[, file]).
        A rejected item: `entry`, `url` (the token, shown safely), result -1,
        result_name "REJECTED" and `error` (why)."""

    def close(self) -> None:
        """Release everything; the loop has stopped."""
