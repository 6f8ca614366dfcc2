"""The batch processor in-process, against the real Redis and the real broker.

Failures are injected at the exact points that matter: after the Redis write and before
anything is published or committed, and between two writers holding stale state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from performance_engine.consumer.processor import BatchProcessor, Publisher
from performance_engine.consumer.publisher import BatchPublisher
from performance_engine.events import decode_stats_event
from performance_engine.metrics.attempt import attempt_from_mapping
from performance_engine.metrics.batch import compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.loader import attempts_to_frame
from performance_engine.settings import Settings
from performance_engine.store import AsyncStatsStore
from performance_engine.synthetic import generate_attempts
from tests.services import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


class Crash(BaseException):
    """The process dies here (not an Exception: nothing may catch and retry it)."""


def records(settings: Settings, rows: list[dict[str, Any]]) -> list[Rec]:
    return [
        Rec(settings.attempts_topic, 0, offset, str(r["user_id"]).encode(), json.dumps(r).encode())
        for offset, r in enumerate(rows)
    ]


def oracle(rows: list[dict[str, Any]]) -> Any:
    calculator = MetricsCalculator()
    attempts = [attempt_from_mapping(r, calculator.learning_modes) for r in rows]
    return compute_stats(attempts_to_frame(attempts), calculator)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def real_store_and_broker(
    settings: Settings,
) -> AsyncIterator[tuple[AsyncStatsStore, Publisher]]:
    """The real Redis store and a publisher on the real broker, closed afterwards."""
    store = AsyncStatsStore.from_settings(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        yield store, BatchPublisher(producer).publish
    finally:
        await producer.stop()
        await store.close()


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
    assert durable == expected
    assert (counters.attempts_applied, counters.duplicates) == (0, len(rows))
    last = {}
    for message in read_topic(stream_settings.kafka_bootstrap, stream_settings.stats_topic):
        event = decode_stats_event(message.value)
        last[event.stats.scope] = event.stats
    assert last == expected  # republished: the last event of every scope is final


def test_two_writers_with_stale_caches_never_double_count(stream_settings: Settings) -> None:
    """A zombie and the new owner interleave batches of one user's attempts (CAS at work)."""
    rows = generate_attempts(600, users=3, seed=22)
    batch = records(stream_settings, rows)
    expected = oracle(rows)

    async def scenario() -> tuple[Any, int]:
        async with real_store_and_broker(stream_settings) as (store, publish):
            calculator = MetricsCalculator()
            a = BatchProcessor(stream_settings, calculator, store, publish)
            b = BatchProcessor(stream_settings, calculator, store, publish)
            for start in range(0, len(batch), 50):  # alternate, each with its own cache
                chunk = batch[start : start + 50]
                await (a if start % 100 == 0 else b).process(chunk)
                await (b if start % 100 == 0 else a).process(chunk[:10])  # a redelivery
            found = {s: await store.stats(s) for s in expected}
            return found, a.counters.write_conflicts + b.counters.write_conflicts

    found, conflicts = run(scenario())
    assert found == expected
    assert conflicts > 0  # the stale writer was refused and re-read, not trusted
