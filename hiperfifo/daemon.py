"""The daemon: wiring and lifecycle, from FIFO tokens to transfer.done lines.

Owns transfer ids, the table of accepted transfers, the log events of
docs/daemon.md, draining and aborting on stop/SIGTERM/SIGINT, and exit
statuses. It holds no protocol logic and no parsing (fifo.py splits, the
engine fetches), never imports pyuv (driver.py does) and never calls the
engine from inside an engine callback.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import resource
import signal
import sys
import time
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from structlog.typing import FilteringBoundLogger

from hiperfifo import __version__, logs, systemd
from hiperfifo.config import Config
from hiperfifo.driver import Driver, Handle, Watch
from hiperfifo.engine import Code, Easy, InfoType, Message, Multi, NetworkPolicy
from hiperfifo.sources.fifo import (
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
from hiperfifo.journal import Journal, JournalError
from hiperfifo.output import Output, OutputError, Sink, make_output
from hiperfifo.retry import RetryAfter, RetryPolicy, RetryQueue

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_ABORTED = 130
READ_CHUNK = 8 * 1024  # FIFO input per loop iteration: ~200 URLs, ~25 ms of engine work
PROGRESS_EVERY = 1.0  # seconds between transfer.progress lines of one transfer
REMAINING_EVERY = 1.0  # seconds between queue.remaining lines (and always at 0)
# Accepted URLs wait in the daemon as plain (id, url, accepted) tuples, ~200 bytes
# each, and are handed to the engine only while it holds fewer than this many
# transfers per allowed connection: an Easy and its Transfer cost several KiB,
# and 100,000 of them in the engine's own queue cost 250 MB (measured).
FEED_PER_CONNECTION = 16
# ... and topped up only once a quarter of that bound has finished: each add_handle asks
# for a 0 ms timer, and one batch of adds costs one timer and one loop iteration where one
# add per finished transfer costs one each (33,000 timer callbacks for 20,000 URLs).
FEED_BATCH_DIVISOR = 4
RETRY_EVERY = 1.0  # seconds between tries to write the journal again after a failure
FIFO_CHECK_EVERY = 1.0  # seconds between checks that the FIFO path still leads to our FIFO
FD_RESERVE = 32  # descriptors kept for all but connections: FIFO, logs, journal, loop, resolver
STATUS_EVERY = 1.0  # seconds between systemd STATUS= updates (only when it changed)
TIMER_SLACK = 0.002  # libuv timers have ms resolution: a retry due this soon is due now


@dataclass(eq=False)
class Transfer:
    """One accepted URL, from transfer.added to transfer.done."""

    id: int
    url: str
    sink: Sink
    log: FilteringBoundLogger
    started: float = field(default_factory=time.monotonic)  # when the URL was accepted
    last_progress: float = 0.0  # 0: no body byte yet (the clock starts at the first one)
    easy: Easy | None = None  # the current (or, while waiting for a retry, the last) attempt
    attempt: int = 1
    first_try: float = field(default_factory=time.monotonic)  # when attempt 1 began
    result: Code | None = None  # the last attempt's result, while waiting for a retry
    retry_after: RetryAfter | None = None  # the header_function catching Retry-After

    def progress(self, dltotal: int, dlnow: int, ultotal: int, ulnow: int) -> bool:
        """The engine's progress callback: one transfer.progress line a second at most.

        The first line comes a second after the first body byte, so a short
        transfer logs none (and time spent queued does not count).
        """
        now = time.monotonic()
        if not self.last_progress:
            self.last_progress = now
        elif now - self.last_progress >= PROGRESS_EVERY:
            self.last_progress = now
            self.log.info("transfer.progress", bytes=dlnow, total=dltotal or None)
        return False

    def debug(self, kind: InfoType, text: str) -> None:
        """The engine's debug callback (CURLOPT_DEBUGFUNCTION), only at --log-level debug:
        state changes as text, request and response heads as lines, credentials hidden."""
        if kind is InfoType.STATE:
            self.log.debug("transfer.debug", kind=str(kind), text=text)
        else:
            self.log.debug("transfer.debug", kind=str(kind), head=logs.redact_head(text))


class Daemon:
    """One run of the service: reads the FIFO, runs transfers, stops cleanly."""

    def __init__(
        self,
        config: Config,
        fifo: Fifo,
        output: Output,
        journal: Journal | None = None,
        notifier: systemd.Notifier | None = None,
        watchdog: float | None = None,
    ) -> None:
        self._config = config
        self._fifo = fifo
        self._output = output
        self._journal = journal
        self._log = logs.get()
        self._max_connections = connection_budget(config.max_total_connections, self._log)
        self._multi = Multi(
            max_total_connections=self._max_connections,
            max_host_connections=config.max_host_connections,
        )
        self._driver = Driver(self._multi, self._finished)
        self._tokens = Tokenizer(config.max_url_length)
        self._policy = network_policy(config)
        self._queue: deque[tuple[int, str, float]] = deque()  # accepted, not yet in the engine
        self._feed_limit = self._max_connections * FEED_PER_CONNECTION
        self._feed_low = self._feed_limit - max(1, self._feed_limit // FEED_BATCH_DIVISOR)
        self._transfers: dict[int, Transfer] = {}  # in the engine
        self._next_id = journal.next_id() if journal is not None else 1
        self._done = 0
        self._failed = 0
        self._deferred = 0  # with --state-dir: unfinished at abort, kept for the next start
        self._stopping: str | None = None
        self._aborting = False
        self._exit = EXIT_OK
        self._input: Watch | None = None
        self._deadline: Handle | None = None
        self._last_remaining = 0.0
        self._held: list[Url | Stop | Rejected] = []  # read, but not yet recorded (disk full)
        self._refused: str | None = None  # why input is refused, while the journal fails
        self._refusal_logged = False
        self._backlogged = False  # input paused: --max-queued URLs wait
        self._journal_failing = False  # the last flush failed (logged once)
        self._proxy_env = dict(config.proxy_environ)
        self._retry = RetryPolicy(config.retry, config.retry_max_time, config.retry_delay)
        self._waiting = RetryQueue()  # ids of transfers waiting for their next attempt
        self._retry_alarm = self._driver.alarm(self._retry_due)
        self._notifier = notifier or systemd.Notifier(None)
        self._watchdog = watchdog
        self._last_status = ""
        self._notify_failed = False
        self._drain_until = math.inf  # on stop: no retry may start after this (monotonic)
        self._easy_options = easy_options(config, self._proxy_env, self._policy)
        # transfer.progress is an info line: below that level nobody needs the callback
        self._progress = config.log_level in ("debug", "info")
        self._debug = config.log_level == "debug"

    @property
    def unfinished(self) -> int:
        """Accepted transfers without their transfer.done yet."""
        return len(self._transfers) + len(self._queue)

    def run(self) -> int:
        """Serve until stopped; the exit status."""
        self._input = self._driver.watch_readable(self._fifo.fd, self._read_fifo)
        self._driver.on_signal(signal.SIGTERM, self._on_signal)
        self._driver.on_signal(signal.SIGINT, self._on_signal)
        self._driver.on_signal(signal.SIGHUP, self._on_hangup)
        self._watch_service()
        if self._journal is not None:
            self._driver.every_iteration(self._flush_journal)
            self._driver.every(RETRY_EVERY, self._retry_held)
        if self._fifo.lost() is None:  # else its path is unknown (systemd's, renamed)
            self._driver.every(FIFO_CHECK_EVERY, self._check_fifo)
        self._log.info(
            "daemon.started",
            fifo=str(self._fifo.path),
            pid=os.getpid(),
            version=__version__,
            created_fifo=self._fifo.created,
            **self._config.summary(),
        )
        if self._config.insecure:
            self._log.warning("daemon.insecure", reason="--insecure: TLS certificates unchecked")
        self._resume()
        self._driver.before_waiting(logs.flush)  # lines reach the log before the loop sleeps
        try:
            with logs.batched():
                self._driver.run()
        finally:
            self._multi.close()
            self._driver.close()
            self._fifo.close()  # the current one: it may have been recreated
            if self._journal is not None:
                self._journal.close()
        kept = {"deferred": self._deferred} if self._journal is not None else {}
        self._log.info("daemon.stopped", done=self._done, failed=self._failed, **kept)
        return self._exit

    def _resume(self) -> None:
        """Queue what the journal holds unfinished from an earlier run, oldest first."""
        if self._journal is None:
            return
        now = time.monotonic()
        for transfer_id, url in self._journal.unfinished():
            self._log.info("transfer.resumed", id=transfer_id, url=redact(url))
            self._queue.append((transfer_id, url, now))
        self._feed()

    # -- input --

    def _read_fifo(self) -> None:
        data = self._fifo.read(READ_CHUNK)
        self._take(self._tokens.feed(data))
        self._feed()
        self._pace_input()

    def _take(self, items: list[Url | Stop | Rejected]) -> None:
        """Accept runs of URLs (one journal transaction each), act on stop, log rejections."""
        if self._refused is not None:  # behind what is held already, in order
            self._held.extend(items)
            return
        start = 0
        for i, item in enumerate(items):
            if isinstance(item, Url) and self._stopping is None:
                continue
            if not self._accept(items, start, i):
                return
            start = i + 1
            if self._stopping is not None:
                self._reject("daemon is stopping", _shown(item))
            elif isinstance(item, Stop):
                self._begin_stop("stop")
            elif isinstance(item, Rejected):
                self._reject(item.reason, item.token)
        self._accept(items, start, len(items))

    def _accept(self, items: list[Url | Stop | Rejected], start: int, end: int) -> bool:
        """Record the URLs items[start:end], then log transfer.added; False: held, refused."""
        urls = [item.url for item in items[start:end] if isinstance(item, Url)]
        if not urls:
            return True
        rows = [(self._next_id + n, url) for n, url in enumerate(urls)]
        if self._journal is not None:
            try:
                self._journal.record(rows)
            except JournalError as exc:
                self._refuse(items[start:], str(exc))
                return False
        self._next_id += len(rows)
        now = time.monotonic()
        for transfer_id, url in rows:
            self._log.info("transfer.added", id=transfer_id, url=redact(url))
            self._queue.append((transfer_id, url, now))
        return True

    def _reject(self, reason: str, token: str) -> None:
        self._log.warning("input.rejected", reason=reason, token=token)

    # -- input refused while the journal cannot be written, paused over a backlog --

    def _refuse(self, held: list[Url | Stop | Rejected], why: str) -> None:
        """Keep what was read but not recorded, stop reading (writers block), retry later."""
        self._held.extend(held)
        self._refused = why
        if not self._refusal_logged:
            self._refusal_logged = True
            self._log.error(
                "input.refused", reason=f"cannot record accepted URLs: {why}", held=len(held)
            )
        self._pace_input()

    def _retry_held(self) -> None:
        """Every RETRY_EVERY s while refused: record the held input; on success read again."""
        if self._refused is None:
            return
        held, self._held, self._refused = self._held, [], None
        self._take(held)
        if self._refused is not None:
            return
        self._refusal_logged = False
        self._log.info("input.resumed", reason="the state directory is writable again")
        self._feed()
        self._pace_input()

    # -- the FIFO path: deleted or replaced while we run --

    def _check_fifo(self) -> None:
        """Every FIFO_CHECK_EVERY s: recreate a deleted FIFO; stop (exit 2) if we cannot."""
        fifo = self._fifo
        why = fifo.lost()
        if why is None or self._stopping is not None:
            return
        fields = {"fifo": str(fifo.path), "reason": why}
        if fifo.adopted or not (why == "deleted" or why.endswith("FIFO")):
            self._log.error("fifo.lost", **fields, action="stopping, exit status 2")
            self._exit = EXIT_USAGE
            self._begin_stop("fifo lost")
            return
        try:
            new = open_fifo(fifo.path, self._config.fifo_mode)
        except FifoError as exc:
            self._log.error("fifo.lost", **fields, error=str(exc), action="stopping (2)")
            self._exit = EXIT_USAGE
            self._begin_stop("fifo lost")
            return
        self._switch_fifo(new)
        self._log.warning("fifo.recreated", **fields, created=new.created)
        if (warning := new.warning()) is not None:
            self._log.warning("fifo.insecure", fifo=str(new.path), reason=warning)

    def _switch_fifo(self, new: Fifo) -> None:
        """Read what is left in the old FIFO, close it, and read the new one from now on."""
        old, self._fifo = self._fifo, new
        while data := old.read(READ_CHUNK):
            self._take(self._tokens.feed(data))
        self._take(self._tokens.feed(b"\n"))  # a token cut off in the old FIFO ends there
        old.close()  # not unlinked: the path is no longer the old FIFO's
        if self._input is not None:
            self._input.stop()
        self._input = self._driver.watch_readable(new.fd, self._read_fifo)
        self._feed()
        self._pace_input()

    def _pace_input(self) -> None:
        """Read the FIFO only while not stopping, not refused and under --max-queued."""
        if self._input is None:
            return
        limit = self._config.max_queued
        if not self._backlogged and len(self._queue) >= limit:
            self._backlogged = True
            self._log.info("input.paused", reason="--max-queued reached", queued=len(self._queue))
        elif self._backlogged and len(self._queue) <= limit // 2:
            self._backlogged = False
            self._log.info("input.resumed", reason="backlog halved", queued=len(self._queue))
        if self._stopping is not None or self._refused is not None or self._backlogged:
            self._input.pause()
        else:
            self._input.resume()

    def _flush_journal(self) -> None:
        """Once per loop iteration: delete the ids whose transfer.done was logged."""
        assert self._journal is not None
        if not self._journal.unflushed:
            return
        try:
            self._journal.flush()
        except JournalError as exc:
            if not self._journal_failing and self._refused is None:
                self._log.error(
                    "journal.failed", error=str(exc), unflushed=self._journal.unflushed
                )
            self._journal_failing = True
        else:
            self._journal_failing = False

    # -- the engine's queue --

    def _feed(self) -> None:
        """Hand queued URLs to the engine, oldest first, up to the bound, in batches."""
        if len(self._transfers) > self._feed_low:
            return
        while self._queue and len(self._transfers) < self._feed_limit and not self._aborting:
            transfer_id, url, accepted = self._queue.popleft()
            self._start(transfer_id, url, accepted)

    def _start(self, transfer_id: int, url: str, accepted: float) -> None:
        sink = self._output.sink(transfer_id, url)
        shown = redact(url)
        log = self._log.bind(id=transfer_id, url=shown)
        transfer = Transfer(transfer_id, url, sink, log, started=accepted)
        self._transfers[transfer_id] = transfer
        self._attempt(transfer)

    def _attempt(self, transfer: Transfer) -> None:
        """Hand one attempt of `transfer` to the engine: a new Easy each time."""
        transfer.retry_after = RetryAfter() if self._retry.retries else None
        transfer.easy = Easy(
            transfer.url,
            write_function=transfer.sink.write,
            header_function=transfer.retry_after,
            progress_function=transfer.progress if self._progress else None,
            debug_function=transfer.debug if self._debug else None,
            private=transfer,
            **self._easy_options,
        )
        self._multi.add_handle(transfer.easy)

    # -- completion --

    def _finished(self, messages: list[Message]) -> None:
        for message in messages:
            transfer: Transfer = message.easy.private
            self._multi.remove_handle(message.easy)
            result = Code(message.result)
            if not self._retry_later(transfer, result):
                self._report(transfer, result)
        self._feed()
        self._pace_input()
        self._remaining()
        if self._stopping is not None and not self.unfinished:
            self._driver.stop()

    def _report(self, transfer: Transfer, result: Code, error: str | None = None) -> None:
        """Log the one transfer.done line of this transfer and forget it."""
        self._transfers.pop(transfer.id, None)
        easy = transfer.easy if transfer.easy is not None else Easy(transfer.url)
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
            "attempts": transfer.attempt,
        }
        if transfer.attempt > 1:  # every attempt and every wait between them
            fields["elapsed"] = round(time.monotonic() - transfer.first_try, 6)
        if transfer.sink.path:
            fields["file"] = transfer.sink.path
        self._done += 1
        if result == Code.OK:
            transfer.log.info("transfer.done", **fields)
        else:
            self._failed += 1
            transfer.log.warning("transfer.done", **fields)
        if self._journal is not None:
            self._journal.finish(transfer.id)
        transfer.easy = None  # break Transfer <-> Easy: freed by refcount, not by the GC

    def _remaining(self) -> None:
        now = time.monotonic()
        running = self.unfinished
        if running == 0 or now - self._last_remaining >= REMAINING_EVERY:
            self._last_remaining = now
            self._log.info("queue.remaining", running=running, queued=len(self._queue))

    # -- retries (--retry): a transient failure waits, then a new attempt starts --

    def _retry_later(self, transfer: Transfer, result: Code) -> bool:
        """Log transfer.retry and wait, when `result` is transient and retries are left."""
        easy = transfer.easy
        status = easy.response_code if easy is not None else None
        if not self._retry.retries or self._aborting or easy is None:
            return False
        if not self._retry.is_transient(result, status or None):
            return False
        now = time.monotonic()
        asked = transfer.retry_after.seconds if transfer.retry_after is not None else None
        delay = self._retry.next_delay(
            transfer.attempt, now - transfer.first_try, asked, random.random()
        )
        if delay is None or now + delay > self._drain_until:
            return False
        transfer.result = result
        transfer.log.info(
            "transfer.retry",
            attempt=transfer.attempt,
            result=int(result),
            result_name=result.name,
            status=status or None,
            error=easy.error or "",
            delay=round(delay, 3),
            retry_after=asked,
        )
        self._waiting.push(transfer.id, time.monotonic() + delay)
        self._arm_retries()
        return True

    def _retry_due(self) -> None:
        """The retry alarm: start every attempt that is due, then wait for the next."""
        for transfer_id in self._waiting.pop_due(time.monotonic() + TIMER_SLACK):
            transfer = self._transfers.get(transfer_id)
            if transfer is None or self._aborting:
                continue
            transfer.sink.finish(False)  # the failed attempt's body is not kept
            transfer.sink = self._output.sink(transfer.id, transfer.url)
            transfer.attempt += 1
            transfer.result = None
            self._attempt(transfer)
        self._arm_retries()

    def _arm_retries(self) -> None:
        due = self._waiting.next_due()
        if due is None:
            self._retry_alarm.cancel()
        else:
            self._retry_alarm.set(due - time.monotonic())

    def _end_waiting(self, after: float = -math.inf) -> None:
        """Transfers whose next attempt is due after `after` end now, with their last result."""
        for transfer_id in self._waiting.pop_later(after):
            transfer = self._transfers.get(transfer_id)
            if transfer is not None and transfer.result is not None:
                self._report(transfer, transfer.result)
        self._arm_retries()

    # -- systemd: READY, STATUS, STOPPING, WATCHDOG (nothing without $NOTIFY_SOCKET) --

    def _watch_service(self) -> None:
        """Tell systemd READY=1 from inside the running loop; then STATUS and WATCHDOG pings."""
        if not self._notifier.enabled:
            return
        self._driver.call_later(0, lambda: self._notify(READY=1, STATUS=self._status()))
        self._driver.every(STATUS_EVERY, self._update_status)
        if self._watchdog is not None:
            self._driver.every(self._watchdog, lambda: self._notify(WATCHDOG=1))

    def _status(self) -> str:
        self._last_status = (
            f"{len(self._transfers) - len(self._waiting)} running, {len(self._queue)} queued, "
            f"{len(self._waiting)} waiting to retry, {self._done} done, {self._failed} failed"
        )
        return self._last_status

    def _update_status(self) -> None:
        previous = self._last_status
        if self._status() != previous:
            self._notify(STATUS=self._last_status)

    def _notify(self, **fields: str | int) -> None:
        if self._notifier.send(**fields) or self._notify_failed:
            return
        self._notify_failed = True  # one line, not one a second
        self._log.warning("daemon.notify_failed", error=self._notifier.error)

    def _on_hangup(self, _signum: int) -> None:
        """SIGHUP (systemctl reload): reopen --log-file, e.g. after logrotate renamed it."""
        try:
            path = logs.reopen()
        except OSError as exc:
            self._log.error("daemon.reload_failed", error=f"--log-file: {exc.strerror or exc}")
            return
        self._log.info("daemon.reloaded", log_file=path)

    # -- stopping --

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self._stopping is not None:
            self._log.warning("daemon.aborting", reason=name, running=self.unfinished)
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
        self._log.info("daemon.stopping", reason=reason, running=self.unfinished)
        if self._notifier.enabled:
            self._notify(STOPPING=1, STATUS=f"stopping ({reason}): {self._status()}")
        self._drop_held()
        timeout = self._config.shutdown_timeout
        self._drain_until = time.monotonic() + timeout
        self._end_waiting(after=self._drain_until)  # retries sooner than that still happen
        if not self.unfinished:
            self._driver.stop()
            return
        self._deadline = self._driver.call_later(timeout, self._drain_expired)

    def _drain_expired(self) -> None:
        self._abort_all(f"aborted: --shutdown-timeout ({self._config.shutdown_timeout:g} s)")

    def _abort_all(self, why: str) -> None:
        """Remove every unfinished transfer; each gets its transfer.done (42), or with
        --state-dir stays in the journal for the next start (transfer.deferred)."""
        self._aborting = True
        self._driver.collect()  # anything finished but not yet reported keeps its own result
        self._end_waiting()  # not running: they keep their last attempt's result
        for transfer in list(self._transfers.values()):
            assert transfer.easy is not None
            self._multi.remove_handle(transfer.easy)
            if self._journal is not None:
                del self._transfers[transfer.id]
                transfer.sink.finish(False)
                self._defer(transfer.id, transfer.url, why)
            else:
                self._report(transfer, Code.ABORTED_BY_CALLBACK, why)
        while self._queue:
            transfer_id, url, accepted = self._queue.popleft()
            if self._journal is not None:
                self._defer(transfer_id, url, why)
                continue
            log = self._log.bind(id=transfer_id, url=redact(url))
            transfer = Transfer(transfer_id, url, Sink(), log, started=accepted)
            self._report(transfer, Code.ABORTED_BY_CALLBACK, why)
        self._remaining()
        self._driver.stop()

    def _defer(self, transfer_id: int, url: str, why: str) -> None:
        """Not finished, not forgotten: the journal keeps it and the next start resumes it."""
        self._deferred += 1
        self._log.warning(
            "transfer.deferred",
            id=transfer_id,
            url=redact(url),
            reason=f"{why}; kept for the next start",
        )

    def _drop_held(self) -> None:
        """On stop: held input gets a last try to be recorded; what still cannot be is rejected."""
        held, self._held = self._held, []
        for item in held:
            if isinstance(item, Rejected):
                self._reject(item.reason, item.token)
        urls: list[Url | Stop | Rejected] = [item for item in held if isinstance(item, Url)]
        if self._accept(urls, 0, len(urls)):
            return
        for item in self._held:
            self._reject(f"not recorded: {self._refused}", _shown(item))
        self._held = []


def run(config: Config, environ: MutableMapping[str, str] | None = None) -> int:
    """Configure logs, open the FIFO and the output, serve; the exit status.

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
    try:
        output = make_output(config.output)
    except OutputError as exc:
        return _usage_error(log, str(exc))
    try:
        journal = Journal(config.state_dir) if config.state_dir is not None else None
    except JournalError as exc:
        output.close()
        return _usage_error(log, str(exc))
    if journal is not None and (warning := journal.warning()) is not None:
        if config.strict:
            journal.close()
            output.close()
            return _usage_error(log, f"{warning} (refused: --strict)")
        log.warning("state.insecure", state_dir=str(journal.directory), reason=warning)
    try:
        fifo = open_fifo(config.fifo, config.fifo_mode, passed[0].fd if passed else None)
    except FifoError as exc:
        output.close()
        if journal is not None:
            journal.close()
        return _usage_error(log, str(exc))
    if (warning := fifo.warning()) is not None:
        if config.strict:
            fifo.close()
            output.close()
            if journal is not None:
                journal.close()
            return _usage_error(log, f"{warning} (refused: --strict)")
        log.warning("fifo.insecure", fifo=str(fifo.path), reason=warning)
    try:
        notifier = systemd.Notifier.from_environ(environ)
        watchdog = systemd.watchdog_interval(environ, os.getpid())
        return Daemon(config, fifo, output, journal, notifier, watchdog).run()
    except Exception:
        log.exception("daemon.crashed")
        return EXIT_INTERNAL
    finally:
        fifo.close()
        output.close()


