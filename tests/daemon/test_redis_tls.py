"""--redis rediss://: the stream over TLS, against a real TLS-only redis-server.

The server's certificate comes from the tests' trustme CA; the daemon trusts
it through --redis-cacert (HIPERFIFO_REDIS_CACERT), not through --cacert,
which stays the CA bundle of the fetched servers. Without it the system CAs
are used, and a private CA's server is refused as unverified.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hf_support import WAIT, Daemon, Server, spawn
from redis_support import TLS_SKIP_REASON, NoTls, RedisServer, Tls, binary
from test_redis_daemons import add_urls, fetched, pending, results, wait_for_results


def tls_server(tmp_path: Path, ca: Any, ca_file: str, name: str) -> RedisServer:
    """A started redis-server listening on TLS only (rediss://), its certificate for `name`."""
    if binary() is None:
        pytest.skip(TLS_SKIP_REASON)
    issued = ca.issue_cert(name)
    files = tmp_path / "redis-tls"
    files.mkdir()
    tls = Tls(files / "cert.pem", files / "key.pem", Path(ca_file))
    issued.cert_chain_pems[0].write_to_path(str(tls.cert))
    issued.private_key_pem.write_to_path(str(tls.key))
    server = RedisServer(tmp_path / "redis", tls=tls)
    try:
        server.start()
    except NoTls:
        pytest.skip(TLS_SKIP_REASON)
    return server


@pytest.fixture
def tls_redis(tmp_path: Path, ca: Any, ca_file: str) -> Iterator[RedisServer]:
    """A TLS-only redis-server with a certificate for 127.0.0.1 from the tests' CA."""
    server = tls_server(tmp_path, ca, ca_file, "127.0.0.1")
    yield server
    server.kill()


def run(
    tmp_path: Path, server: RedisServer, *args: str, env: dict[str, str] | None = None
) -> Daemon:
    fifo, log = tmp_path / "in.fifo", tmp_path / "daemon.log"
    cli = ["--fifo", str(fifo), "--log-file", str(log), "--redis", server.url, *args]
    daemon = Daemon(spawn([*cli, "--redis-consumer", "tls"], env, tmp_path), fifo, log)
    daemon.wait_for("daemon.started")
    return daemon


@pytest.mark.parametrize("given", ["flag", "env"])
def test_urls_from_a_tls_redis_are_fetched_and_answered(
    tmp_path: Path, tls_redis: RedisServer, http_server: Server, ca_file: str, given: str
) -> None:
    """rediss:// with --redis-cacert (or HIPERFIFO_REDIS_CACERT): every entry fetched once,
    answered in the results stream and acked, all over TLS (the server has no plain port)."""
    if given == "flag":
        daemon = run(tmp_path, tls_redis, "--redis-cacert", ca_file)
    else:
        daemon = run(tmp_path, tls_redis, env={"HIPERFIFO_REDIS_CACERT": ca_file})
    try:
        assert daemon.events("daemon.started")[0]["redis"] == tls_redis.url
        paths = [f"/size/32?n={n}" for n in range(20)]
        ids = add_urls(tls_redis, [http_server.url(path) for path in paths])
        wait_for_results(tls_redis, len(ids))
        daemon.write(b"stop\n")
        assert daemon.wait() == 0, daemon.stderr()
    finally:
        daemon.reap()
    answered = results(tls_redis)
    assert sorted(r["entry"] for r in answered) == sorted(ids)
    assert {(r["result_name"], r["status"], r["bytes"]) for r in answered} == {("OK", "200", "32")}
    assert sorted(fetched(http_server).elements()) == sorted(paths)
    assert pending(tls_redis) == 0
    assert not daemon.events("redis.unavailable")


def test_a_tls_redis_whose_ca_is_not_trusted_is_unavailable(
    tmp_path: Path, tls_redis: RedisServer, http_server: Server, ca_file: str
) -> None:
    """Without --redis-cacert the system CAs judge the server, and --cacert (the fetched
    servers' CAs) does not count for Redis: redis.unavailable says the certificate failed,
    nothing is read, and `stop` still ends the daemon (results wait at most its bound)."""
    daemon = run(tmp_path, tls_redis, "--cacert", ca_file, "--shutdown-timeout", "1")
    try:
        add_urls(tls_redis, [http_server.url("/size/8")])
        (down,) = daemon.wait_for("redis.unavailable", timeout=WAIT)
        assert "CERTIFICATE_VERIFY_FAILED" in down["error"], down
        daemon.write(b"stop\n")
        assert daemon.wait() == 0, daemon.stderr()
    finally:
        daemon.reap()
    assert not daemon.events("transfer.added")
    assert fetched(http_server) == {}
    assert results(tls_redis) == []


def test_a_tls_redis_with_another_name_is_unavailable(
    tmp_path: Path, ca: Any, ca_file: str
) -> None:
    """The CA is trusted but the certificate names another host: refused (redis-py checks
    the name, as curl does), redis.unavailable says so."""
    server = tls_server(tmp_path, ca, ca_file, "other.test")
    try:
        daemon = run(tmp_path, server, "--redis-cacert", ca_file, "--shutdown-timeout", "1")
        try:
            (down,) = daemon.wait_for("redis.unavailable", timeout=WAIT)
            assert "not valid for '127.0.0.1'" in down["error"], down
            daemon.write(b"stop\n")
            assert daemon.wait() == 0, daemon.stderr()
        finally:
            daemon.reap()
    finally:
        server.kill()


def test_redis_cacert_that_cannot_be_loaded_stops_the_daemon(tmp_path: Path) -> None:
    """An unreadable --redis-cacert is a bad option: exit 2, named, before anything starts."""
    missing = tmp_path / "nope.pem"
    proc = spawn(
        ["--fifo", str(tmp_path / "f"), "--redis", "rediss://127.0.0.1:1/0"],
        env={"HIPERFIFO_REDIS_CACERT": str(missing)},
    )
    try:
        _out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:  # it ran: the variable was not read
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2
    said = err.decode().strip().splitlines()[-1]
    assert said.startswith("hiperfifo: error: HIPERFIFO_REDIS_CACERT: cannot load CA certificates")
    assert str(missing) in said
    assert not (tmp_path / "f").exists()
