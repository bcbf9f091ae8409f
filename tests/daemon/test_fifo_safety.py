"""The FIFO path while the daemon runs (deleted, replaced) and who may write it (mode, owner)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from hf_support import Daemon, Server, activated, spawn

NOTICE = 3.0  # seconds: "within a few seconds"


def test_deleted_fifo_is_recreated_and_read(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """rm of the FIFO: fifo.recreated within seconds, a new FIFO (0600) at the path that works."""
    daemon = run_daemon()
    daemon.fifo.unlink()
    deleted = time.monotonic()
    (event,) = daemon.wait_for("fifo.recreated", timeout=NOTICE + 2)
    assert time.monotonic() - deleted < NOTICE
    assert (event["reason"], event["created"]) == ("deleted", True)
    st = os.lstat(daemon.fifo)
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    daemon.write(f"{http_server.url('/after')}\n".encode())
    (done,) = daemon.wait_for("transfer.done")
    assert done["result"] == 0
    daemon.write(b"stop\n")
    assert daemon.wait() == 0
    assert not daemon.fifo.exists()  # the one it created is removed on exit


def test_fifo_replaced_by_another_fifo_is_used(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """A new FIFO renamed over the path: read from then on, and left in place on exit."""
    daemon = run_daemon()
    os.mkfifo(tmp_path / "new.fifo", 0o620)
    os.rename(tmp_path / "new.fifo", daemon.fifo)
    (event,) = daemon.wait_for("fifo.recreated", timeout=NOTICE + 2)
    assert (event["reason"], event["created"]) == ("replaced by another FIFO", False)
    daemon.write(f"{http_server.url('/after')}\nstop\n".encode())
    assert daemon.wait() == 0
    assert [e["result"] for e in daemon.events("transfer.done")] == [0]
    assert stat.S_ISFIFO(os.lstat(daemon.fifo).st_mode)


def test_fifo_replaced_by_a_regular_file_drains_and_exits_2(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """A regular file renamed over the path: fifo.lost, running transfers finish, exit 2."""
    daemon = run_daemon()
    daemon.write(f"{http_server.url('/slow/1')}\n".encode())
    daemon.wait_for("transfer.added")
    (tmp_path / "file").write_text("http://example.invalid/\n")
    os.rename(tmp_path / "file", daemon.fifo)
    (lost,) = daemon.wait_for("fifo.lost", timeout=NOTICE + 2)
    assert lost["reason"] == "replaced by a regular file"
    assert daemon.wait() == 2
    assert [e["result"] for e in daemon.events("transfer.done")] == [0]
    assert daemon.fifo.read_text() == "http://example.invalid/\n"  # never replaced


def test_systemd_fifo_deleted_exits_2(tmp_path: Path) -> None:
    """A FIFO handed over by systemd (LISTEN_FDS) and then deleted: fifo.lost and exit 2."""
    path = tmp_path / "urls.fifo"
    os.mkfifo(path, 0o620)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    log = tmp_path / "daemon.log"
    proc = activated(fd, ["--log-file", str(log), "--fifo", "unused"])
    os.close(fd)
    daemon = Daemon(proc, path, log)
    try:
        assert daemon.wait_for("daemon.started")[0]["fifo"] == str(path)
        path.unlink()
        (lost,) = daemon.wait_for("fifo.lost", timeout=NOTICE + 2)
        assert lost["reason"] == "deleted"
        assert daemon.wait() == 2
        assert not path.exists()  # systemd's to recreate, not ours
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_world_writable_fifo_is_a_warning(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """An existing FIFO with mode 0666: fifo.insecure at start, the daemon still serves."""
    os.mkfifo(tmp_path / "in.fifo")
    os.chmod(tmp_path / "in.fifo", 0o666)
    daemon = run_daemon()
    (warning,) = daemon.events("fifo.insecure")
    assert "writable by every user (mode 0666)" in warning["reason"]
    assert warning["level"] == "warning"
    daemon.write(f"{http_server.url('/x')}\nstop\n".encode())
    assert daemon.wait() == 0


def test_world_writable_fifo_with_strict_exits_2(tmp_path: Path) -> None:
    """The same FIFO with --strict: exit 2 and the reason on stderr; a 0620 FIFO is fine."""
    path = tmp_path / "in.fifo"
    os.mkfifo(path)
    os.chmod(path, 0o666)
    proc = spawn(["--fifo", str(path), "--strict"])
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert b"writable by every user" in err
    assert b"--strict" in err
    os.chmod(path, 0o620)
    proc = spawn(["--fifo", str(path), "--strict", "--log-file", str(tmp_path / "log")])
    try:
        Daemon(proc, path, tmp_path / "log").wait_for("daemon.started")
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()


def test_fifo_owned_by_another_user_is_a_warning(tmp_path: Path) -> None:
    """A FIFO owned by another uid (not root): fifo.insecure names the owner."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root to chown")
    path = tmp_path / "in.fifo"
    os.mkfifo(path, 0o600)
    os.chown(path, 12345, 12345)
    log = tmp_path / "log"
    proc = spawn(["--fifo", str(path), "--log-file", str(log)])
    try:
        daemon = Daemon(proc, path, log)
        daemon.wait_for("daemon.started")
        (warning,) = daemon.events("fifo.insecure")
        assert "owned by uid 12345" in warning["reason"]
    finally:
        proc.kill()
        proc.communicate()


def test_state_dir_others_can_read_is_a_warning_and_with_strict_exit_2(tmp_path: Path) -> None:
    """--state-dir of mode 0755: a state.insecure warning; with --strict exit 2 (nothing read)."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    fifo = tmp_path / "in.fifo"
    log = tmp_path / "log"
    proc = spawn(["--fifo", str(fifo), "--state-dir", str(state), "--log-file", str(log)])
    daemon = Daemon(proc, fifo, log)
    try:
        (warning,) = daemon.wait_for("state.insecure")
        assert warning["level"] == "warning"
        assert "mode 0755" in warning["reason"]
        daemon.write(b"stop\n")
        assert daemon.wait() == 0
    finally:
        proc.kill()
        proc.communicate()
    proc = spawn(["--fifo", str(fifo), "--state-dir", str(state), "--strict"])
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert b"mode 0755" in err
    assert b"--strict" in err
