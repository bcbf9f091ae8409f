"""Easy: one transfer's options in, and what curl_easy_getinfo would answer out.

Holds no protocol logic: the multi runs it. Options are checked where they are
set, in the constructor and on every later assignment (options.py's table: a
wrong type is a TypeError, a wrong value a ValueError, naming the option).
The Easy is a facade over a Handle (handle.py: native when compiled), which
holds the options as checked and the getinfo answers as plain attributes:
the engine reads and writes the Handle, an application the Easy. Each option
is a property whose getter is C (operator.attrgetter of `info.<name>`) and
whose setter checks; each getinfo field a read-only property of the same
kind. Whether a URL is usable is the transfer's result (URL_MALFORMAT,
UNSUPPORTED_PROTOCOL at info_read time), never an exception here, so a
daemon never dies of one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from hiperfifo.engine.codes import Code
from hiperfifo.engine.handle import (
    INFO_FIELDS,
    OPTION_ATTRIBUTES,
    DebugFunction,
    Handle,
    HeaderFunction,
    ProgressFunction,
    WriteFunction,
    set_options,
)
from hiperfifo.engine.options import DEFAULT_CONNECT_TIMEOUT_MS, EASY_OPTIONS, Check
from hiperfifo.engine.policy import NetworkPolicy

__all__ = [
    "DebugFunction",
    "Easy",
    "HeaderFunction",
    "InfoType",
    "ProgressFunction",
    "WriteFunction",
]


class InfoType(StrEnum):
    """What a debug_function call carries, as libcurl's curl_infotype (strings, so that a
    log can print them as they are)."""

    STATE = "state"  # "CONNECTING -> SENDING": the transfer's state machine moved
    HEADER_OUT = "header_out"  # a request head as sent, CRLFs included (CURLINFO_HEADER_OUT)
    HEADER_IN = "header_in"  # a response head as received, 1xx ones too (CURLINFO_HEADER_IN)


class Easy:
    """One transfer: set options, add it to a Multi, read the results after DONE."""

    __slots__ = ("info", "multi", "private")

    # What getinfo answers, as plain attributes (and the options as checked): the Handle the
    # engine writes. Read it, never write it. A read there is one attribute, where the
    # Easy's own getinfo properties below are a call each.
    info: Handle
    multi: Any  # the Multi this easy is in, if any (None)
    private: Any  # CURLOPT_PRIVATE: the application's own, never checked nor read here

    if TYPE_CHECKING:  # the options (properties, made below)
        url: str
        write_function: WriteFunction | None
        header_function: HeaderFunction | None
        progress_function: ProgressFunction | None
        debug_function: DebugFunction | None
        follow_location: bool
        max_redirs: int
        connect_timeout_ms: int
        timeout_ms: int
        low_speed_limit: int
        low_speed_time: int
        method: str
        headers: tuple[tuple[str, str], ...]
        body: bytes | None
        verify: bool
        ca_file: str | None
        accept_encoding: str | None  # None: no Accept-Encoding; "" (or True): all we decode
        max_filesize: int
        fail_on_error: bool
        proxy: str | None  # "http://host:port"; None or "": direct (unless proxy_env)
        noproxy: str | None  # curl's no_proxy list
        # With proxy=None: http_proxy/https_proxy/all_proxy/no_proxy as libcurl reads them
        # from the environment, chosen again for every redirect hop; the caller passes it.
        proxy_env: Mapping[str, str] | None
        network_policy: NetworkPolicy | None  # checked on every address before connecting
        # CURLOPT_HTTP_VERSION as set; reading it after a transfer gives what the transfer
        # used (CURLINFO_HTTP_VERSION: "2" or "1.1"), see http_version_used.
        http_version: str
        http_version_wanted: str  # the option as set, whatever a transfer used
        # What getinfo answers (read-only properties, made below; see Handle).
        result: Code
        error: str
        response_code: int
        http_version_used: str
        effective_url: str
        redirect_count: int
        size_download: int
        content_length: int
        primary_ip: str
        primary_port: int
        local_port: int
        num_connects: int
        namelookup_time: float
        connect_time: float
        appconnect_time: float
        pretransfer_time: float
        starttransfer_time: float
        total_time: float
        redirect_time: float

    def __init__(
        self,
        url: str,
        *,
        write_function: WriteFunction | None = None,
        header_function: HeaderFunction | None = None,
        progress_function: ProgressFunction | None = None,
        debug_function: DebugFunction | None = None,
        follow_location: bool = False,
        max_redirs: int = 30,
        connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS,
        timeout_ms: int = 0,
        low_speed_limit: int = 0,
        low_speed_time: int = 0,
        method: str = "GET",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        verify: bool = True,
        ca_file: str | None = None,
        accept_encoding: str | None = None,
        max_filesize: int = 0,
        fail_on_error: bool = False,
        proxy: str | None = None,
        noproxy: str | None = None,
        proxy_env: Mapping[str, str] | None = None,
        network_policy: NetworkPolicy | None = None,
        http_version: str = "2",
        private: Any = None,
    ) -> None:
        # The signature, for the type checker and inspect; _init_from_table puts in the body.
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Easy {self.url!r} result={self.result.name} status={self.response_code}>"

    def reset_info(self) -> None:
        """Clear what getinfo answers, before a (new) run (add_handle does it)."""
        self.info.reset_info()


def _option(name: str, check: Check) -> property:
    """A property over the Handle's attribute: a C getter, a setter that checks."""
    attribute = OPTION_ATTRIBUTES[name]

    def set_option(easy: Easy, value: Any) -> None:
        setattr(easy.info, attribute, check(name, value))

    getter = attrgetter(f"info.{attribute}")
    return property(getter, set_option, doc=f"Option {name} (options.py).")


