"""The deadline heap: earliest first, replaced and cleared names, no stale growth."""

from __future__ import annotations

import gc
import weakref

from hiperfifo.engine.deadlines import Deadlines


class Owner:
    """A stand-in for a transfer: hashable, weakly referenceable."""


def test_earliest_and_expiry_in_order() -> None:
    """Deadlines come out earliest first; a replaced name fires only at its new instant."""
    deadlines = Deadlines()
    a, b = Owner(), Owner()
    deadlines.set(a, "total", 10.0)
    deadlines.set(b, "connect", 5.0)
    deadlines.set(a, "total", 3.0)  # replaces 10.0
    assert deadlines.earliest() == 3.0
    assert deadlines.pop_expired(5.0) == [(a, "total"), (b, "connect")]
    assert deadlines.earliest() is None
    assert deadlines.pop_expired(100.0) == []


def test_cleared_deadlines_do_not_keep_their_owners_alive() -> None:
    """Owners whose far deadlines were cleared are freed without waiting for the instant."""
    deadlines = Deadlines()
    refs = []
    for _ in range(1000):
        owner = Owner()
        refs.append(weakref.ref(owner))
        deadlines.set(owner, "connect", 300.0)
        deadlines.clear_owner(owner, ("connect",))
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    assert alive <= 64 + 1  # at most the compaction slack stays referenced
    assert len(deadlines) == 0
