"""Several real daemons sharing one Redis stream (--redis), against a real redis-server.

Each URL fetched once while every daemon lives; a daemon killed mid-run loses
nothing (the others take over what it had read and not acked, and only that is
fetched twice); a slow transfer on a live daemon is never taken from it; Redis
killed and restarted loses nothing; bad entries are answered REJECTED; `stop`
leaves the entries a daemon never read to the others.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from hf_support import WAIT, Daemon, Server, spawn
from redis_support import RedisServer
from test_docs import ALWAYS, documented_events, named

STREAM = "hiperfifo:urls"
RESULTS = "hiperfifo:results"
GROUP = "hiperfifo"

StartDaemon = Callable[..., Daemon]


@pytest.fixture
def start(tmp_path: Path, redis_server: RedisServer) -> Iterator[StartDaemon]:
    """Start a daemon named `name` on its own FIFO, consuming the test server's stream."""
    started: list[Daemon] = []

    def run(
        name: str, *args: str, claim_idle: float = 60, env: dict[str, str] | None = None
    ) -> Daemon:
        fifo = tmp_path / f"{name}.fifo"
        log = tmp_path / f"{name}.log"
        cli = ["--fifo", str(fifo), "--log-file", str(log), "--redis", redis_server.url]
        cli += ["--redis-consumer", name, "--redis-claim-idle", str(claim_idle), *args]
        daemon = Daemon(spawn(cli, env, tmp_path), fifo, log)
        started.append(daemon)
        daemon.wait_for("daemon.started")
        return daemon

    yield run
    for daemon in started:
        daemon.reap()


def add(server: RedisServer, entries: list[dict[str, str]]) -> list[str]:
    with server.client() as r:
        pipe = r.pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
        return [eid.decode() for eid in pipe.execute()]


def add_urls(server: RedisServer, urls: list[str]) -> list[str]:
    return add(server, [{"url": url} for url in urls])


def results(server: RedisServer) -> list[dict[str, str]]:
    with server.client() as r:
        return [
            {k.decode(): v.decode() for k, v in fields.items()} for _, fields in r.xrange(RESULTS)
        ]