def _init_from_table(stub: Callable[..., None]) -> Callable[..., None]:
    """Easy.__init__ with the stub's signature (for inspect; the type checker reads the
    stub): a Handle, which starts with every default, then the options given by keyword,
    each checked (handle.set_options). Checked here, at import: the stub's options are
    EASY_OPTIONS', in order, and its defaults are the Handle's."""
    signature = inspect.signature(stub)
    names = [name for name in signature.parameters if name != "self"]
    if names != list(EASY_OPTIONS):
        raise TypeError(f"Easy() takes {names}, EASY_OPTIONS has {list(EASY_OPTIONS)}")
    fresh = Handle("")
    for name in names[1:-1]:  # (private, the last, is a slot of the Easy)
        default = signature.parameters[name].default
        if getattr(fresh, OPTION_ATTRIBUTES[name]) != default:
            raise TypeError(f"Easy(): {name}={default!r} is not the Handle's default")
    check_url = EASY_OPTIONS["url"]

    def __init__(self: Easy, url: str, **options: Any) -> None:
        self.info = handle = Handle(url) if type(url) is str else Handle(check_url("url", url))
        self.multi = None
        self.private = options.pop("private", None) if options else None
        if options:
            set_options(handle, options)

    __init__.__doc__ = stub.__doc__
    __init__.__qualname__ = stub.__qualname__
    __init__.__module__ = stub.__module__
    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return __init__


Easy.__init__ = _init_from_table(Easy.__init__)  # type: ignore[method-assign]
for _name, _check in EASY_OPTIONS.items():
    if _name != "private":
        setattr(Easy, _name, _option(_name, _check))
for _name in INFO_FIELDS:
    setattr(Easy, _name, property(attrgetter(f"info.{_name}"), doc=f"getinfo {_name}."))


def _http_version(easy: Easy) -> str:
    handle = easy.info
    return handle.http_version_used or handle.http_version_wanted


# One name for curl's two calls: the option until a transfer
# used a version (CURLOPT_HTTP_VERSION), then that version (CURLINFO_HTTP_VERSION).
Easy.http_version_wanted = property(attrgetter("info.http_version_wanted"))  # type: ignore[assignment]
Easy.http_version = property(  # type: ignore[assignment]
    _http_version,
    _option("http_version", EASY_OPTIONS["http_version"]).fset,
    doc="The option; after a transfer, what it used.",
)
