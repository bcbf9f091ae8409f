"""Logging: the one structlog.configure() of the program, one event per line.

Owns the renderers (JSON lines, logfmt, console), the timestamp/level keys,
escaping of attacker text for logfmt and console, journald's level prefix, and
when lines reach the stream: at once, or inside `batched()` at the next
`flush()` (the daemon's loop calls it once per iteration, before it may sleep).
It must not be configured twice, and nothing else in the program configures
structlog; modules get loggers from `get()` and bind per-transfer keys
explicitly (no contextvars: a callback loop has one context).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import count, repeat
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# syslog priorities for journald's SyslogLevelPrefix= (sd-daemon(3))
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
# C0, DEL, C1, and the invisible characters that reorder or break the text around them:
# the bidi marks, embeddings, overrides and isolates (U+202E shows "gpj.exe" as "exe.jpg")
# and the Unicode line and paragraph separators.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
_KEY_ORDER = ["timestamp", "level", "event"]
_LEAD_KEYS = ("url", "result", "status", "bytes", "elapsed")  # then the rest, as logged
# structlog's add_log_level: the method name is the level, but for these two
_METHOD_LEVEL = {"warn": "warning", "exception": "error"}
MAX_PENDING = 512  # lines held inside batched() before they are written anyway


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Control characters in string values (and lists of strings) become \\xNN, bidi
    controls \\uNNNN (logfmt and console would pass them raw to the terminal; JSON escapes
    them itself)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            if _CONTROL.search(value):
                event_dict[key] = _CONTROL.sub(_escape, value)
        elif isinstance(value, list):
            event_dict[key] = [
                _CONTROL.sub(_escape, item) if isinstance(item, str) else item for item in value
            ]
    return event_dict


# Header values that are credentials: shown as their scheme or cookie names only.
_SECRET_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie"))


def redact_head(text: str) -> list[str]:
    """An HTTP head (as the engine's debug function gives it) as lines for a log, with the
    values of Authorization, Proxy-Authorization (scheme kept), Cookie and Set-Cookie
    (names kept) replaced by ***."""
    lines = []
    for line in text.split("\r\n"):
        if not line:
            continue
        name, colon, value = line.partition(":")
        lname = name.strip().lower()
        if colon and lname in _SECRET_HEADERS:
            line = f"{name}: {_redact_value(lname, value.strip())}"
        lines.append(line)
    return lines


def _redact_value(name: str, value: str) -> str:
    if name.endswith("authorization"):
        scheme, space, _ = value.partition(" ")
        return f"{scheme} ***" if space else "***"
    if name == "set-cookie":
        value = value.split(";", 1)[0]
    pairs = (pair.strip().partition("=") for pair in value.split(";"))
    return "; ".join(f"{key}={'***' if eq else ''}" if eq else "***" for key, eq, _ in pairs)


def _logfmt_values(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Booleans and None spelled out: LogfmtRenderer would print a bare flag and `key=`."""
    for key, value in event_dict.items():
        if value is None:
            event_dict[key] = "null"
        elif isinstance(value, bool):
            event_dict[key] = "true" if value else "false"
    return event_dict


class _JournalPrefix:
    """Prefix each rendered line with <N> so journald files it at the right priority."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> Any:
        level = event_dict.get("level", _METHOD_LEVEL.get(name, name))  # json adds it later
        priority = _PRIORITY.get(str(level), 6)
        line = self._renderer(logger, name, event_dict)
        if isinstance(line, bytes):
            return b"<%d>%s" % (priority, line)
        return f"<{priority}>{line}"


_DIGITS = tuple(f"{n:03d}" for n in range(1000))  # "000" to "999"


class _Clock:
    """ISO 8601 UTC timestamps, exactly as structlog's TimeStamper(fmt="iso", utc=True)
    writes them (`datetime.now(utc).isoformat()` with Z: microseconds unless 0), with
    the date and time of day formatted once a second rather than once a line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        """The current time as structlog's TimeStamper writes it."""
        micro = time.time_ns() // 1000
        second = micro // 1_000_000
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        micro -= second * 1_000_000
        if not micro:
            return f"{self._prefix}Z"
        # the six digits as two table lookups: "{micro:06d}" parses its format every line
        return f"{self._prefix}.{_DIGITS[micro // 1000]}{_DIGITS[micro % 1000]}Z"


_clock_now = _Clock().now
# Inside batched() (the daemon's loop) one timestamp serves a loop iteration: taken at the
# iteration's first line, forgotten at flush() (before the loop may sleep). All lines are
# logged on the loop's thread. Reading the clock and formatting it cost ~4,500 instructions
# a line (callgrind), two lines a URL; holding it, ~200.
_holding = False
_held: str | None = None


def timestamp() -> str:
    """The time for a line: now, or inside batched() the time of this loop iteration's
    first line."""
    global _held
    held = _held
    if held is not None:
        return held
    now = _clock_now()
    if _holding:
        _held = now
    return now


def _add_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog's TimeStamper(fmt="iso", utc=True, key="timestamp"), through timestamp()."""
    event_dict["timestamp"] = timestamp()
    return event_dict


def _json_default(obj: Any) -> Any:
    """What JSON cannot hold: its __structlog__() or repr(), as structlog's JSONRenderer does."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


def _json_encoder() -> Callable[[Any], str]:
    """json.dumps(obj, default=_json_default) without building an encoder per line.

    JSONEncoder.encode() builds a new C encoder on every call; its markers (the
    check for circular containers) are what stops reusing one, and an event
    dict of strings and numbers holds no cycle. Falls back where there is no C
    encoder.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(default=_json_default).encode
    iterencode = make(
        None, _json_default, json.encoder.encode_basestring_ascii, None, ": ", ", ",
        False, False, True,
    )  # fmt: skip
    return lambda obj: "".join(iterencode(obj, 0))


_encode = _json_encoder()


def _json_line(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
    """The whole JSON chain in one step: add_log_level, TimeStamper, dict_tracebacks,
    timestamp/level/event first (a line reads left to right under `tail -f`), JSONRenderer.
    """
    if "exc_info" in event_dict:
        event_dict = structlog.processors.dict_tracebacks(logger, name, event_dict)
    event_dict.pop("timestamp", None)
    event_dict.pop("level", None)
    line = {"timestamp": timestamp(), "level": _METHOD_LEVEL.get(name, name)}
    if "event" in event_dict:
        line["event"] = event_dict.pop("event")
    line.update(event_dict)
    return _encode(line)


def lead_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """What a reader looks for first (url, result, status, bytes, elapsed), then the other
    keys in the order the event gave them, not alphabetically (logfmt and console)."""
    lead = {key: event_dict.pop(key) for key in _LEAD_KEYS if key in event_dict}
    if not lead:
        return event_dict
    rest = dict(event_dict)
    event_dict.clear()
    for key in _KEY_ORDER:
        if key in rest:
            event_dict[key] = rest.pop(key)
    event_dict.update(lead)
    event_dict.update(rest)
    return event_dict


def _renderer(fmt: str, colors: bool) -> list[Processor]:
    if fmt == "logfmt":
        return [
            structlog.processors.format_exc_info,
            escape_controls,
            _logfmt_values,
            lead_keys,
            structlog.processors.LogfmtRenderer(key_order=_KEY_ORDER),
        ]
    return [
        escape_controls,
        lead_keys,
        structlog.dev.ConsoleRenderer(colors=colors, sort_keys=False),
    ]


def writes_to_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when `stream` is journald's stream socket ($JOURNAL_STREAM is dev:inode of it)."""
    expected = environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class LogFile:
    """The --log-file stream: appended to, line-buffered, reopened on SIGHUP (logrotate).

    structlog's logger keeps this object's bound methods, so `reopen()` can
    swap the file underneath without configuring structlog again.
    """

    def __init__(self, path: os.PathLike[str]) -> None:
        self.path = path
        self._file = self._open()

    def _open(self) -> TextIO:
        return open(self.path, "a", buffering=1, encoding="utf-8")

    def write(self, text: str) -> int:
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def isatty(self) -> bool:
        return False

    def reopen(self) -> None:
        """Open the path again (a new file after a rename); OSError leaves the old one in use."""
        new = self._open()
        old, self._file = self._file, new
        old.close()

    def close(self) -> None:
        self._file.close()


class LineWriter:
    """structlog's logger: rendered lines to the stream, one event per line.

    A line is written and flushed at once, except inside `batched()`: there lines
    wait until `flush()` (or until MAX_PENDING wait), then go out in one write.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending: list[str] = []
        self.batching = False

    def msg(self, message: str) -> None:
        pending = self._pending
        pending.append(message)
        if not self.batching or len(pending) >= MAX_PENDING:
            self.flush()

    def extend(self, messages: list[str]) -> None:
        """msg() for each of `messages`, in order."""
        pending = self._pending
        pending += messages
        if not self.batching or len(pending) >= MAX_PENDING:
            self.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def flush(self) -> None:
        """Write the waiting lines (if any) and flush the stream."""
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        lines.append("")  # the last line's newline
        self._stream.write("\n".join(lines))
        self._stream.flush()


_log_file: LogFile | None = None
_writer: LineWriter | None = None
# Plain JSON lines (no journald prefix): the per-URL lines are rendered here, from this level up.
_direct: LineWriter | None = None
_direct_level = logging.CRITICAL + 1


def open_stream(path: os.PathLike[str] | None) -> TextIO:
    """stdout, or the log file opened for appending, line-buffered (see reopen())."""
    global _log_file
    if path is None:
        return sys.stdout
    _log_file = LogFile(path)
    return cast(TextIO, _log_file)


def reopen() -> str | None:
    """Reopen the log file after logrotate renamed it: its path, or None when on stdout."""
    if _log_file is None:
        return None
    flush()  # what was logged before the rename belongs to the old file
    _log_file.reopen()
    return os.fspath(_log_file.path)


def configure(
    fmt: str, level: str, stream: TextIO, environ: Mapping[str, str] | None = None
) -> None:
    """Configure structlog once: `fmt` json|logfmt|console, `level` name, lines to `stream`."""
    global _writer, _direct, _direct_level
    processors: list[Processor] = [_json_line]
    if fmt != "json":
        processors = [
            structlog.processors.add_log_level,
            _add_timestamp,
            *_renderer(fmt, colors=stream.isatty()),
        ]
    if environ is not None and writes_to_journal(stream, environ):
        processors[-1] = _JournalPrefix(processors[-1])
    writer = _writer = LineWriter(stream)
    _direct = writer if processors == [_json_line] else None
    _direct_level = _LEVELS[level]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=True,
    )


# The per-URL lines, rendered as one f-string when lines are plain JSON: the same bytes as
# the generic path (json's ASCII string encoder, ints as str(), floats as repr(), None as
# null), without building the event's dict and walking it. `log` must be bound to no keys.
_esc = json.encoder.encode_basestring_ascii
# JSON of the values most lines repeat (no error, OK, the HTTP versions): looked up, not encoded
_JSON = {None: "null", "": '""', "OK": '"OK"', "1.1": '"1.1"', "2": '"2"'}
# ... and of small numbers (result, status, redirects, attempts; status None is null): a
# lookup costs a third of formatting an int in an f-string
_NUMBERS: dict[int | None, str] = {n: str(n) for n in range(1000)}
_NUMBERS[None] = "null"
_ENTRY = '"entry": %s, '
_FILE = ', "file": %s'


def transfers_added(
    log: FilteringBoundLogger,
    first: int,
    urls: Sequence[str],
    entries: Sequence[str | None] | None,
    plain: bool = False,
) -> None:
    """`log.info("transfer.added", id=, url=, entry=)` for ids first, first + 1, ... with
    urls[i] and entries[i] (entry only when not None; `entries` None: none has one): a run
    of accepted URLs at once. `plain`: no URL holds a character JSON escapes (a quote, a
    backslash, anything but printable ASCII), so each is written between quotes as it is.
    """
    writer = _direct
    if writer is None or log._logger is not writer:  # type: ignore[attr-defined]
        for transfer_id, url, entry in zip(count(first), urls, entries or repeat(None)):
            fields: dict[str, Any] = {"id": transfer_id, "url": url}
            if entry is not None:
                fields["entry"] = entry
            log.info("transfer.added", **fields)
        return
    if _direct_level > logging.INFO:
        return
    head = f'{{"timestamp": "{timestamp()}", "level": "info", "event": "transfer.added", "id": '
    if entries is None and plain:  # a FIFO read's run of plain URLs: no escaping, no entry
        writer.extend(
            [
                f'{head}{transfer_id}, "url": "{url}"}}'
                for transfer_id, url in zip(count(first), urls)
            ]
        )
        return
    esc = _esc
    writer.extend(
        [
            f'{head}{transfer_id}, "url": {esc(url)}}}'
            if entry is None
            else f'{head}{transfer_id}, "url": {esc(url)}, "entry": {esc(entry)}}}'
            for transfer_id, url, entry in zip(count(first), urls, entries or repeat(None))
        ]
    )


def seconds(elapsed: float) -> str:
    """`repr(round(elapsed, 6))` (a duration as JSON lines show it) at a third of the cost.

    For 0.0001 <= elapsed < 1e9 that is the number printed to six places with its
    trailing zeros cut: the same correctly rounded digits as round() (both are dtoa's
    mode 3), at most 15 significant digits, which repr() of the rounded float prints as
    they are, in fixed notation. Elsewhere (repr()'s scientific notation, nan): repr(round()).
    """
    if 0.0001 <= elapsed < 1e9:
        text = f"{elapsed:.6f}".rstrip("0")
        return text + "0" if text[-1] == "." else text
    return repr(round(elapsed, 6))


def transfer_done(
    log: FilteringBoundLogger,
    ok: bool,
    transfer_id: int,
    url: str,
    entry: str | None,
    effective_url: str,
    result: int,
    result_name: str,
    error: str,
    status: int | None,
    size: int,
    elapsed: float,
    redirects: int,
    attempts: int,
    http_version: str | None,
    file: str | None,
) -> None:
    """`log.info("transfer.done", ...)` (`log.warning` when not ok) with the keys id, url,
    entry (left out when None), effective_url, result, result_name, error, status, bytes
    (`size`), elapsed (rounded to the microsecond), redirects, attempts, http_version and
    file (left out when None), in that order: jobs.report's line (transfer_ok() its most
    common one)."""
    writer = _direct
    if writer is None or log._logger is not writer:  # type: ignore[attr-defined]
        line: dict[str, Any] = {"id": transfer_id, "url": url}
        if entry is not None:
            line["entry"] = entry
        line.update(
            effective_url=effective_url,
            result=result,
            result_name=result_name,
            error=error,
            status=status,
            bytes=size,
            elapsed=round(elapsed, 6),
            redirects=redirects,
            attempts=attempts,
            http_version=http_version,
        )
        if file is not None:
            line["file"] = file
        (log.info if ok else log.warning)("transfer.done", **line)
        return
    if (logging.INFO if ok else logging.WARNING) < _direct_level:
        return
    known, number = _JSON.get, _NUMBERS.get
    shown = _esc(url)
    writer.msg(
        f'{{"timestamp": "{_held or timestamp()}", "level": "{"info" if ok else "warning"}", '
        f'"event": "transfer.done", "id": {transfer_id}, "url": {shown}, '
        f"{'' if entry is None else _ENTRY % _esc(entry)}"
        f'"effective_url": {shown if effective_url is url else _esc(effective_url)}, '
        f'"result": {number(result) or result}, '
        f'"result_name": {known(result_name) or _esc(result_name)}, '
        f'"error": {known(error) or _esc(error)}, "status": {number(status) or status}, '
        f'"bytes": {size}, "elapsed": {seconds(elapsed)}, '
        f'"redirects": {number(redirects) or redirects}, '
        f'"attempts": {number(attempts) or attempts}, '
        f'"http_version": {known(http_version) or _esc(str(http_version))}'
        f"{'' if file is None else _FILE % _esc(file)}}}"
    )


def transfer_ok(
    log: FilteringBoundLogger,
    transfer_id: int,
    url: str,
    entry: str | None,
    status: int | None,
    size: int,
    elapsed: float,
    redirects: int,
    http_version: str | None,
) -> None:
    """transfer_done()'s most common line, with fewer arguments: ok, the URL its own
    effective URL, result 0 (OK), no error, one attempt, no file (jobs.report's line for
    a URL fetched at the first try with --output discard)."""
    writer = _direct
    if writer is None or log._logger is not writer:  # type: ignore[attr-defined]
        transfer_done(log, True, transfer_id, url, entry, url, 0, "OK", "", status, size,
                      elapsed, redirects, 1, http_version, None)  # fmt: skip
        return
    if _direct_level > logging.INFO:
        return
    shown = _esc(url)
    writer.msg(
        f'{{"timestamp": "{_held or timestamp()}", "level": "info", '
        f'"event": "transfer.done", "id": {transfer_id}, "url": {shown}, '
        f"{'' if entry is None else _ENTRY % _esc(entry)}"
        f'"effective_url": {shown}, "result": 0, "result_name": "OK", "error": "", '
        f'"status": {_NUMBERS.get(status) or status}, "bytes": {size}, '
        f'"elapsed": {seconds(elapsed)}, '
        f'"redirects": {_NUMBERS.get(redirects) or redirects}, "attempts": 1, '
        f'"http_version": {_JSON.get(http_version) or _esc(str(http_version))}}}'
    )


def flush() -> None:
    """Write the lines that wait inside batched(); call it before the loop may sleep (the
    next line takes a new timestamp)."""
    global _held
    _held = None
    if _writer is not None:
        _writer.flush()


@contextmanager
def batched() -> Iterator[None]:
    """Lines wait for flush() instead of one write each; all are written on the way out.
    Between two flush() calls (one loop iteration) lines share one timestamp."""
    global _holding, _held
    writer = _writer
    _holding, _held = True, None
    try:
        if writer is None:
            yield
            return
        writer.batching = True
        try:
            yield
        finally:
            writer.batching = False
            writer.flush()
    finally:
        _holding, _held = False, None


def get(**bound: Any) -> FilteringBoundLogger:
    """A logger with `bound` keys."""
    logger: FilteringBoundLogger = structlog.get_logger().bind(**bound)
    return logger
