"""Logging: the one structlog.configure() of the program, one event per line.

Owns the renderers (JSON lines, logfmt, console), the timestamp/level keys,
escaping of attacker text for logfmt and console, and journald's level prefix.
It must not be configured twice, and nothing else in the program configures
structlog; modules get loggers from `get()` and bind per-transfer keys
explicitly (no contextvars: a callback loop has one context).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
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
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x80-\x9f]")
_KEY_ORDER = ["timestamp", "level", "event"]


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def escape_controls(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Control characters in string values become \\xNN (logfmt and console pass them raw)."""
    for key, value in event_dict.items():
        if isinstance(value, str) and _CONTROL.search(value):
            event_dict[key] = _CONTROL.sub(_escape, value)
    return event_dict


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
        priority = _PRIORITY.get(str(event_dict.get("level")), 6)
        line = self._renderer(logger, name, event_dict)
        if isinstance(line, bytes):
            return b"<%d>%s" % (priority, line)
        return f"<{priority}>{line}"


def _keys_first(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """timestamp, level, event first: a line reads left to right under `tail -f`."""
    first = {key: event_dict.pop(key) for key in _KEY_ORDER if key in event_dict}
    return {**first, **event_dict}


def _renderer(fmt: str, colors: bool) -> list[Processor]:
    if fmt == "json":
        return [
            structlog.processors.dict_tracebacks,
            _keys_first,
            structlog.processors.JSONRenderer(),
        ]
    if fmt == "logfmt":
        return [
            structlog.processors.format_exc_info,
            escape_controls,
            _logfmt_values,
            structlog.processors.LogfmtRenderer(key_order=_KEY_ORDER),
        ]
    return [escape_controls, structlog.dev.ConsoleRenderer(colors=colors)]


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


_log_file: LogFile | None = None


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
    _log_file.reopen()
    return os.fspath(_log_file.path)


def configure(
    fmt: str, level: str, stream: TextIO, environ: Mapping[str, str] | None = None
) -> None:
    """Configure structlog once: `fmt` json|logfmt|console, `level` name, lines to `stream`."""
    processors: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        *_renderer(fmt, colors=stream.isatty()),
    ]
    if environ is not None and writes_to_journal(stream, environ):
        processors[-1] = _JournalPrefix(processors[-1])
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def get(**bound: Any) -> FilteringBoundLogger:
    """A logger with `bound` keys."""
    logger: FilteringBoundLogger = structlog.get_logger().bind(**bound)
    return logger
