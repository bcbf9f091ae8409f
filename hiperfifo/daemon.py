"""The daemon: wiring and lifecycle, from FIFO tokens to transfer.done lines.

Owns transfer ids, the table of accepted transfers, the log events of
spec/daemon.md, draining and aborting on stop/SIGTERM/SIGINT, and exit
statuses. It holds no protocol logic and no parsing (fifo.py splits, the
engine fetches), never imports pyuv (driver.py does) and never calls the
engine from inside an engine callback.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from hiperfifo import __version__, logs
from hiperfifo.config import Config
from hiperfifo.driver import Driver, Handle
from hiperfifo.engine import Code, Easy, Message, Multi
from hiperfifo.fifo import (
    SHOWN_TOKEN_CHARS,
    Fifo,
    FifoError,
    Rejected,
    Stop,
    Tokenizer,
    Url,
    open_fifo,
    redact,
)
from hiperfifo.output import Output, OutputError, Sink, make_output

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_ABORTED = 130
READ_CHUNK = 8 * 1024  # FIFO input per loop iteration: ~200 URLs, ~25 ms of engine work
PROGRESS_EVERY = 1.0  # seconds between transfer.progress lines of one transfer
REMAINING_EVERY = 1.0  # seconds between queue.remaining lines (and always at 0)
# With this many live transfers, CPython's full collections (one each time the
# heap grows by 25 %) scan the whole queue: 0.1-0.5 s stalls measured at 50k.
# Past it, the backlog is moved out of the collector's sight (gc.freeze, O(1))
# and given back (gc.unfreeze) once the queue has shrunk below half of it.
GC_FREEZE_ABOVE = 5_000


@dataclass(eq=False)
class Transfer:
    """One accepted URL, from transfer.added to transfer.done."""

    id: int
    url: str
    sink: Sink
    log: FilteringBoundLogger
    started: float = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)
    easy: Easy | None = None

    def progress(self, dltotal: int, dlnow: int, ultotal: int, ulnow: int) -> bool:
        """The engine's progress callback: one transfer.progress line a second at most."""
        now = time.monotonic()
        if now - self.last_progress >= PROGRESS_EVERY:
            self.last_progress = now
            self.log.info("transfer.progress", bytes=dlnow, total=dltotal or None)
        return False

    def debug(self, kind: str, text: str) -> None:
        """The engine's debug callback (CURLOPT_DEBUGFUNCTION), only at --log-level debug."""
        self.log.debug("transfer.debug", kind=kind, text=text)


