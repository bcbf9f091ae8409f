"""Easy: one transfer's options in, and what curl_easy_getinfo would answer out.

Holds no protocol logic: the multi runs it. Options are plain attributes,
validated when the transfer starts (a bad URL fails at info_read time with
URL_MALFORMAT, never as an exception here, so a daemon never dies of one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any

from hiperfifo.engine.codes import Code
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
DEFAULT_CONNECT_TIMEOUT_MS = 300_000  # libcurl's DEFAULT_CONNECT_TIMEOUT; what 0 means


class Easy:
    """One transfer: set options, add it to a Multi, read the results after DONE."""

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
        "http_version",
        "local_port",
        "low_speed_limit",
        "low_speed_time",
        "max_filesize",
        "max_redirs",
        "method",
        "multi",
        "namelookup_time",
        "network_policy",
        "noproxy",
        "num_connects",
        "pretransfer_time",
        "primary_ip",
        "primary_port",
        "private",
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
        private: Any = None,
    ) -> None:
        self.url = url
        self.write_function = write_function
        self.header_function = header_function
        self.progress_function = progress_function
        self.debug_function = debug_function
        self.follow_location = follow_location
        self.max_redirs = max_redirs
        self.connect_timeout_ms = connect_timeout_ms or DEFAULT_CONNECT_TIMEOUT_MS  # 0: default
        self.timeout_ms = timeout_ms
        self.low_speed_limit = low_speed_limit
        self.low_speed_time = low_speed_time
        self.method = method
        self.headers = tuple(headers)
        self.body = body
        self.verify = verify
        self.ca_file = ca_file
        self.accept_encoding = accept_encoding  # None: no Accept-Encoding; "": all we decode
        self.max_filesize = max_filesize
        self.fail_on_error = fail_on_error
        self.proxy = proxy  # "http://host:port"; None or "": direct
        self.noproxy = noproxy  # curl's no_proxy list
        # With proxy=None: http_proxy/https_proxy/all_proxy/no_proxy as libcurl reads them from
        # the environment, chosen again for every redirect hop; the caller passes the mapping.
        self.proxy_env = proxy_env
        self.network_policy = network_policy  # checked on every address before connecting
        self.private = private
        self.multi: Any = None  # the Multi this easy is in, if any
        self.reset_info()

    def __repr__(self) -> str:
        return f"<Easy {self.url!r} result={self.result.name} status={self.response_code}>"

    def reset_info(self) -> None:
        """Clear what getinfo answers, before a (new) run."""
        self.result = Code.OK
        self.error = ""
        self.response_code = 0
        self.http_version = ""
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
