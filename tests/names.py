"""A name service for the tests, given to the engine through `Multi(getaddrinfo=...)`.

Names a test defines resolve to the addresses it lists (optionally after a
delay, spent on the resolver's thread, never on the loop); every other name
goes to the system's `socket.getaddrinfo`, as without it. Nothing in `socket`
is patched: the engine is handed this function like it is handed a clock.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class Names:
    """name -> addresses in getaddrinfo order; `asked` lists every host looked up."""

    def __init__(self) -> None:
        self._table: dict[str, tuple[list[str], float]] = {}
        self._lock = threading.Lock()
        self.asked: list[str] = []

    def __setitem__(self, name: str, addresses: list[str]) -> None:
        self.add(name, *addresses)

    def add(self, name: str, *addresses: str, delay: float = 0.0) -> None:
        """Make `name` resolve to `addresses`, the lookup taking `delay` seconds."""
        with self._lock:
            self._table[name] = (list(addresses), delay)

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        with self._lock:
            self.asked.append(host)
            entry = self._table.get(host) if isinstance(host, str) else None
        if entry is None:
            return socket.getaddrinfo(host, port, *args, **kwargs)
        addresses, delay = entry
        if delay:
            time.sleep(delay)  # a slow name server, on the resolver's thread
        results: list[Any] = []
        for address in addresses:
            results += socket.getaddrinfo(address, port, *args, **kwargs)
        return results