class Daemon:
    """One run of the service: reads the FIFO, runs transfers, stops cleanly."""

    def __init__(self, config: Config, fifo: Fifo, output: Output) -> None:
        self._config = config
        self._fifo = fifo
        self._output = output
        self._log = logs.get()
        self._multi = Multi(
            max_total_connections=config.max_total_connections,
            max_host_connections=config.max_host_connections,
        )
        self._driver = Driver(self._multi, self._finished)
        self._tokens = Tokenizer(config.max_url_length)
        self._transfers: dict[int, Transfer] = {}
        self._next_id = 1
        self._done = 0
        self._failed = 0
        self._stopping: str | None = None
        self._exit = EXIT_OK
        self._input: Handle | None = None
        self._deadline: Handle | None = None
        self._last_remaining = 0.0

    def run(self) -> int:
        """Serve until stopped; the exit status."""
        self._input = self._driver.watch_readable(self._fifo.fd, self._read_fifo)
        self._driver.on_signal(signal.SIGTERM, self._on_signal)
        self._driver.on_signal(signal.SIGINT, self._on_signal)
        self._log.info(
            "daemon.started",
            fifo=str(self._fifo.path),
            pid=os.getpid(),
            version=__version__,
            created_fifo=self._fifo.created,
            **self._config.summary(),
        )
        try:
            self._driver.run()
        finally:
            self._multi.close()
            self._driver.close()
        self._log.info("daemon.stopped", done=self._done, failed=self._failed)
        return self._exit

    # -- input --

    def _read_fifo(self) -> None:
        data = self._fifo.read(READ_CHUNK)
        self._take(self._tokens.feed(data))
        if len(self._transfers) > GC_FREEZE_ABOVE:
            gc.freeze()

    def _take(self, items: list[Url | Stop | Rejected]) -> None:
        for item in items:
            if self._stopping is not None:
                self._reject("daemon is stopping", _shown(item))
            elif isinstance(item, Url):
                self._add(item.url)
            elif isinstance(item, Stop):
                self._begin_stop("stop")
            else:
                self._reject(item.reason, item.token)

    def _reject(self, reason: str, token: str) -> None:
        self._log.warning("input.rejected", reason=reason, token=token)

    def _add(self, url: str) -> None:
        transfer_id = self._next_id
        self._next_id += 1
        sink = self._output.sink(transfer_id, url)
        shown = redact(url)
        transfer = Transfer(transfer_id, url, sink, self._log.bind(id=transfer_id, url=shown))
        transfer.easy = Easy(
            url,
            write_function=sink.write,
            progress_function=transfer.progress,
            follow_location=True,
            fail_on_error=self._config.fail,
            debug_function=transfer.debug if self._config.log_level == "debug" else None,
            connect_timeout_ms=self._config.connect_timeout_ms,
            timeout_ms=self._config.timeout_ms,
            private=transfer,
        )
        self._transfers[transfer_id] = transfer
        self._multi.add_handle(transfer.easy)
        transfer.log.info("transfer.added")

    # -- completion --

    def _finished(self, messages: list[Message]) -> None:
        for message in messages:
            transfer: Transfer = message.easy.private
            self._multi.remove_handle(message.easy)
            self._report(transfer, Code(message.result))
        self._remaining()
        if gc.get_freeze_count() and len(self._transfers) < GC_FREEZE_ABOVE // 2:
            gc.unfreeze()
        if self._stopping is not None and not self._transfers:
            self._driver.stop()

    def _report(self, transfer: Transfer, result: Code, error: str | None = None) -> None:
        """Log the one transfer.done line of this transfer and forget it."""
        del self._transfers[transfer.id]
        easy = transfer.easy
        assert easy is not None
        written = transfer.sink.finish(result == Code.OK)
        if result == Code.OK and not written:
            result, error = Code.WRITE_ERROR, transfer.sink.error
        elif result == Code.WRITE_ERROR and transfer.sink.error:
            error = transfer.sink.error
        measured = time.monotonic() - transfer.started
        fields = {
            "effective_url": redact(easy.effective_url or transfer.url),
            "result": int(result),
            "result_name": result.name,
            "error": error if error is not None else (easy.error or ""),
            "status": easy.response_code or None,
            "bytes": easy.size_download,
            "elapsed": round(easy.total_time or measured, 6),
            "redirects": easy.redirect_count,
        }
        if transfer.sink.path:
            fields["file"] = transfer.sink.path
        self._done += 1
        if result == Code.OK:
            transfer.log.info("transfer.done", **fields)
        else:
            self._failed += 1
            transfer.log.warning("transfer.done", **fields)
        transfer.easy = None  # break Transfer <-> Easy: freed by refcount, not by the GC

    def _remaining(self) -> None:
        now = time.monotonic()
        running = len(self._transfers)
        if running == 0 or now - self._last_remaining >= REMAINING_EVERY:
            self._last_remaining = now
            self._log.info("queue.remaining", running=running)

    # -- stopping --

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self._stopping is not None:
            self._log.warning("daemon.aborting", reason=name, running=len(self._transfers))
            self._exit = EXIT_ABORTED
            self._abort_all("aborted by a second SIGINT")
        else:
            self._begin_stop(name)

    def _begin_stop(self, reason: str) -> None:
        if self._stopping is not None:
            return
        self._stopping = reason
        if self._input is not None:
            self._input.stop()
        self._log.info("daemon.stopping", reason=reason, running=len(self._transfers))
        if not self._transfers:
            self._driver.stop()
            return
        timeout = self._config.shutdown_timeout
        self._deadline = self._driver.call_later(timeout, self._drain_expired)

    def _drain_expired(self) -> None:
        self._abort_all(f"aborted: --shutdown-timeout ({self._config.shutdown_timeout:g} s)")

    def _abort_all(self, why: str) -> None:
        """Remove every unfinished transfer; each still gets its transfer.done (42)."""
        self._driver.collect()  # anything finished but not yet reported keeps its own result
        for transfer in list(self._transfers.values()):
            assert transfer.easy is not None
            self._multi.remove_handle(transfer.easy)
            self._report(transfer, Code.ABORTED_BY_CALLBACK, why)
        self._remaining()
        self._driver.stop()


def run(config: Config, environ: Mapping[str, str] | None = None) -> int:
    """Configure logs, open the FIFO and the output, serve; the exit status."""
    try:
        stream = logs.open_stream(config.log_file)
    except OSError as exc:
        print(f"hiperfifo: error: --log-file {config.log_file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(config.log_format, config.log_level, stream, environ or os.environ)
    log = logs.get()
    try:
        output = make_output(config.output)
    except OutputError as exc:
        return _usage_error(log, str(exc))
    try:
        fifo = open_fifo(config.fifo, config.fifo_mode)
    except FifoError as exc:
        output.close()
        return _usage_error(log, str(exc))
    try:
        return Daemon(config, fifo, output).run()
    except Exception:
        log.exception("daemon.crashed")
        return EXIT_INTERNAL
    finally:
        fifo.close()
        output.close()


def _shown(item: Url | Stop | Rejected) -> str:
    if isinstance(item, Url):
        return item.url[:SHOWN_TOKEN_CHARS]
    return "stop" if isinstance(item, Stop) else item.token


def _usage_error(log: FilteringBoundLogger, message: str) -> int:
    print(f"hiperfifo: error: {message}", file=sys.stderr)
    log.error("daemon.failed", error=message)
    return EXIT_USAGE
