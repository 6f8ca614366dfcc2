"""Baseline: a plain per-event Faust agent doing the engine's work, written as for production.

For every attempt: decode and validate it, read the scope's state from Redis, apply the
attempt with the same metric code, write state and stats back, send one stats event.
Run: python bench/baselines/faust_agent.py worker  (settings from PERF_ENGINE_* variables)
"""

from __future__ import annotations

import faust
import redis.asyncio as aioredis
from faust.types import StreamT

from performance_engine.errors import InvalidAttemptError
from performance_engine.events import Source, stats_event
from performance_engine.metrics.attempt import decode_attempt
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.history import decode_entries
from performance_engine.metrics.state import fingerprint
from performance_engine.settings import load_settings
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.layout import pack_scope, unpack_scope

settings = load_settings()
calculator = MetricsCalculator()
keys = KeySpace(settings.key_prefix)
app = faust.App(
    settings.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    datadir=str(settings.data_dir),
    web_port=settings.web_port,
    topic_partitions=settings.partitions,
    broker_session_timeout=settings.session_timeout,
    consumer_auto_offset_reset="earliest",
    autodiscover=False,
)
attempts = app.topic(settings.attempts_topic, key_serializer="raw", value_serializer="raw")
stats_topic = app.topic(settings.stats_topic, key_serializer="raw", value_serializer="raw")
dlq = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")
client = aioredis.Redis.from_url(settings.redis_url)


@app.agent(attempts)
async def process(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        message = event.message
        try:
            attempt = decode_attempt(message.value, calculator.learning_modes)
        except InvalidAttemptError as exc:
            await dlq.send(
                key=message.key,
                value=message.value,
                headers={"pe-error-class": exc.error_class.encode()},
            )
            continue
        scope = attempt.scope
        key = keys.for_scope(scope)
        raw = await client.get(key)
        state = unpack_scope(raw) if isinstance(raw, bytes) else calculator.new_state()
        plan = calculator.plan(scope, state, [(attempt, fingerprint(attempt.attempt_id))])
        history = None
        if plan.needs_history:  # an attempt out of learning order
            stored = await client.get(keys.history(scope))
            history = decode_entries(stored if isinstance(stored, bytes) else b"", state.history)
        write = calculator.apply_plan(scope, state, plan, history).history
        stats_json = calculator.stats(scope, state).to_json()
        await client.set(key, pack_scope(state))
        field = keys.stats_field(scope.sub_topic_id, scope.learning_mode)
        await client.hset(keys.stats(scope.user_id), field, stats_json)
        if write is not None:
            command = client.set if write.replace else client.append
            await command(keys.history(scope), write.data)
        source = Source(message.topic, message.partition, message.offset, attempt.attempt_id)
        event_key, value = stats_event(scope, state.version, stats_json, source)
        await stats_topic.send(key=event_key, value=value)


if __name__ == "__main__":
    app.main()
