"""The jobs: one `Job` per accepted URL, from transfer.added to transfer.done.

Owns the connection budget (--max-total-connections within the descriptor
limit), the queue of accepted URLs not yet in the engine, feeding the engine in
batches, each attempt's `Easy` (the options from the command line), retries
(`RetryWaits`), the transfer.done line and its fields, the counters, and
ending what is left on abort. It never reads the clock itself (one is passed
in), never imports pyuv (the retry alarm comes from the driver) and never
calls the engine from inside an engine callback (the driver hands finished
transfers over afterwards).
"""

from __future__ import annotations

import inspect
import random
import resource
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any

from structlog.typing import FilteringBoundLogger

from hiperfifo import logs
from hiperfifo.config import Config
from hiperfifo.engine import Code, Easy, InfoType, Message, Multi, NetworkPolicy
from hiperfifo.journal import Journal, NullJournal
from hiperfifo.output import Output, Sink
from hiperfifo.redact import redact
from hiperfifo.retry import Alarm, RetryAfter, RetryWaits
from hiperfifo.sources.base import Source

if TYPE_CHECKING:  # the Easy's getinfo record (easy.info)
    from hiperfifo.engine.handle import Handle

PROGRESS_EVERY = 1.0  # seconds between looks at the running transfers' bytes (progress)
REMAINING_EVERY = 1.0  # seconds between queue.remaining lines (and always at 0)
# Accepted URLs wait as plain Pending tuples, ~200 bytes each, and are handed to the
# engine only while it holds fewer than this many transfers per allowed connection:
# an Easy and its engine Transfer cost several KiB, and 100,000 of them in the engine's
# own queue cost 250 MB (measured).
FEED_PER_CONNECTION = 16
# ... and topped up only once a quarter of that bound has finished: each add_handle asks
# for a 0 ms timer, and one batch of adds costs one timer and one loop iteration where one
# add per finished transfer costs one each (33,000 timer callbacks for 20,000 URLs).
FEED_BATCH_DIVISOR = 4
# What transfer.done says of a result, looked up: Code.name is a descriptor call, int() a call.
_RESULTS = {code: (int(code), code.name) for code in Code}
# Enum members as plain names: `Code.OK` is an attribute lookup on the enum class that cost
# ~1,000 instructions (Python 3.11), more than the comparison it serves on the per-URL path.
_OK, _WRITE_ERROR = Code.OK, Code.WRITE_ERROR
FD_RESERVE = 32  # descriptors kept for all but connections: FIFO, logs, journal, loop, resolver


class Phase(Enum):
    """Where the run is: taking input, draining after stop, or ending everything now."""

    RUNNING = "running"
    DRAINING = "draining"  # stop/SIGTERM: no new input, what runs finishes
    ABORTING = "aborting"  # second SIGINT, --shutdown-timeout: nothing more starts


_ABORTING = Phase.ABORTING  # a plain name, as _OK below


# An accepted URL not yet handed to the engine: (id, url, accepted, source, entry, shown),
# where accepted is clock() when it was accepted, source the index of its Source in
# Jobs.sources, entry the source's name for it (a Redis entry id) or None, and shown the
# URL as its lines show it (redacted). A plain tuple: 100,000 of them may wait, and a
# NamedTuple costs a Python-level __new__ per URL. Numbers and strings only: the GC stops
# tracking such a tuple at its first collection (a Source in it kept every queued tuple
# in every later collection of its generation).
Pending = tuple[int, str, float, int, str | None, str]


@dataclass(eq=False, slots=True)
class Job:
    """One accepted URL, from transfer.added to transfer.done, over all its attempts.

    Its lines carry id, url (redacted) and entry as their first keys (`shown`); the
    logger is shared, not bound per job (a bound logger per URL cost more than the Job).
    """

    id: int
    url: str
    shown_url: str  # the URL as its lines show it (redacted)
    sink: Sink
    source: Source
    entry: str | None
    started: float  # when the URL was accepted
    first_try: float  # when attempt 1 began
    easy: Easy | None = None  # the current (or, while waiting for a retry, the last) attempt
    attempt: int = 1
    result: Code | None = None  # the last attempt's result, while waiting for a retry
    retry_after: RetryAfter | None = None  # the header_function catching Retry-After
    seen: int = 0  # the progress look that last logged (or first saw) body bytes; 0: none
    seen_bytes: int = 0  # the body bytes then

    @property
    def shown(self) -> dict[str, Any]:
        """id, url (redacted) and entry (when set): the first keys of its lines."""
        shown: dict[str, Any] = {"id": self.id, "url": self.shown_url}
        if self.entry is not None:
            shown["entry"] = self.entry
        return shown


