"""The daemon: wiring and lifecycle, from sources to transfer.done lines.

Builds the rooms and connects them (sources -> intake -> jobs -> engine ->
driver; everything logs), handles signals, drains on stop, aborts, and maps
how a run ended to an exit status. It holds no protocol logic and no
parsing, never imports pyuv itself (driver.py does) and never calls the
engine from inside an engine callback.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Callable, MutableMapping, Sequence
from contextlib import ExitStack
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from hiperfifo import __version__, logs, systemd
from hiperfifo.cli import EXIT_USAGE
from hiperfifo.config import Config
from hiperfifo.driver import Driver, OnDone
from hiperfifo.engine import Message, Multi
from hiperfifo.intake import RETRY_EVERY, Intake
from hiperfifo.jobs import FEED_PER_CONNECTION, Jobs, Phase, connection_budget
from hiperfifo.journal import Journal, JournalError, NullJournal
from hiperfifo.output import Output, OutputError, make_output
from hiperfifo.sources import redis as redis_source
from hiperfifo.sources.base import Loop, Source
from hiperfifo.sources.fifo import FifoError, FifoSource, open_fifo

_RUNNING = Phase.RUNNING  # a plain name: an enum member lookup costs ~1,000 instructions
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_ABORTED = 130


class EventLoop(Loop, Protocol):
    """What the daemon needs of its loop: driver.Driver, or a test's loop in-process."""

    def on_signal(self, signum: int, callback: Callable[[int], None]) -> object: ...

    def every_iteration(self, callback: Callable[[], None]) -> object: ...

    def before_waiting(self, callback: Callable[[], None]) -> object: ...

    def collect(self) -> None: ...

    def run(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class Daemon:
    """One run of the service: reads its sources, runs transfers, stops cleanly."""

    def __init__(
        self,
        config: Config,
        sources: Sequence[Source],
        output: Output,
        journal: Journal | NullJournal | None = None,
        notifier: systemd.Notifier | None = None,
        watchdog: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        driver: Callable[[Multi, OnDone], EventLoop] = Driver,
    ) -> None:
        self._config = config
        self._sources = list(sources)
        self._journal = journal if journal is not None else NullJournal()
        self._log = log = logs.get()
        connections = connection_budget(config.max_total_connections, log)
        self._multi = Multi(
            max_total_connections=connections,
            max_host_connections=config.max_host_connections,
        )
        self._driver = driver(self._multi, self._finished)
        self.jobs = Jobs(
            config,
            self._multi,
            self._driver.alarm,
            output,
            self._journal,
            log,
            clock,
            feed_limit=connections * FEED_PER_CONNECTION,
        )
        self.intake = Intake(
            self.jobs,
            self._journal,
            log,
            clock,
            config.max_queued,
            self._begin_stop,
            self._lost,
            alarm=self._driver.alarm,
        )
        self.intake.sources = self.jobs.sources = self._sources  # Pending tuples number them
        self._status = systemd.StatusReporter(
            notifier or systemd.Notifier(None), watchdog, self._status_text, log
        )
        self._exit = EXIT_OK
        self._stopping: str | None = None  # why the drain began (stop, SIGTERM, SIGINT...)

    def _status_text(self) -> str:
        """STATUS= for systemd: the transfers, then what a source adds (a stream's counts)."""
        parts = [self.jobs.status(), *(source.status() for source in self._sources)]
        return "; ".join(part for part in parts if part)

    def __repr__(self) -> str:
        return f"<Daemon {self.jobs!r} {self.intake!r}>"

    def run(self) -> int:
        """Serve until stopped; the exit status."""
        driver, intake = self._driver, self.intake
        for source in self._sources:
            source.start(driver, intake)
        driver.on_signal(signal.SIGTERM, self._on_signal)
        driver.on_signal(signal.SIGINT, self._on_signal)
        driver.on_signal(signal.SIGHUP, self._on_hangup)
        self._status.start(driver)
        if self._journal.durable:
            driver.every_iteration(intake.flush_journal)
            driver.every(RETRY_EVERY, intake.retry_held)
        described = {k: v for source in self._sources for k, v in source.describe().items()}
        self._log.info(
            "daemon.started",
            **described,
            pid=os.getpid(),
            version=__version__,
            **self._config.summary(),
        )
        if self._config.insecure:
            self._log.warning("daemon.insecure", reason="--insecure: TLS certificates unchecked")
        for source in self._sources:
            if source.journaled:  # what the journal holds unfinished from an earlier run
                intake.resume(source)
                break
        driver.before_waiting(logs.flush)  # lines reach the log before the loop sleeps
        try:
            with logs.batched():
                driver.run()
        finally:
            self._multi.close()
            driver.close()
        self.intake.sum_rejections(math.inf)  # rejections still counted get their line
        jobs = self.jobs
        kept = {"deferred": jobs.deferred} if self._journal.durable else {}
        self._log.info("daemon.stopped", done=jobs.done, failed=jobs.failed, **kept)
        return self._exit

    def _finished(self, messages: list[Message]) -> None:
        """The driver's report of finished transfers (after the engine call returned).

        Called once per engine call that finished something (~once per URL): the sources
        are paced only when what pace() decides on changed here, the queue's length (the
        engine was fed) or the phase (stopping); every other change paces them itself.
        """
        jobs = self.jobs
        queued = len(jobs.queue)
        jobs.finished(messages)
        if len(jobs.queue) != queued or jobs.phase is not _RUNNING:
            self.intake.pace()
        jobs.remaining()
        if jobs.phase is not _RUNNING and not jobs.unfinished:
            self._driver.stop()

    # -- signals --

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.jobs.phase != Phase.RUNNING:
            # Ctrl-C during a drain aborts it, whatever began the drain (`stop`, SIGTERM)
            why = (
                "a second SIGINT"
                if self._stopping == name
                else f"{name} during the drain ({self._stopping})"
            )
            self._log.warning("daemon.aborting", reason=why, running=self.jobs.unfinished)
            self._exit = EXIT_ABORTED
            self._abort(f"aborted by {why}")
        else:
            self._begin_stop(name)

    def _on_hangup(self, _signum: int) -> None:
        """SIGHUP (systemctl reload): reopen --log-file, e.g. after logrotate renamed it."""
        try:
            path = logs.reopen()
        except OSError as exc:
            self._log.error("daemon.reload_failed", error=f"--log-file: {exc.strerror or exc}")
            return
        self._log.info("daemon.reloaded", log_file=path)

    # -- stopping: drain, then abort what is left --

    def _lost(self, reason: str) -> None:
        """A source cannot go on (its FIFO is gone and cannot be recreated): exit 2."""
        self._exit = EXIT_USAGE
        self._begin_stop(reason)

    def _begin_stop(self, reason: str) -> None:
        jobs = self.jobs
        if jobs.phase != Phase.RUNNING:
            return
        jobs.phase = Phase.DRAINING
        self._stopping = reason
        for source in self._sources:
            source.stop()
        self._log.info("daemon.stopping", reason=reason, running=jobs.unfinished)
        self._status.stopping(reason)
        self.intake.drop_held()
        timeout = self._config.shutdown_timeout
        jobs.drain(timeout)
        if not jobs.unfinished:
            self._driver.stop()
            return
        self._driver.call_later(timeout, self._drain_expired)

    def _drain_expired(self) -> None:
        self._abort(f"aborted: --shutdown-timeout ({self._config.shutdown_timeout:g} s)")

    def _abort(self, why: str) -> None:
        """End every unfinished transfer now (jobs.abort), then the loop."""
        self.jobs.phase = Phase.ABORTING  # what finishes below is not retried, nothing starts
        self._driver.collect()  # anything finished but not yet reported keeps its own result
        self.jobs.abort(why)
        self._driver.stop()


def run(config: Config, environ: MutableMapping[str, str] | None = None) -> int:
    """Configure logs, open the FIFO, the journal and the output, serve; the exit status.

    `environ` (cli.py passes os.environ) holds systemd's variables: JOURNAL_STREAM,
    NOTIFY_SOCKET, WATCHDOG_USEC/PID and LISTEN_* (removed from it once read).
    """
    environ = environ if environ is not None else {}
    try:
        stream = logs.open_stream(config.log_file)
    except OSError as exc:
        print(f"hiperfifo: error: --log-file {config.log_file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(config.log_format, config.log_level, stream, environ)
    log = logs.get()
    passed = systemd.take_listen_fds(environ, os.getpid())
    with ExitStack() as opened:  # closed in reverse order, however this ends
        try:
            output = make_output(config.output)
            opened.callback(output.close)
            journal = Journal(config.state_dir) if config.state_dir is not None else NullJournal()
            opened.callback(journal.close)
            if (warning := journal.warning()) is not None:
                if config.strict:
                    return _usage_error(log, f"{warning} (refused: --strict)")
                log.warning("state.insecure", state_dir=str(config.state_dir), reason=warning)
            fifo = open_fifo(config.fifo, config.fifo_mode, passed[0].fd if passed else None)
        except (OutputError, JournalError, FifoError) as exc:
            return _usage_error(log, str(exc))
        source = FifoSource(
            fifo, config.fifo_mode, config.max_url_length, log, config.token_timeout
        )
        opened.callback(source.close)  # the current FIFO: it may have been recreated
        sources: list[Source] = [source]
        if config.redis is not None:  # redis-py is imported only now
            try:
                shared = redis_source.load()(config, log)
            except redis_source.RedisMissing as exc:
                return _usage_error(log, str(exc))
            opened.callback(shared.close)  # after the loop: the last results, then acks
            sources.append(shared)
        if (warning := fifo.warning()) is not None:
            if config.strict:
                return _usage_error(log, f"{warning} (refused: --strict)")
            log.warning("fifo.insecure", fifo=str(fifo.path), reason=warning)
        try:
            notifier = systemd.Notifier.from_environ(environ)
            watchdog = systemd.watchdog_interval(environ, os.getpid())
            return Daemon(config, sources, output, journal, notifier, watchdog).run()
        except Exception:
            log.exception("daemon.crashed")
            return EXIT_INTERNAL


def _usage_error(log: FilteringBoundLogger, message: str) -> int:
    print(f"hiperfifo: error: {message}", file=sys.stderr)
    log.error("daemon.failed", error=message)
    return EXIT_USAGE
