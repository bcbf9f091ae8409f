"""The multi engine: libcurl's multi-socket interface on h11 (the contract: docs/engine.md).

Imports only the stdlib and h11; it never blocks and never imports an event library.
"""

from hiperfifo.engine.codes import (
    CSELECT_ERR,
    CSELECT_IN,
    CSELECT_OUT,
    POLL_IN,
    POLL_INOUT,
    POLL_NONE,
    POLL_OUT,
    POLL_REMOVE,
    SOCKET_TIMEOUT,
    Code,
    MCode,
    MultiError,
    strerror,
)
from hiperfifo.engine.easy import Easy, InfoType
from hiperfifo.engine.multi import Message, Multi
from hiperfifo.engine.policy import NetworkPolicy

__all__ = [
    "CSELECT_ERR",
    "CSELECT_IN",
    "CSELECT_OUT",
    "POLL_IN",
    "POLL_INOUT",
    "POLL_NONE",
    "POLL_OUT",
    "POLL_REMOVE",
    "SOCKET_TIMEOUT",
    "Code",
    "Easy",
    "InfoType",
    "MCode",
    "Message",
    "Multi",
    "MultiError",
    "NetworkPolicy",
    "strerror",
]
