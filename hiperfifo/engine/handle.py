"""Handle: one Easy's options and getinfo answers as plain typed attributes.

The public Easy (easy.py) is a facade: it checks each option where it is set
(options.py) and stores it here, and its getinfo attributes read from here.
The engine reads the options and writes the results on the Handle directly
(`Transfer.handle`): compiled with mypyc it is a native class, so those are
struct fields, not Python attribute lookups through properties. Nothing here
checks anything: what the engine finds is what Easy's checks let through.
The engine names it `easy` where it used to take the Easy itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from hiperfifo.engine.codes import Code
from hiperfifo.engine.options import DEFAULT_CONNECT_TIMEOUT_MS, EASY_OPTIONS, Check
from hiperfifo.engine.policy import NetworkPolicy

if TYPE_CHECKING:
    from hiperfifo.engine.easy import InfoType

WriteFunction = Callable[[bytes], "int | None"]
HeaderFunction = Callable[[bytes], "int | None"]
ProgressFunction = Callable[[int, int, int, int], Any]
DebugFunction = Callable[["InfoType", str], None]

_OK: Final = Code.OK  # (an enum member read through its class costs a type lookup)
_CONNECT_TIMEOUT_MS: Final = DEFAULT_CONNECT_TIMEOUT_MS


class Handle:
    """An Easy's options (Easy's defaults until set) and what getinfo answers."""

    __slots__ = (
        "accept_encoding",
        "appconnect_time",
        "body",
        "ca_file",
        "connect_time",
        "connect_timeout_ms",
        "content_length",
        "debug_function",
        "effective_url",
        "error",
        "fail_on_error",
        "follow_location",
        "header_function",
        "headers",
        "http_version_used",
        "http_version_wanted",
        "local_port",
        "low_speed_limit",
        "low_speed_time",
        "max_filesize",
        "max_redirs",
        "method",
        "namelookup_time",
        "network_policy",
        "noproxy",
        "num_connects",
        "pretransfer_time",
        "primary_ip",
        "primary_port",
        "progress_function",
        "proxy",
        "proxy_env",
        "redirect_count",
        "redirect_time",
        "response_code",
        "result",
        "size_download",
        "starttransfer_time",
        "timeout_ms",
        "total_time",
        "url",
        "verify",
        "write_function",
    )

    def __init__(self, url: str) -> None:
        # The options: Easy's defaults (easy.py checks at import that they are the same).
        self.url = url
        self.write_function: WriteFunction | None = None
        self.header_function: HeaderFunction | None = None
        self.progress_function: ProgressFunction | None = None
        self.debug_function: DebugFunction | None = None
        self.follow_location = False
        self.max_redirs = 30
        self.connect_timeout_ms = _CONNECT_TIMEOUT_MS
        self.timeout_ms = 0
        self.low_speed_limit = 0
        self.low_speed_time = 0
        self.method = "GET"
        self.headers: tuple[tuple[str, str], ...] = ()
        self.body: bytes | None = None
        self.verify = True
        self.ca_file: str | None = None
        self.accept_encoding: str | None = None  # None: no Accept-Encoding; "": all we decode
        self.max_filesize = 0
        self.fail_on_error = False
        self.proxy: str | None = None
        self.noproxy: str | None = None
        self.proxy_env: Mapping[str, str] | None = None
        self.network_policy: NetworkPolicy | None = None
        self.http_version_wanted = "2"  # the option http_version (CURLOPT_HTTP_VERSION)
        # What getinfo answers: one list of fields and their cleared values, reset_info's.
        self.reset_info()

    def reset_info(self) -> None:
        """Clear what getinfo answers, before a (new) run."""
        self.result = _OK
        self.error = ""
        self.response_code = 0
        self.http_version_used = ""
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


# The getinfo fields, as Easy shows them (read-only there; the engine writes them here).
INFO_FIELDS = (
    "appconnect_time",
    "connect_time",
    "content_length",
    "effective_url",
    "error",
    "http_version_used",
    "local_port",
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


# Where each option is kept: the Handle's attribute of the same name but for http_version.
# (private is the Easy's own slot: the engine never reads it.)
OPTION_ATTRIBUTES: Final = {name: name for name in EASY_OPTIONS if name != "private"} | {
    "http_version": "http_version_wanted"
}
# Each option's check (options.py's table) and attribute, for Easy(): one lookup per option.
_STORE: Final = {
    name: (EASY_OPTIONS[name], attribute) for name, attribute in OPTION_ATTRIBUTES.items()
}


def set_options(handle: Handle, options: dict[str, Any]) -> None:
    """Check and store the options Easy() was given by keyword, in the order given."""
    store = _STORE
    for name, value in options.items():
        found: tuple[Check, str] | None = store.get(name)
        if found is None:
            raise TypeError(f"Easy.__init__() got an unexpected keyword argument {name!r}")
        check, attribute = found
        setattr(handle, attribute, check(name, value))
