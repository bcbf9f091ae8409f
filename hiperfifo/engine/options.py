"""Options of Easy and Multi: one table each, one check per option, run on every assignment.

A bad option fails where it is set, at once, naming the option and what it
accepts: a wrong type is a TypeError, a wrong value a ValueError (Multi's
own are MultiError(BAD_FUNCTION_ARGUMENT) as well, as libcurl answers a bad
curl_multi_setopt). Nothing here does I/O. A check returns the value to
store (a copy, or the meaning of a shorthand such as accept_encoding=True).

To add an option: one line in EASY_OPTIONS or MULTI_OPTIONS, built from the
checks below (or a new one), beside the keyword argument and its slot.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hiperfifo.engine.codes import MCode, MultiError
from hiperfifo.engine.policy import NetworkPolicy

Check = Callable[[str, Any], Any]  # (option name, value) -> the value to store
DEFAULT_CONNECT_TIMEOUT_MS = 300_000  # libcurl's DEFAULT_CONNECT_TIMEOUT; what 0 means

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, header names
_FIELD_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF, NUL and other controls


class MultiOptionError(MultiError, ValueError):
    """A bad value for a Multi option: MultiError(BAD_FUNCTION_ARGUMENT), and a ValueError."""


class MultiOptionTypeError(MultiError, TypeError):
    """A Multi option of the wrong type: MultiError(BAD_FUNCTION_ARGUMENT), and a TypeError."""


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _wrong_type(name: str, accepts: str, value: Any) -> TypeError:
    return TypeError(f"option {name}: must be {accepts}, not {_shown(value)}")


def _wrong_value(name: str, accepts: str, value: Any) -> ValueError:
    return ValueError(f"option {name}: must be {accepts}, not {value!r}")


# -- checks, each a factory returning Check -------------------------------------------


def anything() -> Check:
    """Any value at all (CURLOPT_PRIVATE)."""
    return lambda _name, value: value


def flag() -> Check:
    """True or False; not 1, "yes" or None, which would silently mean something."""

    def check(name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _wrong_type(name, "a bool (True or False)", value)
        return value

    return check


def integer(minimum: int, meaning: str = "", *, zero: int = 0) -> Check:
    """An int (not a bool, not a float) >= minimum; 0 stored as `zero` (a default's value)."""
    accepts = f"an int >= {minimum}" + (f" ({meaning})" if meaning else "")

    def check(name: str, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong_type(name, accepts, value)
        if value < minimum:
            raise _wrong_value(name, accepts, value)
        return int(value) or zero

    return check


def one_of(values: tuple[str, ...], meaning: str = "") -> Check:
    """One of a few strings."""
    accepts = "one of " + ", ".join(map(repr, values)) + (f" ({meaning})" if meaning else "")

    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _wrong_type(name, accepts, value)
        if value not in values:
            raise _wrong_value(name, accepts, value)
        return value

    return check


def integer_or_none(minimum: int, meaning: str = "") -> Check:
    inner = integer(minimum, meaning)
    return lambda name, value: None if value is None else inner(name, value)


def seconds(meaning: str = "") -> Check:
    """A finite number of seconds > 0 (int or float, not a bool)."""
    accepts = "a number of seconds > 0" + (f" ({meaning})" if meaning else "")

    def check(name: str, value: Any) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _wrong_type(name, accepts, value)
        if not (math.isfinite(value) and value > 0):
            raise _wrong_value(name, accepts, value)
        return float(value)

    return check


def function_or_none(signature: str) -> Check:
    accepts = f"a callable {signature} or None"

    def check(name: str, value: Any) -> Any:
        if value is not None and not callable(value):
            raise _wrong_type(name, accepts, value)
        return value

    return check


def clock() -> Check:
    """A callable returning monotonic seconds: called once here, so a wrong one fails now."""
    accepts = "a callable () -> float returning monotonic seconds"

    def check(name: str, value: Any) -> Any:
        if not callable(value):
            raise _wrong_type(name, accepts, value)
        try:
            now = value()
        except Exception as exc:
            raise _wrong_value(name, f"{accepts} (it raised {exc!r})", value) from None
        if not isinstance(now, int | float) or isinstance(now, bool) or not math.isfinite(now):
            raise _wrong_value(name, f"{accepts} (it returned {_shown(now)})", value)
        return value

    return check


def text(meaning: str, *, none: bool = False) -> Check:
    """A str without control characters (CR, LF, NUL...); with none=True, None too."""
    accepts = f"a str ({meaning})" + (" or None" if none else "")

    def check(name: str, value: Any) -> str | None:
        if value is None and none:
            return None
        if not isinstance(value, str):
            raise _wrong_type(name, accepts, value)
        if _FIELD_VALUE_BAD.search(value):
            raise _wrong_value(name, f"{accepts} without control characters", value)
        return value

    return check


def url() -> Check:
    """A str; whether it is a usable http(s) URL is the transfer's result (1 or 3), as libcurl."""
    accepts = "a str (an http or https URL)"

    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _wrong_type(name, accepts, value)
        return value

    return check


def method() -> Check:
    accepts = "a str, an HTTP method token such as GET or POST"

    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _wrong_type(name, accepts, value)
        if not _TOKEN.fullmatch(value):
            raise _wrong_value(name, accepts, value)
        return value

    return check


def header_pairs() -> Check:
    """An iterable of (name, value) str pairs; not a mapping (its iteration gives names only)."""
    accepts = "an iterable of (name, value) str pairs, e.g. [('Accept', '*/*')]"

    def check(name: str, value: Any) -> tuple[tuple[str, str], ...]:
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise _wrong_type(name, accepts, value)
        pairs = []
        for item in value:
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise _wrong_type(name, accepts, item)
            field, content = item
            if not (isinstance(field, str) and isinstance(content, str)):
                raise _wrong_type(name, accepts, item)
            if not _TOKEN.fullmatch(field):
                raise _wrong_value(name, "header names that are HTTP tokens", field)
            if (
                not content.isascii()
                or _FIELD_VALUE_BAD.search(content)
                or content != content.strip(" \t")
            ):
                raise _wrong_value(
                    name, "header values of ASCII, no controls, no outer blanks", content
                )
            pairs.append((field, content))
        return tuple(pairs)

    return check


def body() -> Check:
    accepts = "bytes (or bytearray, memoryview) or None; encode a str first"

    def check(name: str, value: Any) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, bytes | bytearray | memoryview):
            raise _wrong_type(name, accepts, value)
        return bytes(value)

    return check


def path_or_none(meaning: str) -> Check:
    accepts = f"a str or os.PathLike ({meaning}) or None"

    def check(name: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str | os.PathLike):
            raise _wrong_type(name, accepts, value)
        path = os.fspath(value)
        if not isinstance(path, str):
            raise _wrong_type(name, accepts, value)
        if not path or "\x00" in path:
            raise _wrong_value(name, accepts, value)
        return path

    return check


def accept_encoding() -> Check:
    """None: no Accept-Encoding; "" or True: every encoding we decode; False: None."""
    inner = text('"" for every encoding we decode, or a list such as "gzip"', none=True)

    def check(name: str, value: Any) -> str | None:
        if isinstance(value, bool):
            return "" if value else None
        checked: str | None = inner(name, value)
        return checked

    return check


def string_mapping_or_none(meaning: str) -> Check:
    accepts = f"a mapping of str to str ({meaning}) or None"

    def check(name: str, value: Any) -> dict[str, str] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise _wrong_type(name, accepts, value)
        items = dict(value)
        for key, item in items.items():
            if not (isinstance(key, str) and isinstance(item, str)):
                raise _wrong_type(name, accepts, (key, item))
        return items

    return check


def instance_or_none(kind: type, meaning: str) -> Check:
    accepts = f"a {kind.__name__} ({meaning}) or None"

    def check(name: str, value: Any) -> Any:
        if value is not None and not isinstance(value, kind):
            raise _wrong_type(name, accepts, value)
        return value

    return check


# -- the tables -------------------------------------------------------------------------

EASY_OPTIONS: dict[str, Check] = {
    "url": url(),
    "write_function": function_or_none("(data: bytes) -> int | None"),
    "header_function": function_or_none("(line: bytes) -> int | None"),
    "progress_function": function_or_none("(dltotal, dlnow, ultotal, ulnow) -> bool"),
    "debug_function": function_or_none("(kind: str, text: str) -> None"),
    "follow_location": flag(),
    "max_redirs": integer(-1, "-1: no limit"),
    "connect_timeout_ms": integer(0, "ms; 0: the default, 300 s", zero=DEFAULT_CONNECT_TIMEOUT_MS),
    "timeout_ms": integer(0, "milliseconds; 0: no timeout"),
    "low_speed_limit": integer(0, "bytes per second; 0: no check"),
    "low_speed_time": integer(0, "seconds; 0: no check"),
    "method": method(),
    "headers": header_pairs(),
    "body": body(),
    "verify": flag(),
    "ca_file": path_or_none("a PEM file of CA certificates"),
    "accept_encoding": accept_encoding(),
    "max_filesize": integer(0, "bytes; 0: no limit"),
    "fail_on_error": flag(),
    "proxy": text("http://host:port or host:port; '' for none", none=True),
    "noproxy": text("hosts, domains, CIDRs or * reached directly", none=True),
    "proxy_env": string_mapping_or_none("http_proxy, https_proxy, all_proxy, no_proxy"),
    "network_policy": instance_or_none(NetworkPolicy, "addresses allowed and denied"),
    "http_version": one_of(("2", "1.1", "2-prior-knowledge"), "curl's 2TLS, 1_1, PRIOR_KNOWLEDGE"),
    "private": anything(),
}

MULTI_OPTIONS: dict[str, Check] = {
    "socket_function": function_or_none("(easy, fd, what, socketp) -> None"),
    "timer_function": function_or_none("(timeout_ms: int) -> None"),
    "max_total_connections": integer(0, "0: no limit"),
    "max_host_connections": integer(0, "0: no limit"),
    "max_connects": integer_or_none(0, "idle connections kept; None: 4 per transfer"),
    "max_idle_age": seconds("how long an idle connection is kept"),
    "clock": clock(),
    "resolver_threads": integer(1, "threads for name resolution"),
    "getaddrinfo": function_or_none("shaped like socket.getaddrinfo, run on resolver threads"),
    "multiplex": flag(),
    "max_concurrent_streams": integer(1, "HTTP/2 streams per connection at most"),
}


def check_multi(name: str, value: Any) -> Any:
    """MULTI_OPTIONS' check, its errors raised as MultiError(BAD_FUNCTION_ARGUMENT) too."""
    try:
        return MULTI_OPTIONS[name](name, value)
    except TypeError as exc:
        raise MultiOptionTypeError(MCode.BAD_FUNCTION_ARGUMENT, str(exc)) from None
    except ValueError as exc:
        raise MultiOptionError(MCode.BAD_FUNCTION_ARGUMENT, str(exc)) from None
