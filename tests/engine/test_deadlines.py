"""The deadline heap: earliest first, replaced and cleared names, no stale growth."""

from __future__ import annotations

import gc
import weakref

from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_a_wake_up_counts_in_earliest_and_expires_unreturned() -> None:
    """wake(now) is a deadline of no owner: the first instant stays until it expires, it is
    the earliest when it comes first, and pop_expired drops it without returning it."""
    deadlines = Deadlines()
    a = Owner()
    deadlines.set(a, "total", 10.0)
    assert not deadlines.woken()
    deadlines.wake(4.0)
    deadlines.wake(6.0)  # one at a time: the first instant is kept
    assert deadlines.woken()
    assert deadlines.earliest() == 4.0
    assert deadlines.pop_expired(3.0) == []
    assert deadlines.woken()  # not due yet
    assert deadlines.pop_expired(5.0) == []
    assert not deadlines.woken()
    assert deadlines.earliest() == 10.0
    deadlines.wake(12.0)  # later than the heap's earliest
    assert deadlines.earliest() == 10.0
    assert deadlines.pop_expired(20.0) == [(a, "total")]
    assert not deadlines.woken()
    assert deadlines.earliest() is None


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


OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "clear", "clear_owner", "pop", "earliest"]),
        st.integers(0, 3),  # owner
        st.sampled_from(["run", "connect", "total"]),
        st.integers(0, 50),  # instant
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_heap_agrees_with_a_plain_dict(ops: list[tuple[str, int, str, int]]) -> None:
    """Any sequence of set/clear/pop answers what a dict of (owner, name) -> instant says."""
    deadlines = Deadlines()
    owners = [Owner() for _ in range(4)]
    model: dict[tuple[Owner, str], float] = {}
    for op, index, name, instant in ops:
        owner = owners[index]
        if op == "set":
            deadlines.set(owner, name, float(instant))
            model[(owner, name)] = float(instant)
        elif op == "clear":
            deadlines.clear(owner, name)
            model.pop((owner, name), None)
        elif op == "clear_owner":
            deadlines.clear_owner(owner, ("run", "connect"))
            model.pop((owner, "run"), None)
            model.pop((owner, "connect"), None)
        elif op == "pop":
            due = {key for key, when in model.items() if when <= instant}
            expired = deadlines.pop_expired(float(instant))
            assert sorted(expired, key=lambda key: model[key]) == expired  # earliest first
            assert set(expired) == due
            for key in expired:
                del model[key]
        assert deadlines.earliest() == min(model.values(), default=None)
        assert len(deadlines) == len(model)
        assert all(deadlines.is_set(*key) for key in model)
