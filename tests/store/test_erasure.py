"""The erasure record and the Redis scripts that erase a learner and put an erasure back,
against the real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from performance_engine.erasure import (
    Erasure,
    decode_erasure,
    decode_marker,
    marker_value,
    started,
)
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.types import ScopeKey
from performance_engine.settings import Settings
from performance_engine.store.erasure import (
    ScriptCall,
    erase_call,
    finish_call,
    restore_call,
    stored_erasures,
)
from performance_engine.store.stats_store import ScopeWrite, StatsStore, revision_in

pytestmark = pytest.mark.redis

USER = 2**62 + 5


@pytest.fixture
def store(settings: Settings) -> Iterator[StatsStore]:
    with StatsStore.from_settings(settings) as s:
        yield s


def run(store: StatsStore, call: ScriptCall) -> Any:
    return store.client.eval(call.script, *call.eval_args())


def put(store: StatsStore, scope: ScopeKey, revision: int, *, epoch: str = "") -> bool:
    """Write a scope at ``revision`` (created if not stored); True if it was written."""
    calculator = MetricsCalculator()
    state = calculator.new_state()
    (stored,) = store.read_states([scope])
    state.revision = revision
    stats = calculator.stats_json_many([scope], [state], None)[0]
    write = ScopeWrite(scope, 0 if stored is None else stored.revision, state, stats, None, epoch)
    return not store.write([write])


def test_an_erasure_deletes_every_scope_and_keeps_their_revisions(store: StatsStore) -> None:
    scopes = [ScopeKey(USER, 7, "standard"), ScopeKey(USER, 8, "practice")]
    other = ScopeKey(USER + 1, 7, "standard")
    for scope, revision in zip([*scopes, other], [3, 9, 4], strict=True):
        assert put(store, scope, revision)
    earlier = Erasure(
        user_id=str(USER), epoch="0" * 16, erased_at="", erased_at_ms=0, revisions={"7:x": 12}
    )
    under_way = started(USER, "asked", "cli").merged(earlier)
    reply = run(store, erase_call(store.keys, under_way, ["7:standard", "8:practice", "7:x"]))
    assert reply[0] == b"done"
    record = decode_erasure(reply[1])
    assert record.revisions == {"7:standard": 3, "8:practice": 9, "7:x": 12}
    assert not record.complete
    assert store.read_states(scopes) == [None, None]
    assert store.learner_stats(USER) == {}
    assert store.read_states([other])[0] is not None  # another learner's: untouched
    assert decode_marker(store.client.get(store.keys.erased(USER))) == record

    # A writer that has not heard of the erasure cannot create a scope of the learner;
    # one that knows it can.
    assert not put(store, scopes[0], 1)
    assert put(store, scopes[0], 4, epoch=record.epoch)

    done = msgspec.structs.replace(record, offsets={"0": 10})
    assert run(store, finish_call(store.keys, done)) == 1
    assert stored_erasures(store) == {}  # not listed: the erase command lists it
    store.client.sadd(store.keys.erasures(), USER)
    assert stored_erasures(store) == {USER: done}
    again = started(USER, "", "cli")
    assert run(store, finish_call(store.keys, msgspec.structs.replace(again, offsets={}))) == 0


def test_an_erasure_asks_again_for_a_scope_it_was_not_given(store: StatsStore) -> None:
    assert put(store, ScopeKey(USER, 7, "standard"), 2)
    reply = run(store, erase_call(store.keys, started(USER, "", "cli"), []))
    assert reply == [b"again", b"7:standard"]
    assert store.read_states([ScopeKey(USER, 7, "standard")])[0] is not None


def test_restoring_an_erasure_deletes_what_is_older_and_keeps_what_came_after(
    store: StatsStore,
) -> None:
    old, new = ScopeKey(USER, 7, "standard"), ScopeKey(USER, 8, "standard")
    record = msgspec.structs.replace(
        started(USER, "", "cli"),
        offsets={"0": 5},
        revisions={"7:standard": 5, "8:standard": 5},
    )
    assert put(store, old, 3)  # a restored snapshot's scope, from before the erasure
    assert put(store, new, 6)  # started again after it
    reply = run(store, restore_call(store.keys, record, ""))
    assert reply == b"done"
    assert store.read_states([old])[0] is None
    assert store.read_states([new])[0] is not None
    assert list(store.learner_stats(USER)) == [(8, "standard")]
    assert revision_in(store.learner_stats(USER)[(8, "standard")]) == 6
    assert store.client.get(store.keys.erased(USER)) == marker_value(record)
    # Moved meanwhile (another erasure began): nothing is done.
    assert run(store, restore_call(store.keys, record, "")) == b"moved"


def test_the_record_says_which_attempts_it_erases() -> None:
    record = Erasure(
        user_id="9",
        epoch="a" * 16,
        erased_at="2026-01-01T00:00:00Z",
        erased_at_ms=1_000,
        offsets={"0": 10, "3": 2},
        revisions={"1:standard": 4},
    )
    assert record.erases(0, 9)
    assert not record.erases(0, 10)
    assert record.erases(3, 1)
    assert not record.erases(1, 0)  # a partition with no offset recorded: nothing before
    assert record.erases_time(1_000)
    assert not record.erases_time(1_001)
    under_way = msgspec.structs.replace(record, offsets=None)
    assert under_way.erases(5, 10**9)  # while under way: every attempt of the learner
    merged = started(9, "", "cli").merged(record)
    assert merged.revisions == {"1:standard": 4}
    assert merged.revision_floor("1:standard") == 4
    assert merged.revision_floor("2:standard") == 0
    assert decode_marker(marker_value(record)) == record
    assert decode_marker(b"x" * 16 + b"{}") is None
    assert decode_marker(b"b" * 16 + marker_value(record)[16:]) is None  # epochs differ
