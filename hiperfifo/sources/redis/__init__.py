"""A Redis stream as a second source of URLs: many daemons sharing one queue (--redis).

redis-py is imported only when --redis is given (the `redis` extra); load()
says what to install when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hiperfifo.sources.redis.source import RedisSource

INSTALL_HINT = "--redis needs redis-py: pip install 'hiperfifo[redis]' (redis and hiredis)"


class RedisMissing(Exception):
    """redis-py is not installed; the message says what to install."""


def load() -> type[RedisSource]:
    """The RedisSource class, importing redis-py; RedisMissing when it is not installed."""
    try:
        import redis  # noqa: F401 - only to find out whether it is there
    except ImportError:
        raise RedisMissing(INSTALL_HINT) from None
    from hiperfifo.sources.redis.source import RedisSource

    return RedisSource
