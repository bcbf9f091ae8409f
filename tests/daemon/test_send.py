"""`hiperfifo send`: whole lines, atomic writes, any number of writers at once."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import termios
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

import pytest
from hf_support import WAIT, Daemon, daemon_env

from hiperfifo.send import PIPE_BUF, Report, batches, token_groups, tokens


def send_cmd(fifo: Path, *urls: str) -> list[str]:
    return [sys.executable, "-m", "hiperfifo", "send", "--fifo", str(fifo), *urls]


def test_tokens_join_across_reads_and_split_on_any_whitespace() -> None:
    """A token cut between two reads is one token; spaces, tabs and newlines separate."""
    assert list(tokens([b"http://a/1 http://b", b"/2\n\thttp://c/3\r\n", b"stop"])) == [
        b"http://a/1",
        b"http://b/2",
        b"http://c/3",
        b"stop",
    ]


def test_each_line_from_a_slow_writer_is_sent_at_once(tmp_path: Path) -> None:
    """`tail -f urls | hiperfifo send`: a line goes out when it is read, not when 4 KiB of
    lines have gathered or stdin ends."""
    fifo = tmp_path / "in.fifo"
    with fifo_reader(fifo) as reader:
        proc = subprocess.Popen(
            send_cmd(fifo), stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon_env()
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write(b"http://127.0.0.1/first\n")
            proc.stdin.flush()
            _wait(lambda: _queued(reader) > 0, "the first line was not sent while stdin is open")
            assert os.read(reader, 4096) == b"http://127.0.0.1/first\n"
            proc.stdin.write(b"http://127.0.0.1/sec")
            proc.stdin.flush()
            proc.stdin.write(b"ond\n")
            proc.stdin.close()
            assert proc.wait(WAIT) == 0
        finally:
            proc.kill()
            proc.wait(WAIT)
            assert proc.stderr is not None
            proc.stderr.close()
        assert os.read(reader, 4096) == b"http://127.0.0.1/second\n"


def test_a_huge_token_is_refused_without_holding_it_all() -> None:
    """10 MB without whitespace: one refused token of PIPE_BUF + 1 bytes kept, the next
    token intact."""
    groups = list(token_groups([b"x" * 1_000_000] * 10 + [b" http://127.0.0.1/ok\n"]))
    flat = [token for group in groups for token in group]
    assert [len(token) for token in flat] == [PIPE_BUF + 1, len(b"http://127.0.0.1/ok")]


def test_batches_are_whole_lines_of_at_most_pipe_buf() -> None:
    """Every block ends with a newline, holds whole URLs and is at most PIPE_BUF bytes."""
    urls = [f"http://127.0.0.1/{'x' * (n % 97)}/{n}".encode() for n in range(5_000)]
    report = Report()
    blocks = list(batches(urls, report, StringIO()))
    assert all(len(b) <= PIPE_BUF and b.endswith(b"\n") for b in blocks)
    assert b"".join(blocks).split(b"\n")[:-1] == urls
    assert len(blocks) > 1
    assert report.refused == 0


def test_url_longer_than_pipe_buf_is_refused_and_the_others_written(tmp_path: Path) -> None:
    """A URL that cannot go in one atomic write: a message, exit 1, the rest still written."""
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    long = "http://127.0.0.1/" + "a" * PIPE_BUF
    try:
        done = subprocess.run(
            send_cmd(fifo),
            input=f"http://127.0.0.1/1 {long}\nhttp://127.0.0.1/2\n".encode(),
            capture_output=True,
            env=daemon_env(),
            timeout=WAIT,
            check=False,
        )
        written = os.read(reader, 65536)
    finally:
        os.close(reader)
    assert done.returncode == 1
    assert f"refused a URL longer than {PIPE_BUF - 1} bytes" in done.stderr.decode()
    assert written == b"http://127.0.0.1/1\nhttp://127.0.0.1/2\n"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "No such file or directory"),
        (lambda p: p.write_text(""), "is not a FIFO"),
        (lambda p: p.mkdir(), "is not a FIFO"),
    ],
    ids=["missing", "regular-file", "directory"],
)
def test_missing_or_not_a_fifo_exits_1_with_a_message(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    """Nothing is written anywhere: exit status 1 and one line on stderr saying why."""
    path = tmp_path / "in.fifo"
    make(path)
    done = subprocess.run(
        send_cmd(path, "http://127.0.0.1/"),
        capture_output=True,
        env=daemon_env(),
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 1
    assert message in done.stderr.decode()
    assert not path.is_file() or path.read_text() == ""


def test_no_subcommand_still_runs_the_daemon(run_daemon: Callable[..., Daemon]) -> None:
    """`hiperfifo --fifo PATH` is the daemon, as before `send` existed."""
    daemon = run_daemon()
    daemon.write(b"stop\n")
    assert daemon.wait() == 0


# -- why `cat` is for one writer only: a write() over PIPE_BUF is not atomic ---------------

A_LINES = [f"http://127.0.0.1:1/wA/n={n:06d}\n".encode() for n in range(8_000)]  # 31 bytes
B_LINE = b"http://127.0.0.1:1/wB/one\n"


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


@contextmanager
def fifo_reader(path: Path) -> Iterator[int]:
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        yield fd
    finally:
        os.close(fd)


def _queued(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


def second_writer_in_the_middle(tmp_path: Path, writer: list[str], full: int) -> list[bytes]:
    """Writer A fills the pipe and blocks; it is stopped, room is made, B writes one line,
    A goes on. The lines as the reader sees them."""
    source = tmp_path / "a.txt"
    source.write_bytes(b"".join(A_LINES))
    fifo = tmp_path / "in.fifo"
    received = bytearray()
    with fifo_reader(fifo) as reader, source.open("rb") as stdin:
        capacity = fcntl.fcntl(reader, fcntl.F_GETPIPE_SZ)
        cmd = [part.replace("{fifo}", str(fifo)) for part in writer]
        proc = subprocess.Popen(cmd, stdin=stdin, stderr=subprocess.PIPE, env=daemon_env())
        try:
            _wait(lambda: _queued(reader) >= capacity - full, "writer A never filled the pipe")
            proc.send_signal(signal.SIGSTOP)
            _wait(lambda: _state(proc.pid) == "T", "writer A did not stop")
            received += os.read(reader, 2 * 4096)  # two pages free: room for B
            b = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            try:
                assert os.write(b, B_LINE) == len(B_LINE)
            finally:
                os.close(b)
            proc.send_signal(signal.SIGCONT)
            while proc.poll() is None or _queued(reader):
                try:
                    received += os.read(reader, 65536)
                except BlockingIOError:
                    time.sleep(0.005)
        finally:
            proc.kill()
            proc.wait(WAIT)
            assert proc.stderr is not None
            proc.stderr.close()
    return bytes(received).splitlines(keepends=True)


def test_cat_as_second_writer_mangles_a_line(tmp_path: Path) -> None:
    """`cat` writes 128 KiB at once: the pipe takes what fits (64 KiB, cut mid-line) and
    another writer's line lands inside that write. This is issue 12's mangled URL."""
    lines = second_writer_in_the_middle(tmp_path, ["sh", "-c", "exec cat > {fifo}"], 0)
    mangled = [line for line in lines if line not in A_LINES and line != B_LINE]
    assert mangled, "cat's write was not cut: the demonstration proves nothing"
    assert any(line.endswith(B_LINE) and line != B_LINE for line in lines)


def test_send_as_second_writer_keeps_every_line_whole(tmp_path: Path) -> None:
    """`hiperfifo send` writes whole lines of at most PIPE_BUF: the other writer's line lands
    between two of its lines, and every line arrives exactly as written."""
    lines = second_writer_in_the_middle(tmp_path, send_cmd(Path("{fifo}")), 2 * PIPE_BUF)
    assert Counter(lines) == Counter([*A_LINES, B_LINE])
    assert lines[-1] != B_LINE  # B did land in the middle of A's lines


def test_two_concurrent_senders_of_3000_urls_each_reach_the_daemon_exact(
    run_daemon: Callable[..., Daemon], tmp_path: Path, dead_port: int
) -> None:
    """Two `hiperfifo send` at once, 3,000 URLs each of varied lengths: all 6,000 accepted
    exactly as written, none rejected."""
    daemon = run_daemon("--max-total-connections", "4")
    expected = []
    procs = []
    for writer in "AB":
        urls = [
            f"http://127.0.0.1:{dead_port}/w{writer}/n={n}/{'x' * (n * 7 % 113)}"
            for n in range(3_000)
        ]
        expected += urls
        source = tmp_path / f"{writer}.txt"
        source.write_text("".join(f"{u}\n" for u in urls))
        with source.open("rb") as stdin:
            procs.append(
                subprocess.Popen(
                    send_cmd(daemon.fifo), stdin=stdin, stderr=subprocess.PIPE, env=daemon_env()
                )
            )
    for proc in procs:
        assert proc.wait(WAIT * 3) == 0, proc.stderr.read() if proc.stderr else ""
        if proc.stderr is not None:
            proc.stderr.close()
    added = daemon.wait_for("transfer.added", 6_000, timeout=WAIT * 3)
    assert Counter(event["url"] for event in added) == Counter(expected)
    assert daemon.events("input.rejected") == []
    daemon.write(b"stop\n")
    daemon.wait_for("daemon.stopped", timeout=WAIT * 3)