def connection_budget(wanted: int, log: FilteringBoundLogger) -> int:
    """--max-total-connections, within what RLIMIT_NOFILE allows (raising the soft limit first).

    Past the descriptor limit, socket() fails and transfers end with 7; below it they wait
    for a connection slot instead.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    budget = max(1, soft - FD_RESERVE)
    log.warning(
        "daemon.limited",
        reason=f"--max-total-connections {wanted} lowered to {budget}: "
        f"the descriptor limit (ulimit -n) is {soft}",
    )
    return budget


def easy_options(
    config: Config, proxy_env: dict[str, str], policy: NetworkPolicy | None
) -> dict[str, Any]:
    """The Easy options every attempt of every transfer gets, from the command line.

    Only those that differ from Easy's defaults: twenty keyword arguments on every
    attempt cost more than the Easy they build. An empty proxy environment is no
    proxy environment (the engine then skips reading it for every hop).
    """
    options = {
        "follow_location": True,
        "max_redirs": config.max_redirs,
        "fail_on_error": config.fail,
        "connect_timeout_ms": config.connect_timeout_ms,
        "timeout_ms": config.timeout_ms,
        "low_speed_limit": config.speed_limit,
        "low_speed_time": config.speed_time,
        "verify": not config.insecure,
        "ca_file": str(config.cacert) if config.cacert else None,
        "accept_encoding": "" if config.compressed else None,
        "max_filesize": config.max_filesize,
        "proxy": config.proxy,  # None: the engine picks from proxy_env for every hop
        "noproxy": config.noproxy,
        "proxy_env": proxy_env or None,
        "network_policy": policy,
    }
    defaults = {name: p.default for name, p in inspect.signature(Easy).parameters.items()}
    return {
        name: value
        for name, value in options.items()
        if name not in defaults or value != defaults[name]
    }


def network_policy(config: Config) -> NetworkPolicy | None:
    """The engine's NetworkPolicy from --deny-network, --allow-network, --public-only."""
    deny = NetworkPolicy.from_cidrs(deny=config.deny_network).deny
    if config.public_only:
        deny = NetworkPolicy.public_internet_only().deny + deny
    allow = NetworkPolicy.from_cidrs(allow=config.allow_network).allow
    return NetworkPolicy(allow=allow, deny=deny) if allow or deny else None


def _shown(item: Url | Stop | Rejected) -> str:
    if isinstance(item, Url):
        return item.url[:SHOWN_TOKEN_CHARS]
    return "stop" if isinstance(item, Stop) else item.token


def _usage_error(log: FilteringBoundLogger, message: str) -> int:
    print(f"hiperfifo: error: {message}", file=sys.stderr)
    log.error("daemon.failed", error=message)
    return EXIT_USAGE
