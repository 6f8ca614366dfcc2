"""The batch processor in-process, against the real Redis and the real broker.

Failures are injected at the exact points that matter: after the Redis write and before
anything is published or committed, and between two writers holding stale state.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from performance_engine.erasure import Erasure, decode_erasure, started
from performance_engine.events import decode_stats_event
from performance_engine.metrics.attempt import attempt_from_mapping
from performance_engine.metrics.batch import compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import attempts_to_frame
from performance_engine.metrics.types import ScopeKey
from performance_engine.settings import Settings
from performance_engine.store.erasure import erase_call, finish_call
from performance_engine.store.stats_store import StatsStore
from performance_engine.tools.simulator import generate_attempts
from performance_engine.worker.erasures import ErasureLog
from performance_engine.worker.processor import BatchProcessor
from tests.helpers import (
    TESTS,
    Rec,
    oracle,
    real_store_and_broker,
    records,
    results,
    run,
    spec_rows,
)
from tests.services import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


class Crash(BaseException):
    """The process dies here (not an Exception: nothing may catch and retry it)."""


def test_crash_after_the_write_then_redelivery(stream_settings: Settings) -> None:
    rows = generate_attempts(400, users=8, seed=21)
    batch = records(stream_settings, rows)
    expected = oracle(rows)

    async def scenario() -> tuple[Any, Any]:
        async with real_store_and_broker(stream_settings) as (store, publish):

            async def dies(topic: str, records: Any) -> None:
                raise Crash

            calculator = MetricsCalculator()
            first = BatchProcessor(stream_settings, calculator, store, dies)
            with pytest.raises(Crash):
                await first.process(batch)  # state written, nothing published or committed
            durable = {s: await store.stats(s) for s in expected}
            restarted = BatchProcessor(stream_settings, calculator, store, publish)
            await restarted.process(batch)  # the same records, delivered again
            return durable, restarted.counters

    durable, counters = run(scenario())
    assert results(durable) == expected
    assert (counters.attempts_applied, counters.duplicates) == (0, len(rows))
    last = {}
    for message in read_topic(stream_settings.kafka_bootstrap, stream_settings.stats_topic):
        event = decode_stats_event(message.value)
        last[event.stats.scope_key] = event.stats
    assert results(last) == expected  # republished: the last event of every scope is final


def test_two_writers_with_stale_caches_never_double_count_state_or_counters(
    stream_settings: Settings,
) -> None:
    """A zombie and the new owner interleave batches of one user's attempts (CAS at work),
    the attempts out of learning order (refolds and history rewrites race too)."""
    rows = generate_attempts(600, users=3, seed=22)
    random.Random(22).shuffle(rows)
    batch = records(stream_settings, rows)
    expected = oracle(rows)

    async def scenario() -> tuple[Any, list[Any], int]:
        async with real_store_and_broker(stream_settings) as (store, publish):
            calculator = MetricsCalculator()
            a = BatchProcessor(stream_settings, calculator, store, publish)
            b = BatchProcessor(stream_settings, calculator, store, publish)
            given = 0
            for start in range(0, len(batch), 50):  # alternate, each with its own cache
                chunk = batch[start : start + 50]
                await (a if start % 100 == 0 else b).process(chunk)
                await (b if start % 100 == 0 else a).process(chunk[:10])  # a redelivery
                given += len(chunk) + len(chunk[:10])
            found = {s: await store.stats(s) for s in expected}
            return found, [a.counters, b.counters], given

    found, counters, given = run(scenario())
    assert results(found) == expected
    assert sum(c.write_conflicts for c in counters) > 0  # the stale writer was refused
    # Counters count attempts once, when their write lands, not once per write round.
    distinct = len({r["attempt_id"] for r in rows})
    assert sum(c.attempts_applied for c in counters) == distinct
    assert sum(c.duplicates for c in counters) == given - distinct


def test_a_scope_stored_by_the_first_release_and_its_rebuild(
    stream_settings: Settings, redis_client: Any, tmp_path: Path
) -> None:
    """tests/data/state-format-1.bin holds a-1..a-5 as the first release stored them. The
    worker counts a-6 and a-7 and says the learning block is unknown; a backfill of the
    whole history rebuilds it exactly, and a later attempt goes on in order."""
    from performance_engine.metrics.types import ScopeKey
    from performance_engine.store.stats_store import StatsStore
    from performance_engine.tools.backfill import backfill_file

    scope = ScopeKey(123, 456, "standard")
    key = f"{stream_settings.key_prefix}:{{u123}}:456:standard"
    old = (TESTS / "data" / "state-format-1.bin").read_bytes()
    redis_client.set(key, old)
    rows = spec_rows()

    async def stream(batch: list[Rec]) -> Any:
        async with real_store_and_broker(stream_settings) as (store, publish):
            processor = BatchProcessor(stream_settings, MetricsCalculator(), store, publish)
            await processor.process(batch)
            return await store.stats(scope), processor.counters

    stats, counters = run(stream(records(stream_settings, rows[5:])))
    assert (stats.version, stats.learning, counters.attempts_applied) == (7, None, 2)
    (event,) = [
        decode_stats_event(m.value)
        for m in read_topic(stream_settings.kafka_bootstrap, stream_settings.stats_topic)
    ]
    assert event.stats == stats  # the event says "unknown" too, never a guess

    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with StatsStore.from_settings(stream_settings) as store:
        report = backfill_file(history, store, MetricsCalculator())
        rebuilt = store.stats(scope)
    assert (report.attempts_applied, report.written) == (0, 1)  # nothing counted twice
    assert results(rebuilt) == oracle(rows)[scope]
    assert json.loads(rebuilt.to_json())["learning"]["mastery_probability"] == 0.7162

    later = {**rows[-1], "attempt_id": "a-8", "occurred_at": rows[-1]["occurred_at"] + 1000}
    stats, counters = run(stream(records(stream_settings, [later])))
    assert results(stats) == oracle([*rows, later])[scope]
    assert counters.refolds == 0  # in order: one step, no history read


def previous_release_rows() -> list[dict[str, Any]]:
    """The attempts of tests/data/state-format-2-*: 30 right easy answers, then 25 wrong
    hard ones (the long scope; the small one holds the first 12)."""
    return [
        {
            "attempt_id": f"p-{i:03d}",
            "user_id": 5,
            "sub_topic_id": 6,
            "learning_mode": "standard",
            "question_id": 100 + i,
            "difficulty": "easy" if i < 30 else "hard",
            "is_correct": i < 30,
            "occurred_at": 1_795_510_800_000 + i * 1000,
        }
        for i in range(55)
    ]


def test_state_of_the_previous_release_is_folded_again_in_log_odds(
    stream_settings: Settings, redis_client: Any
) -> None:
    """The previous release stored mastery as p, which its arithmetic had pinned at 1.0
    ("mastered") for the long scope after 30 right answers and 25 wrong (exact BKT: 0.78).
    Read now, that state is folded again from its history, never taken as log-odds: the
    read path does it where the history is in the state, the next attempt where it has a
    key of its own;
    both end exactly as the oracle."""
    from performance_engine.metrics.learning import FOLD_FORMAT
    from performance_engine.store.layout import legacy_stats, unpack_scope
    from performance_engine.store.stats_store import StatsStore

    assert FOLD_FORMAT == 2
    rows = previous_release_rows()
    small = (TESTS / "data" / "state-format-2-small.bin").read_bytes()
    state = unpack_scope(small)
    scope = ScopeKey(5, 6, "standard")
    assert not state.spilled
    assert results(MetricsCalculator().stats(scope, state)) == oracle(rows[:12])[scope]

    long = (TESTS / "data" / "state-format-2-long.bin").read_bytes()
    state, stats_json = unpack_scope(long), legacy_stats(long)
    assert b'"mastered":true' in stats_json  # what the previous release showed
    assert state.spilled
    assert MetricsCalculator().stats(scope, state).learning is None  # history not at hand
    key = f"{stream_settings.key_prefix}:{{u5}}:6:standard"
    redis_client.set(key, long)
    redis_client.set(
        f"{key}:history", (TESTS / "data" / "state-format-2-long.history").read_bytes()
    )
    later = {**rows[-1], "attempt_id": "p-055", "occurred_at": rows[-1]["occurred_at"] + 1000}

    async def stream(batch: list[Rec]) -> Any:
        async with real_store_and_broker(stream_settings) as (store, publish):
            processor = BatchProcessor(stream_settings, MetricsCalculator(), store, publish)
            await processor.process(batch)
            return processor.counters

    counters = run(stream(records(stream_settings, [later])))
    with StatsStore.from_settings(stream_settings) as store:
        stats = store.stats(scope)
    assert results(stats) == oracle([*rows, later])[scope]
    assert stats.learning is not None
    assert not stats.learning.mastered
    assert counters.refolds == 1


def test_a_lost_history_is_reported_and_rebuilt(
    stream_settings: Settings, redis_client: Any, tmp_path: Path
) -> None:
    from performance_engine.metrics.types import ScopeKey
    from performance_engine.store.stats_store import StatsStore
    from performance_engine.tools.backfill import backfill_file

    scope = ScopeKey(123, 456, "standard")
    rows = spec_rows()
    calculator = MetricsCalculator(history_inline_limit=0)  # every history in its own key

    async def stream(batch: list[Rec]) -> Any:
        async with real_store_and_broker(stream_settings) as (store, publish):
            processor = BatchProcessor(stream_settings, calculator, store, publish)
            await processor.process(batch)
            return await store.stats(scope), processor.counters

    run(stream(records(stream_settings, rows[1:])))
    redis_client.delete(f"{stream_settings.key_prefix}:{{u123}}:456:standard:history")
    stats, counters = run(stream(records(stream_settings, rows[:1])))  # late: needs it
    assert (stats.version, stats.learning, counters.histories_lost) == (7, None, 1)
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with StatsStore.from_settings(stream_settings) as store:
        backfill_file(history, store, calculator)
        assert results(store.stats(scope)) == oracle(rows)[scope]


def test_frame_metrics_while_a_history_moves_to_its_own_key(stream_settings: Settings) -> None:
    """A frame-based metric needs the whole history at every write, also at the write
    that moves it out of the scope's value (a small limit makes that the second)."""
    from tests.example_metrics import MostTriedQuestion

    rows = spec_rows()
    calculator = MetricsCalculator(history_inline_limit=40)
    calculator.register_metrics([MostTriedQuestion()])

    async def scenario() -> Any:
        async with real_store_and_broker(stream_settings) as (store, publish):
            processor = BatchProcessor(stream_settings, calculator, store, publish)
            for row in rows:  # one batch each: inline, moved out, then read back
                await processor.process(records(stream_settings, [row]))
            return await store.stats(ScopeKey(123, 456, "standard"))

    stats = run(scenario())
    attempts = [attempt_from_mapping(r, calculator.learning_modes) for r in rows]
    (expected,) = compute_stats(attempts_to_frame(attempts), calculator).values()
    assert results(stats) == expected
    assert stats.custom_metrics == {"most_tried_question": {"easy": 1, "medium": 10}}


