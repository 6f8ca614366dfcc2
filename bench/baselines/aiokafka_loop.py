"""Baseline: a hand-written aiokafka consumer loop doing the engine's work, as for production.

getmany batches; decode and validate; one Redis pipeline to read the touched scopes'
states (and a read of a scope's history when an attempt arrives out of learning order)
and one to write states, stats and histories; one produce per changed scope (the
producer's per-record send); commit after the batch. Settings from PERF_ENGINE_* variables.
Run: python bench/baselines/aiokafka_loop.py
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from performance_engine.errors import InvalidAttemptError
from performance_engine.events import Source, stats_event
from performance_engine.metrics.attempt import Attempt, decode_attempt
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.history import decode_entries
from performance_engine.metrics.state import ScopeState, fingerprint
from performance_engine.metrics.types import ScopeKey
from performance_engine.settings import load_settings
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.layout import pack_scope, unpack_scope


async def main() -> None:
    settings = load_settings()
    calculator = MetricsCalculator()
    keys = KeySpace(settings.key_prefix)
    client = aioredis.Redis.from_url(settings.redis_url)
    consumer = AIOKafkaConsumer(
        settings.attempts_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.batch_size,
        session_timeout_ms=int(settings.session_timeout * 1000),
        heartbeat_interval_ms=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    announced = False
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            if not announced and consumer.assignment():
                print("Worker ready", flush=True)
                announced = True
            if not batches:
                continue
            touched: dict[ScopeKey, list[tuple[Attempt, Any]]] = {}
            dead = []
            for records in batches.values():
                for record in records:
                    try:
                        attempt = decode_attempt(record.value, calculator.learning_modes)
                    except InvalidAttemptError as exc:
                        dead.append((record, exc))
                        continue
                    touched.setdefault(attempt.scope, []).append((attempt, record))
            scopes = list(touched)
            async with client.pipeline(transaction=False) as pipe:
                for scope in scopes:
                    pipe.get(keys.for_scope(scope))
                raw_states = await pipe.execute()
            sends = []
            async with client.pipeline(transaction=True) as pipe:
                for scope, raw in zip(scopes, raw_states, strict=True):
                    state: ScopeState = unpack_scope(raw) if raw else calculator.new_state()
                    pairs = [(a, fingerprint(a.attempt_id)) for a, _ in touched[scope]]
                    plan = calculator.plan(scope, state, pairs)
                    history = None
                    if plan.needs_history:  # an attempt out of learning order
                        stored = await client.get(keys.history(scope))
                        blob = stored if isinstance(stored, bytes) else b""
                        history = decode_entries(blob, state.history)
                    write = calculator.apply_plan(scope, state, plan, history).history
                    stats_json = calculator.stats(scope, state).to_json()
                    pipe.set(keys.for_scope(scope), pack_scope(state))
                    field = keys.stats_field(scope.sub_topic_id, scope.learning_mode)
                    pipe.hset(keys.stats(scope.user_id), field, stats_json)
                    if write is not None:
                        command = pipe.set if write.replace else pipe.append
                        command(keys.history(scope), write.data)
                    attempt, record = touched[scope][-1]
                    source = Source(
                        record.topic,
                        record.partition,
                        record.offset,
                        attempt.attempt_id,
                    )
                    sends.append(stats_event(scope, state.version, stats_json, source))
                await pipe.execute()
            futures = [
                await producer.send(settings.stats_topic, value, key=key) for key, value in sends
            ]
            futures += [
                await producer.send(settings.dlq_topic, r.value, key=r.key) for r, _ in dead
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
