"""Where bodies go: discarded (hiperfifo.c's way) or one safe file per transfer in DIR.

Owns file naming (from the URL's last path segment, sanitised: never a path,
never hidden, never outside DIR), temporary names, rename-without-clobber
and write failures. Everything goes through one directory descriptor, so a
renamed or replaced DIR path cannot redirect writes. It never raises into the
engine: a failed write returns a short count, which the engine turns into
WRITE_ERROR, and the error text is kept for the log.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

MAX_NAME = 200
MAX_SUFFIX = 100_000
DEFAULT_NAME = "index.html"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class OutputError(Exception):
    """The output directory cannot be used at all (a startup error)."""


def safe_name(url: str) -> str:
    """A file name from the URL's last path segment: [A-Za-z0-9._-] only, no leading dot."""
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    segment = path.rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", segment).lstrip(".")[:MAX_NAME]
    return name or DEFAULT_NAME


class Sink:
    """Where one transfer's body goes; this one discards it."""

    error: str | None = None
    path: str | None = None

    def write(self, data: bytes) -> int:
        """Take a chunk; return len(data) when all of it was taken."""
        return len(data)

    def finish(self, ok: bool) -> bool:
        """Complete (ok) or abandon the body; False when completing failed (see .error)."""
        return True


_DISCARD = Sink()


class FileSink(Sink):
    """A body written to a temporary name in DIR, renamed (never clobbering) when complete."""

    def __init__(self, output: DirectoryOutput, name: str, tag: str) -> None:
        self._output = output
        self._name = name
        self._temp = f".{name[: MAX_NAME - 40]}.{tag}.part"
        self._fd = -1
        self._created = False

    def _open(self) -> None:
        if self._fd < 0:
            self._fd = os.open(self._temp, _CREATE, 0o644, dir_fd=self._output.dir_fd)
            self._created = True

    def write(self, data: bytes) -> int:
        if self.error is not None:
            return 0
        try:
            self._open()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self._fail(exc)
            return 0
        return len(data)

    def finish(self, ok: bool) -> bool:
        if not ok or self.error is not None:
            self._discard()
            return self.error is None
        try:
            self._open()
            os.close(self._fd)
            self._fd = -1
            final = self._output.publish(self._temp, self._name)
            self._created = False
            self.path = str(self._output.path / final)
        except OSError as exc:
            self._fail(exc)
            return False
        return True

    def _fail(self, exc: OSError) -> None:
        self.error = f"writing {self._output.path / self._name}: {exc.strerror or exc}"
        self._discard()

    def _discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._created:
            self._created = False
            try:
                os.unlink(self._temp, dir_fd=self._output.dir_fd)
            except OSError:
                pass


class Output:
    """`--output discard`: every transfer gets a discarding Sink."""

    # The one Sink every transfer gets; None: sink() makes one each (a subclass that
    # overrides sink() sets it to None, or jobs.py hands out this one without asking).
    # jobs.py gives the engine no write_function for it: the engine drops the body itself.
    shared: Sink | None = _DISCARD

    def sink(self, transfer_id: int, url: str) -> Sink:
        return _DISCARD  # holds no state: one for every transfer

    def close(self) -> None:
        """Nothing to release."""


class DirectoryOutput(Output):
    """`--output DIR`: one file per transfer, named from the URL, never overwriting."""

    shared = None

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            self.dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise OutputError(f"--output {path}: {exc.strerror or exc}") from exc
        self._next_suffix: dict[str, int] = {}
        self._tag = str(os.getpid())

    def sink(self, transfer_id: int, url: str) -> Sink:
        return FileSink(self, safe_name(url), f"{self._tag}-{transfer_id}")

    def publish(self, temp: str, name: str) -> str:
        """Give `temp` its final name: `name`, else `name.N`; never replaces a file."""
        suffix = self._next_suffix.get(name, 0)
        while suffix <= MAX_SUFFIX:
            final = name if suffix == 0 else f"{name}.{suffix}"
            try:
                os.link(temp, final, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            except FileExistsError:
                suffix += 1
                continue
            self._next_suffix[name] = suffix + 1
            os.unlink(temp, dir_fd=self.dir_fd)
            return final
        raise FileExistsError(f"no free name for {name}")

    def close(self) -> None:
        os.close(self.dir_fd)


def make_output(path: Path | None) -> Output:
    """The Output for `--output`: None means discard."""
    return Output() if path is None else DirectoryOutput(path)
