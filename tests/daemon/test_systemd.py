"""systemd integration: sd_notify to a real datagram socket, LISTEN_FDS, SIGHUP, journald."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hf_support import WAIT, Daemon, Server, activated, spawn

from hiperfifo.systemd import Notifier, take_listen_fds, watchdog_interval

F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)  # Linux

# -- a receiver standing in for systemd's notify socket ---------------------


class NotifySocket:
    """A datagram socket bound at `address` (@abstract or a path); records what arrives."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._lock:
                self.received.append((at, fields))

    def messages(self, key: str | None = None) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return [(t, m) for t, m in self.received if key is None or key in m]

    def wait_for(self, key: str, timeout: float = WAIT) -> tuple[float, dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(key)
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no {key} within {timeout}s; got {self.messages()}")

    def wait_until(
        self, predicate: Callable[[list[tuple[float, dict[str, str]]]], bool], what: str
    ) -> None:
        """Wait (WAIT at most) until `predicate(messages so far)` holds."""
        deadline = time.monotonic() + WAIT
        while not predicate(self.messages()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {WAIT}s; got {self.messages()}")
            time.sleep(0.01)

    def pings_after(self, moment: float) -> list[float]:
        return [t for t, _ in self.messages("WATCHDOG") if t > moment]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[Callable[[str], NotifySocket]]:
    made: list[NotifySocket] = []

    def make(address: str) -> NotifySocket:
        made.append(NotifySocket(address))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# -- sd_notify: READY, STATUS, WATCHDOG, STOPPING ----------------------------


def test_notify_abstract_socket_ready_status_watchdog_stopping_in_order(
    run_daemon: Callable[..., Daemon],
    http_server: Server,
    notify_socket: Callable[..., NotifySocket],
) -> None:
    """@abstract NOTIFY_SOCKET: READY first, STATUS at most 1/s with counts, WATCHDOG every
    ~0.5 s for WATCHDOG_USEC=1000000 (half of it, as sd_watchdog_enabled(3) advises; never a
    gap as long as WATCHDOG_USEC), STOPPING on stop, nothing after it but pings."""
    receiver = notify_socket(f"@hiperfifo-test-{os.getpid()}")
    env = {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "1000000"}
    daemon = run_daemon(env=env)
    ready_at, ready = receiver.wait_for("READY")
    assert ready["READY"] == "1"
    assert ready["STATUS"] == "0 running, 0 queued, 0 waiting to retry, 0 done, 0 failed"
    assert daemon.fifo.exists()  # READY only once the FIFO is open
    daemon.write(f"{http_server.url('/size/10')}\n{http_server.url('/status/404')}\n".encode())
    daemon.wait_for("transfer.done", 2)
    two_done = "0 running, 0 queued, 0 waiting to retry, 2 done, 0 failed"
    receiver.wait_until(
        lambda messages: (
            any(m.get("STATUS") == two_done for _, m in messages)
            and sum("WATCHDOG" in m for _, m in messages) >= 5
        ),
        "a STATUS with both done, and 5 pings",
    )
    daemon.write(b"stop\n")
    assert daemon.wait() == 0

    messages = receiver.messages()
    assert messages[0][1].get("READY") == "1"
    assert len(receiver.messages("READY")) == 1
    statuses = [(t, m["STATUS"]) for t, m in messages if "STATUS" in m and "READY" not in m]
    plain = [(t, s) for t, s in statuses if not s.startswith("stopping")]
    assert plain[-1][1] == "0 running, 0 queued, 0 waiting to retry, 2 done, 0 failed"
    assert all(g > 0.9 for g in gaps([t for t, _ in plain]))
    stopping_at, stopping = receiver.messages("STOPPING")[0]
    assert stopping["STOPPING"] == "1"
    assert stopping["STATUS"].startswith("stopping (stop): ")
    assert stopping_at > max(t for t, _ in plain)
    after = [m for t, m in messages if t > stopping_at]
    assert all(set(m) == {"WATCHDOG"} for m in after)

    pings = [t for t, _ in receiver.messages("WATCHDOG")]
    assert all(m["WATCHDOG"] == "1" for _, m in receiver.messages("WATCHDOG"))
    assert len(pings) >= 5
    assert pings[0] - ready_at < 1.0  # within one WATCHDOG_USEC of READY
    assert all(0.2 < g < 1.0 for g in gaps(pings)), gaps(pings)  # never WATCHDOG_USEC apart
    middle = sorted(gaps(pings))[len(pings) // 2 - 1]
    assert 0.4 <= middle <= 0.7, gaps(pings)  # the median gap: half of WATCHDOG_USEC


def test_notify_path_socket_and_foreign_watchdog_pid(
    run_daemon: Callable[..., Daemon], tmp_path: Path, notify_socket: Callable[..., NotifySocket]
) -> None:
    """A path NOTIFY_SOCKET gets READY and STOPPING; WATCHDOG_PID of another process: no pings."""
    receiver = notify_socket(str(tmp_path / "notify.sock"))
    env = {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    daemon = run_daemon(env=env)
    receiver.wait_for("READY")
    time.sleep(0.5)  # a window where pings every 0.1 s would show; none may
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    receiver.wait_for("STOPPING")
    assert receiver.messages("WATCHDOG") == []
    assert daemon.events("daemon.notify_failed") == []


def test_stopped_loop_sends_no_watchdog_pings(
    run_daemon: Callable[..., Daemon], notify_socket: Callable[..., NotifySocket]
) -> None:
    """SIGSTOP for 1.5 s: no WATCHDOG=1 in that window (pings every 0.2 s would send 7);
    after SIGCONT the pings come back."""
    receiver = notify_socket(f"@hiperfifo-test-{os.getpid()}-stopped")
    daemon = run_daemon(env={"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "400000"})
    receiver.wait_for("READY")
    receiver.wait_until(lambda m: len([1 for _, x in m if "WATCHDOG" in x]) >= 2, "2 pings")
    daemon.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    time.sleep(1.5)  # the stopped window is what is tested
    resumed = time.monotonic()
    daemon.signal(signal.SIGCONT)
    receiver.wait_until(lambda _: len(receiver.pings_after(resumed)) >= 2, "pings after SIGCONT")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    pings = [t for t, _ in receiver.messages("WATCHDOG")]
    # a ping sent just before SIGSTOP may be read a little late by a busy test process
    assert [t for t in pings if stopped + 0.3 < t < resumed] == []


def wait_until_pipe_full(read_fd: int) -> None:
    """Until the pipe behind `read_fd` is full to within a page (the kernel keeps whole
    pages: 65,038 of 65,536 bytes here), so that its writer, with far more to say, blocks."""
    capacity = fcntl.fcntl(read_fd, F_GETPIPE_SZ)
    deadline = time.monotonic() + WAIT
    while pipe_holds(read_fd) < capacity - 4096:
        assert time.monotonic() < deadline, "the daemon never filled its stdout pipe"
        time.sleep(0.01)


def pipe_holds(read_fd: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(read_fd, termios.FIONREAD, b"\0" * 4))[0])


def test_loop_blocked_on_a_full_stdout_pipe_sends_no_watchdog_pings(
    tmp_path: Path, notify_socket: Callable[..., NotifySocket], dead_port: int
) -> None:
    """Logging to a pipe nobody reads blocks the loop in write(2): pings stop; drained, resume."""
    receiver = notify_socket(f"@hiperfifo-test-{os.getpid()}-blocked")
    fifo = tmp_path / "b.fifo"
    env = {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "400000"}
    proc = spawn(["--fifo", str(fifo), "--log-format", "json"], env=env)
    assert proc.stdout is not None
    drain = threading.Thread(target=proc.stdout.read, daemon=True)
    try:
        receiver.wait_for("READY")
        fd = os.open(fifo, os.O_WRONLY)
        # 2,000 refused URLs: transfer.added and transfer.done lines, far more than 64 KiB
        # (junk would not do: past 10 a second, rejections are summed in one line)
        os.write(fd, f"http://127.0.0.1:{dead_port}/x ".encode() * 2000)
        os.close(fd)
        wait_until_pipe_full(proc.stdout.fileno())  # the loop now sits in write(2)
        blocked = time.monotonic()
        time.sleep(1.2)  # the blocked window is what is tested
        drained = time.monotonic()
        drain.start()
        receiver.wait_until(lambda _: len(receiver.pings_after(drained)) >= 1, "a ping, drained")
        late = blocked + 0.3  # a ping sent as the pipe filled may be read a little late
        assert [t for t, _ in receiver.messages("WATCHDOG") if late < t < drained] == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if drain.ident is not None:
            drain.join(5)
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()


def test_unreachable_notify_socket_fails_nothing(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """NOTIFY_SOCKET naming a path nobody listens on: one warning line, transfers still run."""
    env = {"NOTIFY_SOCKET": str(tmp_path / "nobody.sock"), "WATCHDOG_USEC": "200000"}
    daemon = run_daemon(env=env)
    daemon.write(f"{http_server.url('/size/5')}\nstop\n".encode())
    assert daemon.wait() == 0
    assert daemon.events("transfer.done")[0]["result"] == 0
    failed = daemon.events("daemon.notify_failed")
    assert len(failed) == 1
    assert "nobody.sock" in failed[0]["error"]


def test_notifier_without_socket_and_with_unsupported_address() -> None:
    """No NOTIFY_SOCKET: send() is False and raises nothing; vsock: is disabled with a reason."""
    assert Notifier.from_environ({}).send(READY=1) is False
    vsock = Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not vsock.enabled
    assert vsock.send(READY=1) is False
    assert vsock.error is not None
    assert "vsock:2:1234" in vsock.error


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid() -> None:
    """WATCHDOG_USEC/2 in seconds; None when unset, 0, garbage, or WATCHDOG_PID is another pid."""
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "42"}, 42) == 0.2
    assert watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "x"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_take_listen_fds_removes_the_variables_whoever_they_were_for() -> None:
    """LISTEN_* are removed from the mapping; another pid's variables give no descriptors."""
    mine = {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "urls:", "PATH": "/bin"}
    fds = take_listen_fds(mine, 42)
    assert [(f.fd, f.name) for f in fds] == [(3, "urls"), (4, "unknown")]
    assert mine == {"PATH": "/bin"}
    theirs = {"LISTEN_PID": "7", "LISTEN_FDS": "1"}
    assert take_listen_fds(theirs, 42) == []
    assert theirs == {}
    assert take_listen_fds({"LISTEN_PID": "42", "LISTEN_FDS": "one"}, 42) == []


# -- socket activation: the FIFO as fd 3 -------------------------------------


def test_listen_fds_fifo_is_read_and_never_unlinked(tmp_path: Path, http_server: Server) -> None:
    """A FIFO passed as fd 3 (LISTEN_FDS=1) is read; --fifo is not created; the FIFO survives."""
    path = tmp_path / "urls.fifo"
    os.mkfifo(path, 0o620)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    log = tmp_path / "daemon.log"
    proc = activated(fd, ["--fifo", str(tmp_path / "unused.fifo"), "--log-file", str(log)])
    os.close(fd)
    daemon = Daemon(proc, path, log)
    try:
        started = daemon.wait_for("daemon.started")[0]
        assert started["fifo"] == str(path)
        assert started["created_fifo"] is False
        fdinfo = Path(f"/proc/{proc.pid}/fdinfo/3").read_text()
        flags = int(fdinfo.split("flags:")[1].split()[0], 8)
        assert flags & os.O_CLOEXEC  # as sd_listen_fds(3) leaves it
        assert flags & os.O_NONBLOCK
        daemon.write(f"{http_server.url('/size/100')}\n{http_server.url('/size/7')}\n".encode())
        done = daemon.wait_for("transfer.done", 2)
        assert sorted(e["bytes"] for e in done) == [7, 100]
        daemon.write(b"stop\n")
        assert daemon.wait() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert path.exists()
    assert not (tmp_path / "unused.fifo").exists()


def test_listen_fds_regular_file_is_refused(tmp_path: Path) -> None:
    """fd 3 that is a regular file: exit 2 and a message that says what is wrong."""
    path = tmp_path / "not-a-fifo"
    path.write_text("")
    fd = os.open(path, os.O_RDWR)
    proc = activated(fd, ["--fifo", str(tmp_path / "unused.fifo")])
    os.close(fd)
    _out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 2
    assert "descriptor 3 from systemd (LISTEN_FDS) is a regular file, not a FIFO" in err.decode()
    assert not (tmp_path / "unused.fifo").exists()


# -- SIGHUP and journald ------------------------------------------------------


def test_sighup_reopens_the_log_file_after_logrotate_renamed_it(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """mv log log.1; kill -HUP: later lines go to a new log, none to log.1; the daemon lives on."""
    daemon = run_daemon()
    rotated = daemon.log.with_name(daemon.log.name + ".1")
    daemon.log.rename(rotated)
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_for("daemon.reloaded")[0]
    assert reloaded["log_file"] == str(daemon.log)
    daemon.write(f"{http_server.url('/size/3')}\nstop\n".encode())
    assert daemon.wait() == 0
    old = [json.loads(line)["event"] for line in rotated.read_text().splitlines()]
    assert old == ["daemon.started"]
    new = [e["event"] for e in daemon.events()]
    assert new[0] == "daemon.reloaded"
    assert "transfer.done" in new
    assert new[-1] == "daemon.stopped"


def test_journal_prefix_only_when_journal_stream_is_the_log_stream(tmp_path: Path) -> None:
    """$JOURNAL_STREAM naming another file: plain JSON lines, no <6> prefix."""
    other = tmp_path / "other"
    other.touch()
    st = other.stat()
    log = tmp_path / "plain.log"
    env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    proc = spawn(["--fifo", str(tmp_path / "j.fifo"), "--log-file", str(log)], env=env)
    daemon = Daemon(proc, tmp_path / "j.fifo", log)
    try:
        daemon.wait_for("daemon.started")
        daemon.write(b"stop\n")
        assert daemon.wait() == 0
    finally:
        proc.communicate()
    assert all(line.startswith("{") for line in log.read_text().splitlines())
