"""Fixtures for the daemon tests: a local HTTP server, a dead port, the running daemon."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hf_support import Daemon, Server, spawn
from redis_support import SKIP_REASON, RedisServer, binary


@pytest.fixture
def http_server(serve: Callable[[Server], Server]) -> Server:
    """hf_support's keep-alive HTTP/1.1 server on 127.0.0.1, port 0 (routes in its docstring)."""
    return serve(Server())


@pytest.fixture
def dead_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start the daemon on tmp_path/in.fifo (extra CLI args, env); wait for daemon.started."""
    started: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Daemon:
        fifo = tmp_path / "in.fifo"
        log = tmp_path / f"daemon{len(started)}.log"
        cli = ["--fifo", str(fifo), "--log-file", str(log), *args]
        daemon = Daemon(spawn(cli, env, tmp_path), fifo, log)
        started.append(daemon)
        if wait:
            daemon.wait_for("daemon.started")
        return daemon

    yield start
    for daemon in started:
        daemon.reap()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server (appendonly, fsync always) on an ephemeral port, in tmp_path."""
    if binary() is None:
        pytest.skip(SKIP_REASON)
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()