class Jobs:
    """The accepted URLs: queued, in the engine, or waiting to be retried."""

    def __init__(
        self,
        config: Config,
        multi: Multi,
        alarm: Callable[[Callable[[], None]], Alarm],
        output: Output,
        journal: Journal | NullJournal,
        log: FilteringBoundLogger,
        clock: Callable[[], float],
        feed_limit: int,
    ) -> None:
        self.phase = Phase.RUNNING
        self.queue: deque[Pending] = deque()  # accepted, not yet in the engine
        self.sources: list[Source] = []  # by the numbers in Pending tuples (Intake's list)
        self.running: dict[int, Job] = {}  # in the engine, or waiting for a retry
        # whose Easy is whose (not its private option: a getinfo or option read through the
        # Easy's property costs ~950 instructions, a dict look-up ~150)
        self._of_easy: dict[Easy, Job] = {}
        self.done = 0
        self.failed = 0
        self.deferred = 0  # with --state-dir: unfinished at abort, kept for the next start
        self._multi = multi
        self._output = output
        self._shared = output.shared  # the one Sink of every transfer (--output discard)
        self._journal = journal
        self._durable = journal.durable
        self._log = log
        self._clock = clock
        self._feed_limit = feed_limit
        self._feed_low = feed_limit - max(1, feed_limit // FEED_BATCH_DIVISOR)
        self._last_remaining = 0.0
        self._retry = config.retry_policy
        self._retries = self._retry.retries
        self.waiting = RetryWaits(alarm(self._retry_due), clock)
        self._drain_until = float("inf")  # no retry may start after this (clock())
        self._options = easy_options(config, dict(config.proxy_environ), network_policy(config))
        # transfer.progress is an info line: below that level nobody looks at the bytes
        progress = config.log_level in ("debug", "info")
        self._progress = Progress(self.running, alarm, log) if progress else None
        self._debug = config.log_level == "debug"

    def __repr__(self) -> str:
        return (
            f"<Jobs {self.phase.value} queued={len(self.queue)} running={len(self.running)}"
            f" waiting={len(self.waiting)} done={self.done} failed={self.failed}>"
        )

    @property
    def unfinished(self) -> int:
        """Accepted transfers without their transfer.done yet."""
        return len(self.running) + len(self.queue)

    def status(self) -> str:
        """One line for systemd's STATUS=."""
        return (
            f"{len(self.running) - len(self.waiting)} running, {len(self.queue)} queued, "
            f"{len(self.waiting)} waiting to retry, {self.done} done, {self.failed} failed"
        )

    # -- feeding the engine --

    def feed(self) -> None:
        """Hand queued URLs to the engine, oldest first, up to the bound, in batches."""
        running, queue = self.running, self.queue
        if len(running) > self._feed_low or not queue or self.phase is _ABORTING:
            return
        shared, sink, attempt, now = self._shared, self._output.sink, self._attempt, self._clock()
        sources = self.sources
        for _ in range(min(len(queue), self._feed_limit - len(running))):
            transfer_id, url, accepted, source, entry, shown = queue.popleft()
            out = shared or sink(transfer_id, url)
            job = Job(transfer_id, url, shown, out, sources[source], entry, accepted, now)
            running[transfer_id] = job
            attempt(job)
        if self._progress is not None:
            self._progress.watch()

    def _attempt(self, job: Job) -> None:
        """Hand one attempt of `job` to the engine: a new Easy each time (only the options
        that differ from Easy's defaults are passed: each costs a check). With --output
        discard, no write_function: the engine counts the body and drops it itself."""
        sink = job.sink
        write = None if sink is self._shared else sink.write
        if not (self._retries or self._debug):
            job.easy = easy = (
                Easy(job.url, **self._options)
                if write is None
                else Easy(job.url, write_function=write, **self._options)
            )
        else:
            job.retry_after = RetryAfter() if self._retries else None
            job.easy = easy = Easy(
                job.url,
                write_function=write,
                header_function=job.retry_after,
                debug_function=partial(_debug_line, self._log, job) if self._debug else None,
                **self._options,
            )
        self._of_easy[easy] = job
        self._multi.add_handle(easy)

    # -- completion --

    def finished(self, messages: list[Message]) -> None:
        """The engine's finished transfers: retried later, or reported now; then top up."""
        remove, retries, of_easy = self._multi.remove_handle, self._retries, self._of_easy
        for message in messages:
            easy = message.easy
            job = of_easy.pop(easy)
            remove(easy)
            result = message.result
            if not (retries and self._retry_later(job, result)):
                self.report(job, result)
        self.feed()

    def report(self, job: Job, result: Code, error: str | None = None) -> None:
        """Log the one transfer.done line of this job, tell its source, forget it."""
        self.running.pop(job.id, None)
        # The getinfo answers as plain attributes (easy.info): one read each, where the Easy's
        # own getinfo properties are a call each (~250 vs ~950 instructions, 7 reads a URL).
        info = (job.easy if job.easy is not None else Easy(job.url)).info
        sink, url = job.sink, job.url
        ok = result == _OK
        if sink is self._shared:  # --output discard: nothing to finish, no write fails
            pass
        elif not sink.finish(ok) and ok:
            ok, result, error = False, _WRITE_ERROR, sink.error
        elif result == _WRITE_ERROR and sink.error:
            error = sink.error
        if error is None:
            error = info.error or ""
        effective = info.effective_url or url
        shown_effective = job.shown_url if effective == url else redact(effective)
        if job.attempt > 1:  # every attempt and every wait between them
            elapsed = self._clock() - job.first_try
        else:
            elapsed = info.total_time or self._clock() - job.started
        status = info.response_code or None
        version = info.http_version_used or None
        self.done += 1
        if ok and not error and effective == url and job.attempt == 1 and sink is self._shared:
            # the common line (OK, first attempt, the URL its own effective URL, no file)
            logs.transfer_ok(
                self._log,
                job.id,
                job.shown_url,
                job.entry,
                status,
                info.size_download,
                elapsed,
                info.redirect_count,
                version,
            )
        else:
            if not ok:
                self.failed += 1
            number, name = _RESULTS[result]
            logs.transfer_done(
                self._log,
                ok,
                job.id,
                job.shown_url,
                job.entry,
                shown_effective,
                number,
                name,
                error,
                status,
                info.size_download,
                elapsed,
                info.redirect_count,
                job.attempt,
                version,
                sink.path or None,
            )
        source = job.source
        if self._durable and source.journaled:
            self._journal.finish(job.id)
        if source.wants_done:
            source.done(
                _done_fields(job, info, shown_effective, result, error, status, version, elapsed)
            )
        job.easy = None  # break Job <-> Easy: freed by refcount, not by the GC

    def remaining(self) -> None:
        """queue.remaining, once a second at most, and always when nothing is left."""
        now = self._clock()
        if now - self._last_remaining < REMAINING_EVERY and (self.running or self.queue):
            return  # (called per finished transfer: no property, no len() until a line is due)
        self._last_remaining = now
        self._log.info("queue.remaining", running=self.unfinished, queued=len(self.queue))

    # -- retries (--retry): a transient failure waits, then a new attempt starts --

    def _retry_later(self, job: Job, result: Code) -> bool:
        """Log transfer.retry and wait, when `result` is transient and retries are left."""
        easy = job.easy
        status = easy.response_code if easy is not None else None
        if not self._retry.retries or self.phase == Phase.ABORTING or easy is None:
            return False
        if not self._retry.is_transient(result, status or None):
            return False
        now = self._clock()
        asked = job.retry_after.seconds if job.retry_after is not None else None
        delay = self._retry.next_delay(job.attempt, now - job.first_try, asked, random.random())
        if delay is None or now + delay > self._drain_until:
            return False
        job.result = result
        _log_retry(self._log, job, result, status or None, easy.error or "", delay, asked)
        self.waiting.wait(job.id, delay)
        return True

    def _retry_due(self) -> None:
        """The retry alarm: start every attempt that is due."""
        for transfer_id in self.waiting.pop_due():
            job = self.running.get(transfer_id)
            if job is None or self.phase == Phase.ABORTING:
                continue
            job.sink.finish(False)  # the failed attempt's body is not kept
            job.sink = self._output.sink(job.id, job.url)
            job.attempt += 1
            job.result = None
            job.seen = job.seen_bytes = 0  # its body starts again
            self._attempt(job)
        if self._progress is not None:
            self._progress.watch()

    def _end_waiting(self, after: float = -float("inf")) -> None:
        """Jobs whose next attempt is due after `after` end now, with their last result."""
        for transfer_id in self.waiting.pop_later(after):
            job = self.running.get(transfer_id)
            if job is not None and job.result is not None:
                self.report(job, job.result)

    # -- stopping --

    def drain(self, seconds: float) -> None:
        """Stop/SIGTERM: what runs may finish within `seconds`; no retry starts later."""
        self.phase = Phase.DRAINING
        self._drain_until = self._clock() + seconds
        self._end_waiting(after=self._drain_until)  # retries sooner than that still happen

    def abort(self, why: str) -> None:
        """End every unfinished job now: transfer.done (42), or with --state-dir, for
        journaled sources, kept in the journal for the next start (transfer.deferred)."""
        self.phase = Phase.ABORTING
        self._end_waiting()  # not running: they keep their last attempt's result
        keep = self._journal.durable
        for job in list(self.running.values()):
            assert job.easy is not None
            self._multi.remove_handle(job.easy)
            self._of_easy.pop(job.easy, None)
            if keep and job.source.journaled:
                del self.running[job.id]
                job.sink.finish(False)
                self._defer(job.id, job.url, why)
            else:
                self.report(job, Code.ABORTED_BY_CALLBACK, why)
        while self.queue:
            transfer_id, url, accepted, number, entry, shown = self.queue.popleft()
            source = self.sources[number]
            if keep and source.journaled:
                self._defer(transfer_id, url, why)
                continue
            job = Job(transfer_id, url, shown, Sink(), source, entry, accepted, self._clock())
            self.report(job, Code.ABORTED_BY_CALLBACK, why)
        self.remaining()

    def _defer(self, transfer_id: int, url: str, why: str) -> None:
        """Not finished, not forgotten: the journal keeps it and the next start resumes it."""
        self.deferred += 1
        self._log.warning(
            "transfer.deferred",
            id=transfer_id,
            url=redact(url),
            reason=f"{why}; kept for the next start",
        )


class Progress:
    """transfer.progress lines: once a second while jobs run, one for each transfer whose
    body grew since its last line, or since its first body bytes were seen a look ago.

    So a line a second at most, the first one to two seconds after the first body
    byte: a short transfer logs none (time spent queued does not count), and a
    transfer costs nothing per body block (the engine's progress callback did).
    """

    def __init__(
        self,
        running: dict[int, Job],
        alarm: Callable[[Callable[[], None]], Alarm],
        log: FilteringBoundLogger,
    ) -> None:
        self._running = running  # Jobs.running: in the engine, or waiting for a retry
        self._alarm = alarm(self._look)
        self._set = False  # the alarm is set (it is, while jobs run)
        self._looks = 0  # looks so far
        self._log = log

    def watch(self) -> None:
        """Jobs run: the next look is due a second from now (if not set already)."""
        if not self._set:
            self._set = True
            self._alarm.set(PROGRESS_EVERY)

    def _look(self) -> None:
        self._looks += 1
        look, log = self._looks, self._log
        for job in self._running.values():
            easy = job.easy
            if easy is None or job.result is not None:  # waiting for a retry
                continue
            got = easy.size_download
            if got == job.seen_bytes:  # no body byte yet, or none since the last look
                continue
            if job.seen:
                total = max(easy.content_length, 0) or None  # -1: not known
                log.info("transfer.progress", **job.shown, bytes=got, total=total)
            job.seen, job.seen_bytes = look, got
        self._set = bool(self._running)
        if self._set:
            self._alarm.set(PROGRESS_EVERY)


def _log_retry(
    log: FilteringBoundLogger,
    job: Job,
    result: Code,
    status: int | None,
    error: str,
    delay: float,
    asked: float | None,
) -> None:
    """transfer.retry: attempt `job.attempt` failed with `result`, the next in `delay` s."""
    log.info(
        "transfer.retry",
        **job.shown,
        attempt=job.attempt,
        result=int(result),
        result_name=result.name,
        status=status,
        error=error,
        delay=round(delay, 3),
        retry_after=asked,
    )


def _debug_line(log: FilteringBoundLogger, job: Job, kind: InfoType, text: str) -> None:
    """The engine's debug callback (CURLOPT_DEBUGFUNCTION), only at --log-level debug:
    state changes as text, request and response heads as lines, credentials hidden."""
    if kind is InfoType.STATE:
        log.debug("transfer.debug", **job.shown, kind=str(kind), text=text)
    else:
        head = logs.redact_head(text)
        log.debug("transfer.debug", **job.shown, kind=str(kind), head=head)


def _done_fields(
    job: Job,
    info: Handle,
    effective: str,
    result: Code,
    error: str,
    status: int | None,
    version: str | None,
    elapsed: float,
) -> dict[str, Any]:
    """What Source.done() gets for a URL: its transfer.done fields (but `url` as given)."""
    number, name = _RESULTS[result]
    fields: dict[str, Any] = {
        "id": job.id,
        "url": job.url,
        "entry": job.entry,
        "effective_url": effective,
        "result": number,
        "result_name": name,
        "error": error,
        "status": status,
        "bytes": info.size_download,
        "elapsed": round(elapsed, 6),
        "redirects": info.redirect_count,
        "attempts": job.attempt,
        "http_version": version,
    }
    if job.sink.path:
        fields["file"] = job.sink.path
    return fields


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
        "low_speed_time": config.speed_time if config.speed_limit else 0,  # 0: not checked
        "verify": not config.insecure,
        "ca_file": str(config.cacert) if config.cacert else None,
        "accept_encoding": "" if config.compressed else None,
        "http_version": config.http_version,
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