def wait_for_results(server: RedisServer, count: int, timeout: float = WAIT * 3) -> None:
    """Until `count` distinct entries are answered in the results stream."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answered = {r["entry"] for r in results(server)}
        except redis.ConnectionError:
            answered = set()
        if len(answered) >= count:
            return
        assert time.monotonic() < deadline, f"{len(answered)}/{count} entries answered"
        time.sleep(0.05)


def pending(server: RedisServer) -> int:
    with server.client() as r:
        return int(r.xpending(STREAM, GROUP)["pending"])


def stop_all(*daemons: Daemon) -> None:
    for daemon in daemons:
        daemon.write(b"stop\n")
    for daemon in daemons:
        assert daemon.wait() == 0, daemon.stderr()


def assert_documented(*daemons: Daemon) -> None:
    """Every line these daemons logged is an event of docs/daemon.md with its keys named."""
    rows = documented_events()
    for daemon in daemons:
        for event in daemon.events():
            assert event["event"] in rows, f"{event['event']} is not in docs/daemon.md"
            missing = set(event) - ALWAYS - named(rows[event["event"]])
            assert not missing, f"{event['event']}: {missing} not in its row"


def fetched(http_server: Server) -> Counter[str]:
    return Counter(http_server.paths())


def test_three_daemons_share_3000_urls_each_fetched_once(
    redis_server: RedisServer, http_server: Server, start: StartDaemon
) -> None:
    """3,000 entries, three daemons: every URL fetched exactly once, each daemon did a share,
    every entry answered in the results stream and acked; transfer lines carry `entry`."""
    daemons = [start(name, "--max-total-connections", "8") for name in ("d1", "d2", "d3")]
    urls = [http_server.url(f"/size/64?n={n}") for n in range(3000)]
    ids = add_urls(redis_server, urls)
    wait_for_results(redis_server, 3000)
    stop_all(*daemons)
    assert max(fetched(http_server).values()) == 1
    assert len(fetched(http_server)) == 3000
    answered = results(redis_server)
    assert sorted(r["entry"] for r in answered) == sorted(ids)
    assert {r["result_name"] for r in answered} == {"OK"}
    assert {r["status"] for r in answered} == {"200"}
    assert {r["bytes"] for r in answered} == {"64"}
    shares = Counter(r["consumer"] for r in answered)
    assert set(shares) == {"d1", "d2", "d3"}
    assert min(shares.values()) >= 150, shares  # each did a share (5 %), none hoarded all
    assert pending(redis_server) == 0
    for daemon in daemons:
        done = daemon.events("transfer.done")
        added = daemon.events("transfer.added")
        assert len(done) == shares[daemon.log.stem]
        assert {e["entry"] for e in done} == {e["entry"] for e in added}
        stopped = daemon.events("redis.stopped")[0]
        assert stopped["acked"] == len(done)
        assert stopped["round_trips"] < len(done)  # batches, not one exchange per URL
    assert_documented(*daemons)


def test_a_daemon_killed_mid_run_loses_nothing(
    redis_server: RedisServer, http_server: Server, start: StartDaemon
) -> None:
    """SIGKILL one of three: the others finish every entry; only what the dead one had
    read and not acked is fetched twice."""
    args = ("--max-total-connections", "4")
    daemons = [start(name, *args, claim_idle=1.0) for name in ("d1", "d2", "d3")]
    victim, others = daemons[0], daemons[1:]
    urls = [http_server.url(f"/slow/0.02?n={n}") for n in range(600)]
    add_urls(redis_server, urls)
    victim.wait_for("transfer.done", count=20)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(WAIT)
    wait_for_results(redis_server, 600)
    stop_all(*others)
    assert pending(redis_server) == 0
    answered = results(redis_server)
    assert len({r["entry"] for r in answered}) == 600
    read_by_victim = {e["url"] for e in victim.events("transfer.added")}
    acked_by_victim = {r["url"] for r in answered if r["consumer"] == "d1"}
    assert read_by_victim - acked_by_victim  # it died holding entries: the case under test
    repeated = {path for path, n in fetched(http_server).items() if n > 1}
    assert {http_server.url(path) for path in repeated} <= read_by_victim - acked_by_victim
    assert sum(len(d.events("redis.claimed")) for d in others) >= 1
    taken_over = {e["url"] for d in others for e in d.events("transfer.added")}
    assert read_by_victim - acked_by_victim <= taken_over  # the unacked ones were redone
    assert_documented(*others)


def test_a_slow_transfer_on_a_live_daemon_is_not_taken_from_it(
    redis_server: RedisServer, http_server: Server, start: StartDaemon
) -> None:
    """A transfer lasting 5 idle times: its entry stays with its daemon, fetched once."""
    owner = start("owner", claim_idle=0.5)
    [entry] = add_urls(redis_server, [http_server.url("/slow/2.5")])
    owner.wait_for("transfer.added")
    other = start("other", claim_idle=0.5)
    owner.wait_for("transfer.done", timeout=WAIT)
    wait_for_results(redis_server, 1)
    stop_all(owner, other)
    assert fetched(http_server)["/slow/2.5"] == 1
    assert other.events("transfer.added") == []
    assert [(r["entry"], r["consumer"]) for r in results(redis_server)] == [(entry, "owner")]


def test_redis_killed_and_restarted_mid_run_loses_nothing(
    redis_server: RedisServer, http_server: Server, start: StartDaemon
) -> None:
    """Redis SIGKILLed while transfers run (appendonly): one redis.unavailable per daemon,
    transfers go on, results wait; restarted: redis.available, every entry answered."""
    daemons = [start(name, "--max-total-connections", "4") for name in ("d1", "d2")]
    add_urls(redis_server, [http_server.url(f"/slow/0.05?n={n}") for n in range(300)])
    wait_for_results(redis_server, 30)
    redis_server.kill()
    for daemon in daemons:
        daemon.wait_for("redis.unavailable")
    done_before = sum(len(d.events("transfer.done")) for d in daemons)
    deadline = time.monotonic() + WAIT
    while sum(len(d.events("transfer.done")) for d in daemons) < done_before + 10:
        assert time.monotonic() < deadline, "transfers stopped while Redis was down"
        time.sleep(0.05)
    redis_server.start()
    for daemon in daemons:
        daemon.wait_for("redis.available")
    wait_for_results(redis_server, 300)
    stop_all(*daemons)
    assert pending(redis_server) == 0
    for daemon in daemons:
        assert len(daemon.events("redis.unavailable")) == 1
        assert len(daemon.events("redis.available")) == 1
    assert max(fetched(http_server).values()) == 1
    assert_documented(*daemons)


def test_bad_entries_are_rejected_answered_and_acked(
    redis_server: RedisServer, http_server: Server, start: StartDaemon
) -> None:
    """No url field, another scheme, not a URL, `stop`, a space inside: input.rejected and
    a REJECTED result (-1), acked; a good entry next to them is fetched."""
    daemon = start("d1")
    bad = [
        {"link": http_server.url("/size/1")},
        {"url": "ftp://example.org/file"},
        {"url": "not a url"},
        {"url": "stop"},
        {"url": http_server.url("/a b")},
    ]
    ids = add(redis_server, [*bad, {"url": http_server.url("/size/8")}])
    wait_for_results(redis_server, 6)
    assert daemon.events("daemon.stopping") == []  # `stop` in a stream entry stops nothing
    stop_all(daemon)
    rejected = daemon.events("input.rejected")
    assert [e["entry"] for e in rejected] == ids[:5]
    by_entry = {r["entry"]: r for r in results(redis_server)}
    for entry in ids[:5]:
        assert by_entry[entry]["result"] == "-1"
        assert by_entry[entry]["result_name"] == "REJECTED"
        assert by_entry[entry]["error"]
    assert by_entry[ids[5]]["result_name"] == "OK"
    assert pending(redis_server) == 0
    assert_documented(daemon)


def test_stop_leaves_unread_entries_to_the_others(
    redis_server: RedisServer, http_server: Server, start: StartDaemon
) -> None:
    """`stop`: the daemon finishes what it read and exits 0; entries it never read go to the
    next daemon at once (not after the claim idle time)."""
    first = start("first", "--max-total-connections", "1")  # holds 16 entries at most
    ids = add_urls(redis_server, [http_server.url(f"/slow/0.05?n={n}") for n in range(100)])
    first.wait_for("transfer.done", count=3)
    stop_all(first)
    done_first = {e["entry"] for e in first.events("transfer.done")}
    assert 3 <= len(done_first) < 100
    # what it read it answered, but for entries a last read brought after `stop`: given back
    assert pending(redis_server) == first.events("redis.stopped")[0]["released"]
    second = start("second", claim_idle=60)
    wait_for_results(redis_server, 100, timeout=WAIT)  # far less than 60 s
    stop_all(second)
    done_second = {e["entry"] for e in second.events("transfer.done")}
    assert done_first | done_second == set(ids)
    assert not done_first & done_second


def test_status_for_systemd_includes_the_stream_counts(
    redis_server: RedisServer, http_server: Server, start: StartDaemon, tmp_path: Path
) -> None:
    """STATUS= (sd_notify) says what this consumer read, claimed, acked and holds."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(WAIT)
        daemon = start("d1", env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        add_urls(redis_server, [http_server.url(f"/size/8?n={n}") for n in range(3)])
        wait_for_results(redis_server, 3)
        deadline = time.monotonic() + WAIT
        status = ""
        while "3 acked" not in status:
            assert time.monotonic() < deadline, status
            message = notify.recv(4096).decode()
            status = dict(line.split("=", 1) for line in message.splitlines()).get("STATUS", "")
        stop_all(daemon)
    assert "3 done" in status
    assert "stream 3 read, 0 claimed, 3 acked, 0 held" in status


def test_without_redis_py_the_daemon_says_what_to_install(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """--redis where redis-py cannot be imported: exit 2 and one line naming the extra."""
    shadow = tmp_path / "shadow" / "redis"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named redis')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])}
    cli = ["--fifo", str(tmp_path / "in.fifo"), "--redis", redis_server.url]
    proc = spawn(cli, env, tmp_path)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 2
    assert "pip install 'hiperfifo[redis]'" in err.decode()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://127.0.0.1:6379", "redis://, rediss:// or unix://"),
        ("redis://:pw@127.0.0.1:99999/0", "bad Redis URL"),
        ("redis:///0", "no host"),
    ],
)
def test_a_bad_redis_url_is_refused_at_start(tmp_path: Path, value: str, message: str) -> None:
    """A --redis URL that is not redis://, rediss:// or unix://: exit 2, password hidden."""
    proc = spawn(["--fifo", str(tmp_path / "in.fifo"), "--redis", value], None, tmp_path)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 2
    assert message in err.decode()
    assert "pw" not in err.decode()


