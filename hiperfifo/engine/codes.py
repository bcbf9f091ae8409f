"""libcurl's numbers, so that `(28)` in a log means what it means to every curl user.

Owns the constants of the multi-socket API, the two result enums and
`MultiError`. Nothing here does I/O or knows about transfers.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

E = TypeVar("E", bound=BaseException)

CSELECT_IN = 1
CSELECT_OUT = 2
CSELECT_ERR = 4

SOCKET_TIMEOUT = -1

POLL_NONE = 0
POLL_IN = 1
POLL_OUT = 2
POLL_INOUT = 3
POLL_REMOVE = 4


class MCode(IntEnum):
    """Multi-level codes: libcurl's CURLMcode numbers."""

    CALL_MULTI_PERFORM = -1
    OK = 0
    BAD_HANDLE = 1
    BAD_EASY_HANDLE = 2
    OUT_OF_MEMORY = 3
    INTERNAL_ERROR = 4
    BAD_SOCKET = 5
    UNKNOWN_OPTION = 6
    ADDED_ALREADY = 7
    RECURSIVE_API_CALL = 8
    WAKEUP_FAILURE = 9
    BAD_FUNCTION_ARGUMENT = 10
    ABORTED_BY_CALLBACK = 11
    UNRECOVERABLE_POLL = 12


class Code(IntEnum):
    """Per-transfer results: libcurl's CURLcode numbers."""

    OK = 0
    UNSUPPORTED_PROTOCOL = 1
    FAILED_INIT = 2
    URL_MALFORMAT = 3
    COULDNT_RESOLVE_PROXY = 5
    COULDNT_RESOLVE_HOST = 6
    COULDNT_CONNECT = 7
    WEIRD_SERVER_REPLY = 8
    HTTP2 = 16
    HTTP_RETURNED_ERROR = 22
    PARTIAL_FILE = 18
    WRITE_ERROR = 23
    OUT_OF_MEMORY = 27
    OPERATION_TIMEDOUT = 28
    RANGE_ERROR = 33
    SSL_CONNECT_ERROR = 35
    ABORTED_BY_CALLBACK = 42
    BAD_FUNCTION_ARGUMENT = 43
    TOO_MANY_REDIRECTS = 47
    GOT_NOTHING = 52
    SEND_ERROR = 55
    RECV_ERROR = 56
    PEER_FAILED_VERIFICATION = 60
    BAD_CONTENT_ENCODING = 61
    FILESIZE_EXCEEDED = 63
    SSL_CACERT_BADFILE = 77
    HTTP2_STREAM = 92
    TOO_LARGE = 100


_MCODE_TEXT = {
    MCode.CALL_MULTI_PERFORM: "Please call curl_multi_perform() soon",
    MCode.OK: "No error",
    MCode.BAD_HANDLE: "Invalid multi handle",
    MCode.BAD_EASY_HANDLE: "Invalid easy handle",
    MCode.OUT_OF_MEMORY: "Out of memory",
    MCode.INTERNAL_ERROR: "Internal error",
    MCode.BAD_SOCKET: "Invalid socket argument",
    MCode.UNKNOWN_OPTION: "Unknown option",
    MCode.ADDED_ALREADY: "The easy handle is already added to a multi handle",
    MCode.RECURSIVE_API_CALL: "API function called from within callback",
    MCode.WAKEUP_FAILURE: "Wakeup is unavailable or failed",
    MCode.BAD_FUNCTION_ARGUMENT: "A libcurl function was given a bad argument",
    MCode.ABORTED_BY_CALLBACK: "Operation was aborted by an application callback",
    MCode.UNRECOVERABLE_POLL: "Unrecoverable error in select/poll",
}

_CODE_TEXT = {
    Code.OK: "No error",
    Code.UNSUPPORTED_PROTOCOL: "Unsupported protocol",
    Code.FAILED_INIT: "Failed initialization",
    Code.URL_MALFORMAT: "URL using bad/illegal format or missing URL",
    Code.COULDNT_RESOLVE_PROXY: "Could not resolve proxy name",
    Code.COULDNT_RESOLVE_HOST: "Could not resolve hostname",
    Code.COULDNT_CONNECT: "Could not connect to server",
    Code.WEIRD_SERVER_REPLY: "Weird server reply",
    Code.HTTP2: "Error in the HTTP2 framing layer",
    Code.HTTP_RETURNED_ERROR: "HTTP response code said error",
    Code.PARTIAL_FILE: "Transferred a partial file",
    Code.WRITE_ERROR: "Failed writing received data to disk/application",
    Code.OUT_OF_MEMORY: "Out of memory",
    Code.OPERATION_TIMEDOUT: "Timeout was reached",
    Code.RANGE_ERROR: "Requested range was not delivered by the server",
    Code.SSL_CONNECT_ERROR: "SSL connect error",
    Code.ABORTED_BY_CALLBACK: "Operation was aborted by an application callback",
    Code.BAD_FUNCTION_ARGUMENT: "A libcurl function was given a bad argument",
    Code.TOO_MANY_REDIRECTS: "Number of redirects hit maximum amount",
    Code.GOT_NOTHING: "Server returned nothing (no headers, no data)",
    Code.SEND_ERROR: "Failed sending data to the peer",
    Code.RECV_ERROR: "Failure when receiving data from the peer",
    Code.PEER_FAILED_VERIFICATION: "SSL peer certificate or SSH remote key was not OK",
    Code.BAD_CONTENT_ENCODING: "Unrecognized or bad HTTP Content or Transfer-Encoding",
    Code.FILESIZE_EXCEEDED: "Maximum file size exceeded",
    Code.SSL_CACERT_BADFILE: "Problem with the SSL CA cert (path? access rights?)",
    Code.HTTP2_STREAM: "Stream error in the HTTP/2 framing layer",
    Code.TOO_LARGE: "A value or data field grew larger than allowed",
}


def strerror(code: MCode | Code) -> str:
    """A short human text, like curl_multi_strerror / curl_easy_strerror."""
    if isinstance(code, MCode):
        return _MCODE_TEXT.get(code, "Unknown error")
    return _CODE_TEXT.get(code, "Unknown error")


class MultiError(Exception):
    """Misuse of the Multi API, or a dead multi: `.code` holds libcurl's CURLMcode."""

    def __init__(self, code: MCode, detail: str = "") -> None:
        self.code = code
        text = strerror(code)
        super().__init__(f"{text} ({code.name}, {int(code)})" + (f": {detail}" if detail else ""))


class TransferError(Exception):
    """A transfer's failure inside the engine: carries the Code and the error text.

    Raised and caught only inside the engine; the application sees the Code
    in its DONE message and the text in `easy.error`.
    """

    def __init__(self, code: Code, text: str) -> None:
        self.code = code
        self.text = text
        super().__init__(text)


def caused(error: E, cause: BaseException | None) -> E:
    """`error` with `cause` as its __cause__: `raise caused(X, exc)` is `raise X from exc`.

    The compiled engine modules use it: mypyc drops the `from` of a raise statement
    (build-support/mypyc.txt); setting __cause__ also suppresses the context, as `from` does.
    """
    error.__cause__ = cause
    return error