def test_a_batch_in_flight_cannot_write_an_erased_learner_back(stream_settings: Settings) -> None:
    """The learner is erased between two batches of a worker that has their scopes cached
    and has not read the erasure yet: the compare-and-set refuses, the worker learns the
    erasure from the marker, holds back the attempts from before it and starts the
    learner's scopes again from the later ones, above the erased revisions."""
    rows = generate_attempts(300, users=3, seed=23)
    victim = rows[0]["user_id"]
    end = 200  # the attempts topic's end when the learner was erased
    later = int(time.time() * 1000) + 60_000  # the learner's attempts after it, a minute on
    for offset, row in enumerate(rows):
        if offset >= end and row["user_id"] == victim:
            row["occurred_at"] = later + offset
    batch = records(stream_settings, rows)

    async def scenario() -> tuple[Any, Any, Erasure]:
        async with real_store_and_broker(stream_settings) as (store, publish):
            log = ErasureLog(stream_settings)  # not following the topic: knows nothing
            processor = BatchProcessor(
                stream_settings, MetricsCalculator(), store, publish, erasures=log
            )
            await processor.process(batch[:150])
            with StatsStore.from_settings(stream_settings) as sync:
                fields = [f"{sub}:{mode}" for sub, mode in sync.learner_stats(victim)]
                call = erase_call(sync.keys, started(victim, "", "test"), fields)
                reply = sync.client.eval(call.script, *call.eval_args())
                record = msgspec.structs.replace(decode_erasure(reply[1]), offsets={"0": end})
                call = finish_call(sync.keys, record)
                assert sync.client.eval(call.script, *call.eval_args()) == 1
            await processor.process(batch[150:])
            stored = {s: await store.stats(s) for s in oracle(rows)}
            return stored, processor.counters, record

    stored, counters, record = run(scenario())
    kept = [r for offset, r in enumerate(rows) if r["user_id"] != victim or offset >= end]
    expected = oracle(kept)
    found = {s: stats for s, stats in stored.items() if s in expected}
    assert results(found) == expected
    assert set(stored) - set(expected) == set()
    assert counters.erased_attempts == sum(
        1 for offset, r in enumerate(rows[150:end], 150) if r["user_id"] == victim
    )
    assert counters.erasures == 1
    for scope, stats in found.items():
        if scope.user_id == victim:
            assert stats.revision > record.revisions.get(
                f"{scope.sub_topic_id}:{scope.learning_mode}", 0
            )
    # On the stats topic each erased scope's tombstone comes after its older events and
    # before the events of its new start.
    published = read_topic(stream_settings.kafka_bootstrap, stream_settings.stats_topic)
    for field in record.revisions:
        key = f"{victim}:{field}".encode()
        values = [m.value for m in published if m.key == key]
        assert None in values
        after = values[values.index(None) + 1 :]
        assert all(
            decode_stats_event(v).stats.revision > record.revisions[field] for v in after if v
        )


