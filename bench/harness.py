"""Processes and measurement: start a contender, time it, read its CPU and memory, stop it.

Everything a benchmark run measures goes through `run_process()`: one launch,
one optional "ready" moment (imports done), one "go", output read with a
deadline until the contender says it is finished, CPU time and peak RSS read
from /proc (or wait4 for a process that has exited), the process group killed
whatever happens. `Watch` says what the rest of the machine did meanwhile.
"""

from __future__ import annotations

import os
import resource
import selectors
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

TICKS = os.sysconf("SC_CLK_TCK")


# -- /proc readings ---------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system seconds of the process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def proc_status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / TICKS


def raise_nofile() -> int:
    """Raise the soft descriptor limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


class Watch:
    """Who else used the CPU while a contender ran: the machine minus us, nginx and it."""

    def __init__(self, server_pids: Callable[[], list[int]] = list) -> None:
        self._server_pids = server_pids
        self._start = (0.0, 0.0, 0.0)
        self.busy = self.server = self.parent = 0.0

    def _read(self) -> tuple[float, float, float]:
        server_cpu = 0.0
        for pid in self._server_pids():
            try:
                server_cpu += proc_cpu(pid)
            except OSError:
                pass
        me = resource.getrusage(resource.RUSAGE_SELF)
        return machine_busy(), server_cpu, me.ru_utime + me.ru_stime

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        end = self._read()
        self.busy, self.server, self.parent = (
            b - a for a, b in zip(self._start, end, strict=True)
        )

    def others(self, contender_cpu: float) -> float:
        """CPU seconds other processes used between start() and stop()."""
        return max(0.0, self.busy - self.server - self.parent - contender_cpu)

    def settle(self, limit: float, max_wait: float, probe: float = 0.5) -> None:
        """Wait (at most max_wait s) for `probe` seconds in which others use under `limit`
        cores (each sample is checked again afterwards: run.CROWDED)."""
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            self.start()
            time.sleep(probe)
            self.stop()
            if self.others(0.0) < limit * probe:
                return


# -- reading a child's output -------------------------------------------------------------


class Lines:
    """Reads a child's stdout with a deadline (never blocks past it)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        os.set_blocking(self._fd, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)
        self._buf = b""
        self.eof = False

    def chunk(self, deadline: float) -> bytes | None:
        """The next bytes (what line() left over first), b"" at EOF, None past the deadline."""
        if self._buf:
            data, self._buf = self._buf, b""
            return data
        return self._read(deadline)

    def line(self, deadline: float) -> str | None:
        """The next whole line (without its newline), None at EOF or past the deadline."""
        while b"\n" not in self._buf:
            data = self._read(deadline)
            if not data:
                return None
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def _read(self, deadline: float) -> bytes | None:
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if self._sel.select(left):
                try:
                    data = os.read(self._fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    self.eof = True
                return data
        return b""

    def close(self) -> None:
        self._sel.close()


# -- one process, measured ----------------------------------------------------------------


@dataclass
class Measured:
    """What run_process() saw. `status` is ok, error (did not start, crashed) or timeout."""

    status: str
    note: str = ""
    wall: float = 0.0  # from "go" to finished
    cpu: float = 0.0  # CPU seconds over the same span
    cold_wall: float = 0.0  # from exec to finished: interpreter start and imports included
    cold_cpu: float = 0.0
    peak_kib: int = 0  # VmHWM when finished
    base_kib: int = 0  # VmRSS at "go"
    others: float = 0.0  # CPU seconds the rest of the machine used from go to finished
    server_cpu: float = 0.0  # CPU seconds the server (nginx) used meanwhile
    output: bytes = b""  # stdout up to "finished", the "ready" part left out
    rest: bytes = b""  # stdout after "finished" (until exit)
    returncode: int | None = None


@dataclass
class Launch:
    """How to run one contender.

    ready(line): the line that says imports are done (None: measured from exec, as curl).
    go(proc): start the work (write "go", feed a FIFO, ...); may return a cleanup callable.
    finished(chunk): given each piece of stdout after ready in turn, whether the work is
    done (None: when the process exits).
    end(proc): ask it to exit once finished (write "exit", "stop", ...).
    """

    cmd: Sequence[str]
    cwd: Path | None = None
    cap: float = 240.0
    ready: Callable[[str], bool] | None = None
    go: Callable[[subprocess.Popen[bytes]], Callable[[], None] | None] | None = None
    finished: Callable[[bytes], bool] | None = None
    end: Callable[[subprocess.Popen[bytes]], None] | None = None
    stdin: bool = False  # a pipe to its stdin (else /dev/null)
    pipe_size: int = 0  # F_SETPIPE_SZ for stdout: a chatty child never waits on us
    env: dict[str, str] | None = field(default=None)


def run_process(launch: Launch, watch: Watch) -> Measured:
    """Start, wait for ready, go, read until finished, measure, end, reap; kill in any case."""
    with tempfile.TemporaryFile() as err:
        t_exec = time.perf_counter()
        proc = subprocess.Popen(
            launch.cmd, cwd=launch.cwd, env=launch.env, stderr=err, start_new_session=True,
            stdin=subprocess.PIPE if launch.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        if launch.pipe_size:
            _grow_pipe(proc.stdout.fileno(), launch.pipe_size)
        lines = Lines(proc.stdout)
        cleanup: Callable[[], None] | None = None
        try:
            measured, cleanup = _measure(launch, proc, lines, watch, t_exec, err)
        finally:
            if cleanup is not None:
                cleanup()
            lines.close()
            kill(proc)
    return measured


def _measure(
    launch: Launch,
    proc: subprocess.Popen[bytes],
    lines: Lines,
    watch: Watch,
    t_exec: float,
    err: IO[bytes],
) -> tuple[Measured, Callable[[], None] | None]:
    base, cpu0 = 0, 0.0
    if launch.ready is not None:
        if not _wait_ready(launch.ready, lines):
            return Measured("error", "did not start: " + tail(err)), None
        base, cpu0 = proc_status_kib(proc.pid, "VmRSS"), proc_cpu(proc.pid)
    watch.start()
    t0 = time.perf_counter() if launch.ready is not None else t_exec
    cleanup = launch.go(proc) if launch.go is not None else None
    chunks: list[bytes] = []
    if launch.finished is None:
        peak, status = _read_to_exit(proc, lines, launch.cap, chunks)
        if status:
            return Measured(status, f"stopped after {launch.cap:.0f} s"), cleanup
        usage = reap(proc)
        t1 = time.perf_counter()
        watch.stop()
        if usage is None:
            return Measured("error", "did not exit"), cleanup
        cpu = cpu1 = usage.ru_utime + usage.ru_stime
        rest: list[bytes] = []
    else:
        status = _read_until(launch.finished, lines, launch.cap, chunks)
        if status:
            note = (
                "exited early: " + tail(err) if lines.eof else f"stopped after {launch.cap:.0f} s"
            )
            return Measured(status, note), cleanup
        t1 = time.perf_counter()
        cpu1 = proc_cpu(proc.pid)
        peak = proc_status_kib(proc.pid, "VmHWM")
        watch.stop()
        cpu = cpu1 - cpu0
        if launch.end is not None:
            launch.end(proc)
        rest = []
        while data := lines.chunk(time.monotonic() + 30):
            rest.append(data)
        reap(proc)
    m = Measured("ok", wall=t1 - t0, cpu=cpu, cold_wall=t1 - t_exec, cold_cpu=cpu1)
    m.output, m.rest = b"".join(chunks), b"".join(rest)
    m.peak_kib, m.base_kib, m.returncode = peak, base, proc.returncode
    m.others, m.server_cpu = watch.others(cpu), watch.server
    return m, cleanup


def _wait_ready(ready: Callable[[str], bool], lines: Lines) -> bool:
    deadline = time.monotonic() + 60
    while (line := lines.line(deadline)) is not None:
        if ready(line):
            return True
    return False


def _read_until(
    finished: Callable[[bytes], bool], lines: Lines, cap: float, chunks: list[bytes]
) -> str:
    """Read until finished(chunk) says so: "" then, "error" at EOF, "timeout" past the cap."""
    deadline = time.monotonic() + cap
    while True:
        data = lines.chunk(deadline)
        if data is None:
            return "timeout"
        if not data:
            return "error"
        chunks.append(data)
        if finished(data):
            return ""


def _read_to_exit(
    proc: subprocess.Popen[bytes], lines: Lines, cap: float, chunks: list[bytes]
) -> tuple[int, str]:
    """Read until EOF, polling VmHWM meanwhile (the last reading before exit is the peak,
    near enough): (peak KiB, "" or "timeout")."""
    deadline = time.monotonic() + cap
    peak = 0
    while not lines.eof:
        if time.monotonic() >= deadline:
            return peak, "timeout"
        data = lines.chunk(min(deadline, time.monotonic() + 0.02))
        if data:
            chunks.append(data)
        try:
            peak = max(peak, proc_status_kib(proc.pid, "VmHWM"))
        except OSError:
            pass
    return peak, ""


def _grow_pipe(fd: int, size: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, size)  # F_SETPIPE_SZ
    except OSError:
        pass


def kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group (it was started in a session of its own) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
    proc.wait()


def reap(proc: subprocess.Popen[bytes], timeout: float = 30) -> resource.struct_rusage | None:
    """wait4 the child: its own CPU times. (Not its ru_maxrss: Linux carries the forking
    parent's high-water mark across exec, so peak RSS is read from /proc VmHWM instead.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        time.sleep(0.01)
    kill(proc)
    return None


def tail(err: Any) -> str:
    """The last three lines a child wrote to its stderr file."""
    try:
        err.seek(0)
        text: str = err.read().decode(errors="replace")
    except (OSError, ValueError):
        return ""
    return " | ".join(text.strip().splitlines()[-3:])
