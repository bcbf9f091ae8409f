"""Intake: what sources hand in becomes accepted jobs, each with its transfer id.

Owns the ids, transfer.added and input.rejected (one line each for the first
few a second, then one summary a second: rejections.py), recording accepted URLs in
the journal before they are added (one transaction per batch), holding input
and refusing to read while the journal cannot be written (input.refused,
then input.resumed), and pacing the sources: paused at --max-queued, resumed
when the backlog has halved. It implements the sources' `Inbox`. Pure given
a journal, a clock, its sources and an alarm factory: no loop of its own, no engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import count, groupby, repeat
from operator import itemgetter

from structlog.typing import FilteringBoundLogger

from hiperfifo.jobs import Jobs, Phase
from hiperfifo.journal import Journal, JournalError, NullJournal
from hiperfifo.logs import transfers_added
from hiperfifo.redact import redact
from hiperfifo.rejections import RejectionReport
from hiperfifo.sources.base import Alarm, Item, Rejected, Source, Stop, Url, Urls, shown, singles

_RUNNING = Phase.RUNNING  # a plain name: an enum member lookup costs ~1,000 instructions
RETRY_EVERY = 1.0  # seconds between tries to write the journal again after a failure
ALARM_SLACK = 0.002  # libuv timers have ms resolution: set a little late, never early


class Intake:
    """Items from sources in, accepted URLs onto the jobs' queue; the sources paced."""

    def __init__(
        self,
        jobs: Jobs,
        journal: Journal | NullJournal,
        log: FilteringBoundLogger,
        clock: Callable[[], float],
        max_queued: int,
        on_stop: Callable[[str], None],
        on_lost: Callable[[str], None],
        alarm: Callable[[Callable[[], None]], Alarm] | None = None,
    ) -> None:
        self.sources: list[Source] = jobs.sources  # the same list: Pending tuples number them
        self.refused: str | None = None  # why journaled input is refused (the journal fails)
        self._jobs = jobs
        self._journal = journal
        self._log = log
        self._clock = clock
        self._max_queued = max_queued
        self._on_stop = on_stop  # the daemon's drain, when `stop` is read
        self._on_lost = on_lost  # the daemon's drain with exit status 2: a source is lost
        self._next_id = journal.next_id()
        self._held: list[tuple[Source, Item]] = []  # read, but not yet recorded (disk full)
        self._refusal_logged = False
        self._backlogged = False  # sources paused: --max-queued URLs wait
        self._paced = -1  # what pace() last told the sources: 2 * closed + refused
        self._journal_failing = False  # the last flush failed (logged once)
        self._rejections = RejectionReport()
        # ends each window of rejections with its summary (None: at the next one or at close)
        self._rejection_alarm = alarm(self._rejection_window_ended) if alarm else None

    def __repr__(self) -> str:
        state = "refused" if self.refused else "paused" if self._backlogged else "open"
        return f"<Intake {state} next_id={self._next_id} held={len(self._held)}>"

    # -- the sources' Inbox --

    def take(self, source: Source, items: Sequence[Item]) -> None:
        """Accept, act on or reject what `source` read; then feed the engine and pace."""
        self._take(source, items)
        self._jobs.feed()
        self.pace()

    def room(self) -> int:
        """URLs that fit under --max-queued now (0 while paused or stopping)."""
        if self._backlogged or self._jobs.phase != Phase.RUNNING:
            return 0
        return max(0, self._max_queued - len(self._jobs.queue))

    def lost(self, source: Source, reason: str) -> None:
        """`source` cannot go on: stop, exit status 2 (the source logged why)."""
        self._on_lost(reason)

    # -- accepting --

    def _take(self, source: Source, items: Sequence[Item]) -> None:
        """Accept runs of URLs (one journal transaction each), act on stop, log rejections."""
        if self.refused is not None and source.journaled:  # behind what is held, in order
            self._held.extend((source, item) for item in items)
            return
        start = 0
        for i, item in enumerate(items):
            stopping = self._jobs.phase is not _RUNNING
            if not stopping and isinstance(item, Url | Urls):  # accepted with their run
                continue
            if not self._accept(source, items, start, i):
                return
            start = i + 1
            if stopping:
                for single in singles((item,)):
                    self._reject("daemon is stopping", shown(single))
            elif isinstance(item, Stop):
                self._on_stop("stop")
            elif isinstance(item, Rejected):
                self._rejected(source, item)
        self._accept(source, items, start, len(items))

    def _accept(self, source: Source, items: Sequence[Item], start: int, end: int) -> bool:
        """Record the URLs of items[start:end] (`Url` and `Urls` items), then log
        transfer.added; False: held (items[start:]), input refused."""
        first = items[start] if end - start == 1 else None
        if isinstance(first, Urls):  # the common case: a FIFO read of plain lines
            return self._accept_run(source, items[start:], first)
        texts: list[str] = []
        entries: list[str | None] = []
        for item in items[start:end]:
            if isinstance(item, Url):
                texts.append(item.url)
                entries.append(item.entry)
            elif isinstance(item, Urls):
                texts += item.urls
                entries += repeat(None, len(item.urls))
        if not texts:
            return True
        shown = [redact(url) if "@" in url else url for url in texts]  # "@": a password?
        return self._add(source, items[start:], texts, entries, shown)

    def _accept_run(self, source: Source, held: Sequence[Item], run: Urls) -> bool:
        """_accept() for a run of plain URLs (`Urls`, no entries), checked on its text at once
        (`held`: what to hold if the journal refuses them)."""
        texts = run.urls
        if "@" in run.text:  # a password, maybe
            return self._add(source, held, texts, None, [redact(url) for url in texts])
        # no "@" (nothing to redact), and no quote or backslash: the plain run's only other
        # characters are printable ASCII, so each URL is its own JSON string between quotes
        plain = '"' not in run.text and "\\" not in run.text
        return self._add(source, held, texts, None, texts, plain)

    def _add(
        self,
        source: Source,
        items: Sequence[Item],
        texts: list[str],
        entries: list[str | None] | None,
        shown: list[str],
        plain: bool = False,
    ) -> bool:
        """Record the URLs `texts` (with their `entries`, None: none has one), then log
        transfer.added (with `shown`, the URLs as lines show them; `plain`: they need no
        JSON escaping) and queue them; False: `items` (from the first of them on) are
        held, input refused."""
        first = self._next_id
        if source.journaled and self._journal.durable:
            try:
                self._journal.record(list(zip(count(first), texts)))
            except JournalError as exc:
                self._refuse(source, items, str(exc))
                return False
        self._next_id += len(texts)
        # the whole run at once: the lines rendered together, the Pending tuples made by zip
        transfers_added(self._log, first, shown, entries, plain)
        ids = range(first, self._next_id)
        now = repeat(self._clock())
        self._jobs.queue.extend(
            zip(
                ids,
                texts,
                now,
                repeat(self.sources.index(source)),
                repeat(None) if entries is None else entries,
                shown,
            )
        )
        return True

    def _reject(self, reason: str, token: str, entry: str | None = None) -> None:
        """input.rejected: one line each for the first few a second, then summed (a flood of
        junk must not flood the log)."""
        now = self._clock()
        self.sum_rejections(now)
        opened = not self._rejections.window_open
        if self._rejections.add(reason, now):
            fields = {"entry": entry} if entry is not None else {}  # a stream entry's id
            self._log.warning("input.rejected", reason=reason, token=token, **fields)
        if opened and self._rejection_alarm is not None:
            self._rejection_alarm.set(self._rejections.window)

    def sum_rejections(self, now: float) -> None:
        """When the window has ended: input.rejected with count and reasons (reason ->
        count) for the rejections that got no line of their own. `now` inf: all of them."""
        summary = self._rejections.due(now)
        if summary is not None:
            self._log.warning("input.rejected", count=summary.count, reasons=summary.reasons)

    def _rejection_window_ended(self) -> None:
        """The alarm: sum up; a window not quite over (the loop's clock is cached, in ms)
        sets it again for what is left."""
        now = self._clock()
        self.sum_rejections(now)
        left = self._rejections.remaining(now)
        if left is not None and self._rejection_alarm is not None:
            self._rejection_alarm.set(left + ALARM_SLACK)

    def _rejected(self, source: Source, item: Rejected) -> None:
        """A token that is no usable URL: logged, and its source told (result -1)."""
        self._reject(item.reason, item.token, item.entry)
        if not source.wants_done:
            return
        source.done(
            {
                "entry": item.entry,
                "url": item.token,
                "result": -1,
                "result_name": "REJECTED",
                "error": item.reason,
            }
        )

    def resume(self, source: Source) -> None:
        """Queue what the journal holds unfinished from an earlier run, oldest first."""
        now, number = self._clock(), self.sources.index(source)
        for transfer_id, url in self._journal.unfinished():
            shown = redact(url)
            self._log.info("transfer.resumed", id=transfer_id, url=shown)
            self._jobs.queue.append((transfer_id, url, now, number, None, shown))
        self._jobs.feed()

    # -- input refused while the journal cannot be written, paused over a backlog --

    def _refuse(self, source: Source, held: Sequence[Item], why: str) -> None:
        """Keep what was read but not recorded, stop reading (writers block), retry later."""
        self._held.extend((source, item) for item in held)
        self.refused = why
        if not self._refusal_logged:
            self._refusal_logged = True
            self._log.error(
                "input.refused", reason=f"cannot record accepted URLs: {why}", held=len(held)
            )
        self.pace()

    def retry_held(self) -> None:
        """Every RETRY_EVERY s while refused: record the held input; on success read again."""
        if self.refused is None:
            return
        held, self._held, self.refused = self._held, [], None
        for source, group in groupby(held, key=itemgetter(0)):
            self._take(source, [item for _, item in group])
        if self.refused is not None:
            return
        self._refusal_logged = False
        self._log.info("input.resumed", reason="the state directory is writable again")
        self._jobs.feed()
        self.pace()

    def drop_held(self) -> None:
        """On stop: held input gets a last try to be recorded; what still cannot be is rejected."""
        held, self._held = self._held, []
        for source, item in held:
            if isinstance(item, Rejected):
                self._rejected(source, item)
        for source, group in groupby(held, key=itemgetter(0)):
            urls = [item for _, item in group if isinstance(item, Url | Urls)]
            self._accept(source, urls, 0, len(urls))
        for item in singles(item for _, item in self._held):
            self._reject(f"not recorded: {self.refused}", shown(item))
        self._held = []

    def pace(self) -> None:
        """Sources read only while not stopping, under --max-queued, and (journaled ones)
        not refused."""
        queued, limit = len(self._jobs.queue), self._max_queued
        if not self._backlogged and queued >= limit:
            self._backlogged = True
            self._log.info("input.paused", reason="--max-queued reached", queued=queued)
        elif self._backlogged and queued <= limit // 2:
            self._backlogged = False
            self._log.info("input.resumed", reason="backlog halved", queued=queued)
        closed = self._backlogged or self._jobs.phase is not _RUNNING
        state = (2 if closed else 0) + (self.refused is not None)
        if state == self._paced:  # as the sources were told last time (after each batch)
            return
        self._paced = state
        for source in self.sources:
            if closed or (self.refused is not None and source.journaled):
                source.pause()
            else:
                source.resume()

    def flush_journal(self) -> None:
        """Once per loop iteration: delete the ids whose transfer.done was logged."""
        if not self._journal.unflushed:
            return
        try:
            self._journal.flush()
        except JournalError as exc:
            if not self._journal_failing and self.refused is None:
                self._log.error(
                    "journal.failed", error=str(exc), unflushed=self._journal.unflushed
                )
            self._journal_failing = True
        else:
            self._journal_failing = False