def test_redis_options_read_the_environment(
    redis_server: RedisServer, http_server: Server, tmp_path: Path
) -> None:
    """HIPERFIFO_REDIS and HIPERFIFO_REDIS_* work as the options do (systemd drop-ins)."""
    env = {
        "HIPERFIFO_REDIS": redis_server.url,
        "HIPERFIFO_REDIS_STREAM": "jobs",
        "HIPERFIFO_REDIS_GROUP": "crawlers",
        "HIPERFIFO_REDIS_CONSUMER": "env-host",
        "HIPERFIFO_REDIS_RESULTS": "done",
    }
    fifo, log = tmp_path / "in.fifo", tmp_path / "env.log"
    daemon = Daemon(spawn(["--fifo", str(fifo), "--log-file", str(log)], env, tmp_path), fifo, log)
    try:
        started = daemon.wait_for("daemon.started")[0]
        assert started["redis_consumer"] == "env-host"
        with redis_server.client() as r:
            entry = r.xadd("jobs", {"url": http_server.url("/size/3")}).decode()
            deadline = time.monotonic() + WAIT
            while not r.xlen("done"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            [(_, fields)] = r.xrange("done")
            assert fields[b"entry"].decode() == entry
            assert fields[b"consumer"] == b"env-host"
            assert r.xinfo_groups("jobs")[0]["name"] == b"crawlers"
        stop_all(daemon)
    finally:
        daemon.reap()


def test_redis_down_at_start_the_fifo_works_and_the_stream_follows(
    redis_server: RedisServer, http_server: Server, start: StartDaemon
) -> None:
    """Redis not there when the daemon starts: redis.unavailable, FIFO URLs are fetched;
    Redis starts: redis.available and the stream's entries are fetched; SIGTERM exits 0."""
    redis_server.kill()
    daemon = start("d1")
    daemon.wait_for("redis.unavailable")
    daemon.write(f"{http_server.url('/size/5?from=fifo')}\n".encode())
    daemon.wait_for("transfer.done")
    redis_server.start()
    daemon.wait_for("redis.available")
    [entry] = add_urls(redis_server, [http_server.url("/size/6?from=redis")])
    wait_for_results(redis_server, 1)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    done = daemon.events("transfer.done")
    assert [d.get("entry") for d in done] == [None, entry]
    assert len(daemon.events("redis.unavailable")) == 1
    assert pending(redis_server) == 0


def test_an_entry_aborted_at_the_shutdown_timeout_goes_back_at_once(
    redis_server: RedisServer, http_server: Server, start: StartDaemon
) -> None:
    """A transfer cut off by --shutdown-timeout (42) is not answered: its entry is given
    back and another daemon takes it on its first claim pass, not after the idle time."""
    http_server.gate.clear()  # /gate hangs until opened
    first = start("first", "--shutdown-timeout", "0.5")
    [entry] = add_urls(redis_server, [http_server.url("/gate")])
    first.wait_for("transfer.added")
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert first.events("transfer.done")[0]["result"] == 42
    assert first.events("redis.stopped")[0]["released"] == 1
    assert results(redis_server) == []
    http_server.gate.set()
    second = start("second", claim_idle=60)
    wait_for_results(redis_server, 1, timeout=WAIT)  # far less than the 60 s idle time
    stop_all(second)
    [answer] = results(redis_server)
    assert (answer["entry"], answer["consumer"], answer["result"]) == (entry, "second", "0")
    assert second.events("redis.claimed")[0]["count"] == 1
