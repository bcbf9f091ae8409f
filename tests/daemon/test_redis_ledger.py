"""The Redis source's pure decisions: holds and credit, refresh timing, the claim scan, backoff."""

from __future__ import annotations

from hiperfifo.sources.redis.ledger import Backoff, ClaimScan, Ledger


def test_credit_tops_up_by_quarters_of_the_window() -> None:
    """Nothing held: the whole window; then nothing until a quarter of it is free again."""
    ledger = Ledger(window=8, refresh_every=1.0)
    with ledger.lock:  # the threads call it under its lock
        assert ledger.credit() == 8
        assert ledger.take([f"1-{n}" for n in range(8)], now=0.0) == [f"1-{n}" for n in range(8)]
        assert ledger.credit() == 0
        ledger.release(["1-0"])
        assert ledger.credit() == 0  # one free of eight: not worth a read yet
        ledger.release(["1-1"])
        assert ledger.credit() == 2


def test_a_small_window_reads_one_at_a_time() -> None:
    """A window of 1 or 3 still reads as soon as one is free."""
    ledger = Ledger(window=3, refresh_every=1.0)
    with ledger.lock:  # the threads call it under its lock
        ledger.take(["1-0", "1-1", "1-2"], now=0.0)
        ledger.release(["1-2"])
        assert ledger.credit() == 1


def test_taking_an_entry_held_already_is_not_new_but_refreshes_it() -> None:
    """A re-read or re-claim of our own entry is not handed in twice."""
    ledger = Ledger(window=8, refresh_every=1.0)
    with ledger.lock:  # the threads call it under its lock
        assert ledger.take(["1-0", "1-1"], now=0.0) == ["1-0", "1-1"]
        assert ledger.take(["1-1", "1-2"], now=5.0) == ["1-2"]
        assert ledger.refresh_due(now=5.5) == ["1-0"]


def test_refresh_names_holds_older_than_the_period_and_says_when_next() -> None:
    """refresh_due: holds refreshed refresh_every ago or more; next_refresh: when the oldest is."""
    ledger = Ledger(window=8, refresh_every=10.0)
    with ledger.lock:  # the threads call it under its lock
        assert ledger.next_refresh() is None
        ledger.take(["1-0"], now=0.0)
        ledger.take(["1-1"], now=4.0)
        assert ledger.refresh_due(now=9.9) == []
        assert ledger.next_refresh() == 10.0
        assert ledger.refresh_due(now=10.0) == ["1-0"]
        ledger.refreshed(["1-0", "9-9"], now=10.0)  # 9-9: acked meanwhile, not held again
        assert ledger.next_refresh() == 14.0
        assert "9-9" not in ledger.held


def test_claim_scan_follows_the_cursor_then_waits_for_the_next_pass() -> None:
    """A pass goes on at once while Redis returns a cursor; the next begins `every` after."""
    scan = ClaimScan(every=30.0)
    assert scan.is_due(0.0)
    scan.advance("5-0", now=1.0)
    assert scan.cursor == "5-0"
    assert scan.is_due(1.0)
    scan.advance("0-0", now=2.0)
    assert not scan.is_due(30.9)
    assert scan.is_due(31.0)


def test_backoff_doubles_and_never_exceeds_five_seconds() -> None:
    """0.1, 0.2, 0.4... capped at 5 s whatever the jitter; reset starts over."""
    backoff = Backoff()
    delays = [backoff.next(jitter=0.0) for _ in range(12)]
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert max(delays) == 5.0
    assert all(0 < backoff.next(jitter=0.999) <= 5.0 for _ in range(50))
    backoff.reset()
    assert backoff.next(jitter=0.0) == 0.1
