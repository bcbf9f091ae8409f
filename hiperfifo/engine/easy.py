"""Easy: one transfer's options in, and what curl_easy_getinfo would answer out.

Holds no protocol logic: the multi runs it. Options are checked where they are
set, in the constructor and on every later assignment (options.py's table: a
wrong type is a TypeError, a wrong value a ValueError, naming the option).
Each option is a property over a slot `_o_<name>` whose getter is C
(operator.attrgetter), so the engine's reads stay cheap and the getinfo fields
stay plain slots. Whether a URL is usable is the transfer's result
(URL_MALFORMAT, UNSUPPORTED_PROTOCOL at info_read time), never an exception
here, so a daemon never dies of one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from hiperfifo.engine.codes import Code
from hiperfifo.engine.options import DEFAULT_CONNECT_TIMEOUT_MS, EASY_OPTIONS, Check
from hiperfifo.engine.policy import NetworkPolicy

WriteFunction = Callable[[bytes], "int | None"]
HeaderFunction = Callable[[bytes], "int | None"]
ProgressFunction = Callable[[int, int, int, int], Any]


class InfoType(StrEnum):
    """What a debug_function call carries, as libcurl's curl_infotype (strings, so that a
    log can print them as they are)."""

    STATE = "state"  # "CONNECTING -> SENDING": the transfer's state machine moved
    HEADER_OUT = "header_out"  # a request head as sent, CRLFs included (CURLINFO_HEADER_OUT)
    HEADER_IN = "header_in"  # a response head as received, 1xx ones too (CURLINFO_HEADER_IN)


DebugFunction = Callable[[InfoType, str], None]


_INFO_SLOTS = (
    "appconnect_time",
    "connect_time",
    "content_length",
    "effective_url",
    "error",
    "http_version_used",
    "local_port",
    "multi",
    "namelookup_time",
    "num_connects",
    "pretransfer_time",
    "primary_ip",
    "primary_port",
    "redirect_count",
    "redirect_time",
    "response_code",
    "result",
    "size_download",
    "starttransfer_time",
    "total_time",
)


class Easy:
    """One transfer: set options, add it to a Multi, read the results after DONE."""

    __slots__ = _INFO_SLOTS + tuple(f"_o_{name}" for name in EASY_OPTIONS)

    multi: Any  # the Multi this easy is in, if any (None)

    if TYPE_CHECKING:  # the options as the engine reads them (properties, made below)
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
        private: Any

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
        # The body is generated from EASY_OPTIONS below (_init_from_table), as dataclasses do:
        # each option stored as given when it is the default, else checked first.
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Easy {self.url!r} result={self.result.name} status={self.response_code}>"

    def reset_info(self) -> None:
        """Clear what getinfo answers, before a (new) run."""
        self.result = Code.OK
        self.error = ""
        self.response_code = 0
        self.http_version_used = ""  # "2", "1.1" (or "1.0"): what the last hop spoke
        self.effective_url = self.url
        self.redirect_count = 0
        self.size_download = 0
        self.content_length = -1
        self.primary_ip = ""
        self.primary_port = 0
        self.local_port = 0
        self.num_connects = 0
        self.namelookup_time = 0.0
        self.connect_time = 0.0
        self.appconnect_time = 0.0
        self.pretransfer_time = 0.0
        self.starttransfer_time = 0.0
        self.total_time = 0.0
        self.redirect_time = 0.0


def _option(name: str, check: Check) -> property:
    """A property over the slot _o_<name>: a C getter, a setter that checks."""
    slot = f"_o_{name}"
    store = getattr(Easy, slot).__set__

    def set_option(easy: Easy, value: Any) -> None:
        store(easy, check(name, value))

    return property(attrgetter(slot), set_option, doc=f"Option {name} (options.py).")


def _init_from_table(stub: Callable[..., None]) -> Callable[..., None]:
    """Easy.__init__ with the stub's signature: per option, one line of
    `self._o_NAME = NAME if NAME is DEFAULT else check("NAME", NAME)` (url always checked),
    then the getinfo fields. A default is valid by definition; anything else is checked."""
    signature = inspect.signature(stub)
    names = [name for name in signature.parameters if name != "self"]
    if names != list(EASY_OPTIONS):
        raise TypeError(f"Easy() takes {names}, EASY_OPTIONS has {list(EASY_OPTIONS)}")
    scope: dict[str, Any] = {}
    lines = []
    for name in names:
        default = signature.parameters[name].default
        scope[f"_check_{name}"] = EASY_OPTIONS[name]
        checked = f"_check_{name}({name!r}, {name})"
        if default is inspect.Parameter.empty:
            lines.append(f"    self._o_{name} = {checked}")
        else:
            scope[f"_default_{name}"] = default
            kept = f"{name} if {name} is _default_{name}"
            lines.append(f"    self._o_{name} = {kept} else {checked}")
    parameters = ", ".join(["self", names[0], "*", *(f"{n}=_default_{n}" for n in names[1:])])
    source = "\n".join(
        [f"def __init__({parameters}):", *lines, "    self.multi = None", "    self.reset_info()"]
    )
    exec(source, scope)  # our own text, built from the table above
    init: Callable[..., None] = scope["__init__"]
    init.__doc__ = stub.__doc__
    init.__qualname__ = stub.__qualname__
    init.__module__ = stub.__module__
    init.__annotations__ = stub.__annotations__
    init.__signature__ = signature  # type: ignore[attr-defined]
    return init


Easy.__init__ = _init_from_table(Easy.__init__)  # type: ignore[method-assign]
for _name, _check in EASY_OPTIONS.items():
    setattr(Easy, _name, _option(_name, _check))


def _http_version(easy: Easy) -> str:
    return easy.http_version_used or easy.http_version_wanted


# One name for curl's two calls: the option until a transfer
# used a version (CURLOPT_HTTP_VERSION), then that version (CURLINFO_HTTP_VERSION).
Easy.http_version_wanted = property(attrgetter("_o_http_version"))  # type: ignore[assignment]
Easy.http_version = property(  # type: ignore[assignment]
    _http_version,
    _option("http_version", EASY_OPTIONS["http_version"]).fset,
    doc="The option; after a transfer, what it used.",
)
