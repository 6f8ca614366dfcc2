"""The positions ledger: what a difference between Redis's positions and the committed
offsets means (pure), and its compare-and-set record against a real Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from performance_engine.errors import DatabaseQueryError
from performance_engine.settings import Settings
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.ledger import Judgement, Ledger, StateLost, judge
from performance_engine.store.stats_store import AsyncStatsStore
from tests.helpers import run
from tests.services import RedisServer

EMPTY = Judgement()


#: (ledger, committed, earliest, has_state, lost, expected judgement)
CASES: dict[str, tuple[Any, ...]] = {
    "a new deployment: no committed offsets, nothing to compare": (
        None, {0: None, 1: None}, {}, False, False, EMPTY,
    ),
    "a Redis written by a release without a ledger: its state is taken as complete": (
        None, {0: 100}, {0: 0}, True, False, Judgement(adopted=True),
    ),
    "... but not when this worker saw its ledger vanish (state written since)": (
        None, {0: 100}, {0: 0}, True, True, Judgement(resume={0: 0}),
    ),
    "an emptied Redis (FLUSHDB, a restart without persistence): replay from the start": (
        None, {0: 100, 1: 7}, {0: 0, 1: 0}, False, False, Judgement(resume={0: 0, 1: 0}),
    ),
    "an older snapshot, or a replica that lagged: resume where its state ends": (
        {0: 40, 1: 7}, {0: 100, 1: 7}, {0: 0, 1: 0}, False, False, Judgement(resume={0: 40}),
    ),
    "Redis ahead of the commit (a crash between the two): nothing to do": (
        {0: 120}, {0: 100}, {0: 0}, False, False, EMPTY,
    ),
    "a partition the ledger never saw, though committed: its state reaches offset 0": (
        {1: 5}, {0: 30, 1: 5}, {0: 0, 1: 0}, False, False, Judgement(resume={0: 0}),
    ),
    "retention deleted what would be replayed: a gap, refused unless accepted": (
        {0: 40}, {0: 100}, {0: 60}, False, False,
        Judgement(gaps={0: (40, 60)}, past_gaps={0: 60}),
    ),
    "an emptied Redis and a topic that has dropped its oldest records": (
        None, {0: 100, 1: 9}, {0: 10, 1: 0}, False, False,
        Judgement(resume={1: 0}, gaps={0: (0, 10)}, past_gaps={0: 10}),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_judge(case: str) -> None:
    ledger, committed, earliest, has_state, lost, expected = CASES[case]
    assert judge(ledger, committed, earliest, has_state=has_state, lost=lost) == expected


@pytest.mark.redis
def test_record_refuses_a_ledger_that_changed_underneath(settings: Settings) -> None:
    async def scenario() -> None:
        async with AsyncStatsStore.from_settings(settings) as store:
            ledger = Ledger(store, "attempts")
            assert await ledger.read() is None
            assert await ledger.has_state() is False
            await ledger.record({0: 10, 3: 4})
            await ledger.record({0: 20})
            assert await ledger.read() == {0: 20, 3: 4}
            assert ledger.known == {0: 20, 3: 4}
            other = Ledger(store, "other-topic")  # topics share the hash, not the fields
            await other.record({0: 99})
            assert await ledger.read() == {0: 20, 3: 4}

            await store.client.hset(ledger.key, "attempts:0", 15)  # an older snapshot
            with pytest.raises(StateLost) as lost:
                await ledger.record({0: 30})
            assert (lost.value.partition, lost.value.expected, lost.value.found) == (0, 20, 15)
            await store.client.delete(ledger.key)  # FLUSHDB
            with pytest.raises(StateLost, match="position for partition 0 is missing"):
                await ledger.record({0: 30})

            fresh = Ledger(store, "attempts")  # a worker that read the ledger as it is
            await fresh.record({0: 30})
            fresh.known[0] = 20  # the same batch again, after a lost reply: accepted
            await fresh.record({0: 30})
            assert await fresh.read() == {0: 30}
            assert await store.client.hget(ledger.key, "created")

            await store.client.set(KeySpace(settings.key_prefix).scope(1, 2, "standard"), b"x")
            assert await ledger.has_state() is True

    run(scenario())


@pytest.mark.redis
def test_the_ledger_is_one_key_of_the_prefix(settings: Settings) -> None:
    keys = KeySpace(settings.key_prefix)
    assert keys.positions() == f"{settings.key_prefix}:{{stream}}:positions"
    client = redis.Redis.from_url(settings.redis_url)
    client.set(keys.positions(), b"not a scope")
    try:
        assert not list(client.scan_iter(match=keys.scope_pattern()))
    finally:
        client.close()


@pytest.mark.redis
def test_a_refused_record_says_what_to_do(settings: Settings, tmp_path: Path) -> None:
    """The ledger's failures carry the same advice as a refused state write."""
    server = RedisServer(tmp_path, options=("--save", "", "--appendonly", "no"))
    server.start()
    own = Settings(redis_url=server.url, key_prefix=settings.key_prefix)

    async def scenario() -> None:
        async with AsyncStatsStore.from_settings(own) as store:
            ledger = Ledger(store, "attempts")
            await ledger.record({0: 10})
            await store.client.config_set("maxmemory", 1)  # every write refused
            with pytest.raises(DatabaseQueryError, match="raise maxmemory"):
                await ledger.record({0: 20})
            assert await ledger.read() == {0: 10}  # reads still answer; nothing half-done
            server.stop()
            with pytest.raises(DatabaseQueryError, match="check that it is running"):
                await ledger.read()

    try:
        run(scenario())
    finally:
        server.stop()