def test_an_idle_worker_applies_an_erasure_it_reads_without_waiting_for_a_batch(
    stream_settings: Settings,
) -> None:
    """The worker's timer reads the erasures topic between batches: the learner's cached
    scopes are forgotten and their tombstones published again at once, not at the next
    batch (which may never come)."""
    from performance_engine.platform.erase import erase_learner

    rows = generate_attempts(120, users=3, seed=29)
    victim = rows[0]["user_id"]

    async def scenario() -> tuple[list[ScopeKey], list[ScopeKey], int]:
        async with real_store_and_broker(stream_settings) as (store, publish):
            log = ErasureLog(stream_settings)
            await log.start()
            processor = BatchProcessor(
                stream_settings, MetricsCalculator(), store, publish, erasures=log
            )
            await processor.process(records(stream_settings, rows))
            before = [s for s in processor._cache if s.user_id == victim]
            await asyncio.to_thread(erase_learner, victim, settings=stream_settings)
            deadline = time.monotonic() + 10
            while victim not in log.known and time.monotonic() < deadline:
                await log.read()  # what the timer does, every PERF_ENGINE_STATE_CHECK_SECONDS
                await asyncio.sleep(0.1)
            await processor.learn_erasures()
            after = [s for s in processor._cache if s.user_id == victim]
            await log.stop()
            return before, after, processor.counters.erasures

    before, after, erasures = run(scenario())
    assert before
    assert after == []
    assert erasures == 1
    published = read_topic(stream_settings.kafka_bootstrap, stream_settings.stats_topic)
    for scope in before:
        values = [m.value for m in published if m.key == str(scope).encode()]
        assert values[-2:] == [None, None]  # the erase command's tombstone, then the worker's
