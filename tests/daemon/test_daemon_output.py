"""The real daemon with --output DIR: files complete, named safely, inside DIR; write failures."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hf_support import Daemon, Server, body_for


def test_output_dir_gets_complete_files_and_nothing_escapes(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """Bodies land in DIR under safe names; `/../../etc/x` and a repeated name stay inside."""
    out = tmp_path / "out"
    daemon = run_daemon("--output", str(out))
    paths = ["/size/1000/a.bin", "/size/1000/a.bin", "/../../etc/x", "/size/5/.hidden", "/"]
    raw = "".join(f"http://127.0.0.1:{http_server.server_address[1]}{p}\n" for p in paths)
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    daemon.write(raw.encode() + b"stop\n")
    assert daemon.wait() == 0
    done = daemon.events("transfer.done")
    assert all(e["result"] == 0 for e in done)
    files = {Path(e["file"]).name: Path(e["file"]) for e in done}
    assert set(files) == {"a.bin", "a.bin.1", "x", "hidden", "index.html"}
    assert all(f.parent == out for f in files.values())
    assert files["a.bin"].read_bytes() == body_for("/size/1000/a.bin", 1000)
    assert files["a.bin.1"].read_bytes() == body_for("/size/1000/a.bin", 1000)
    assert sorted(p.name for p in out.iterdir()) == sorted(files)  # no .part left behind
    after = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    assert after - before <= {tmp_path / "daemon0.log"}


def test_unwritable_output_dir_fails_with_23_and_daemon_goes_on(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """With DIR gone after start, transfers fail WRITE_ERROR (23); the daemon keeps serving."""
    out = tmp_path / "out"
    daemon = run_daemon("--output", str(out))
    os.rmdir(out)
    daemon.write(f"{http_server.url('/size/100/a')}\n".encode())
    (first,) = daemon.wait_for("transfer.done")
    assert (first["result"], first["result_name"]) == (23, "WRITE_ERROR")
    assert "No such file" in first["error"]
    out.mkdir()
    daemon.write(f"{http_server.url('/size/100/b')}\n".encode())
    second = daemon.wait_for("transfer.done", 2)[1]
    assert daemon.proc.poll() is None
    assert second["result"] == 23  # still the removed directory: DIR is held open, not re-resolved
    daemon.write(b"stop\n")
    assert daemon.wait() == 0
    assert daemon.events("daemon.stopped")[0]["failed"] == 2


def _mount_tiny_tmpfs(path: Path) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return proc.returncode == 0


def test_full_disk_fails_that_transfer_and_the_next_still_works(
    run_daemon: Callable[..., Daemon], http_server: Server, tmp_path: Path
) -> None:
    """On a 64 KiB tmpfs a 1 MB body fails with 23 (no partial file left); a small one works."""
    out = tmp_path / "small"
    if not _mount_tiny_tmpfs(out):
        pytest.skip("needs root and tmpfs to make a full disk")
    try:
        daemon = run_daemon("--output", str(out))
        daemon.write(f"{http_server.url('/size/1000000/big')}\n".encode())
        (big,) = daemon.wait_for("transfer.done")
        daemon.write(f"{http_server.url('/size/100/small')}\nstop\n".encode())
        assert daemon.wait() == 0
        small = daemon.events("transfer.done")[1]
        assert (big["result"], small["result"]) == (23, 0)
        assert "No space left" in big["error"]
        assert sorted(p.name for p in out.iterdir()) == ["small"]
    finally:
        subprocess.run(["umount", str(out)], timeout=10, check=False)
