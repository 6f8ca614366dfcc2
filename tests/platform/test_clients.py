"""The platform's producer and subscriber against the real broker (and a real worker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from performance_engine import (
    AttemptProducer,
    BrokerUnavailableError,
    InvalidAttemptError,
    StatsSubscriber,
)
from performance_engine.metrics.attempt import attempt_from_mapping, decode_attempt
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.types import ScopeKey
from performance_engine.settings import Settings
from performance_engine.tools.demo import free_port
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import oracle, publish_events, raw, results, wait_for_oracle
from tests.services import read_topic, topic_is_empty

pytestmark = [pytest.mark.kafka]

#: tansu makes a kafka-python group wait about twice the session timeout before the first
#: assignment; a short session keeps the tests quick (real Kafka: group.initial.rebalance).
FAST_GROUP: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def test_producer_validates_keys_and_sends(stream_settings: Settings) -> None:
    rows = generate_attempts(50, users=5, seed=31)
    rows[0] = {**rows[0], "learning_mode": "MASTERY", "difficulty": "Hard", "extra": [1]}
    with AttemptProducer(stream_settings) as producer:
        assert producer.emit(rows[0]) is not None
        assert producer.emit_many(rows[1:]) == 49
    messages = read_topic(stream_settings.kafka_bootstrap, stream_settings.attempts_topic)
    modes = MetricsCalculator().learning_modes
    sent = sorted((decode_attempt(m.value, modes) for m in messages), key=lambda a: a.attempt_id)
    want = sorted((attempt_from_mapping(r, modes) for r in rows), key=lambda a: a.attempt_id)
    assert sent == want
    for message in messages:
        assert message.key == str(decode_attempt(message.value, modes).user_id).encode()


def test_invalid_attempt_raises_and_sends_nothing(stream_settings: Settings) -> None:
    with AttemptProducer(stream_settings) as producer:
        with pytest.raises(InvalidAttemptError, match="difficulty"):
            producer.emit(raw(difficulty="impossible"))
        with pytest.raises(InvalidAttemptError, match="user_id"):
            producer.emit_many([raw(), raw(), raw(user_id=-1)])  # the good ones stay unsent
        assert producer.sent == 0
    assert topic_is_empty(stream_settings.kafka_bootstrap, stream_settings.attempts_topic)


def test_unreachable_broker(redis_url: str) -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with pytest.raises(BrokerUnavailableError, match="PERF_ENGINE_KAFKA_BOOTSTRAP"):
        AttemptProducer(settings, bootstrap_timeout_ms=1000)
    with pytest.raises(BrokerUnavailableError):
        StatsSubscriber(settings, bootstrap_timeout_ms=1000)


def test_subscriber_drops_duplicates_and_optionally_stale(stream_settings: Settings) -> None:
    a, b = ScopeKey(1, 2, "standard"), ScopeKey(3, 4, "practice")
    publish_events(stream_settings, [(a, 1), (a, 2), (a, 2), (b, 5), (a, 1), (b, 6), (b, 6)])
    with StatsSubscriber(stream_settings, start="earliest") as subscriber:
        seen = [(e.stats.scope_key, e.stats.version) for e in subscriber.events(timeout=3)]
    assert seen == [(a, 1), (a, 2), (b, 5), (b, 6)]
    with StatsSubscriber(
        stream_settings, start="earliest", skip_stale=True, drop_duplicates=False
    ) as subscriber:
        seen = [(e.stats.scope_key, e.stats.version) for e in subscriber.events(timeout=3)]
    assert seen == [(a, 1), (a, 2), (a, 2), (b, 5), (b, 6), (b, 6)]


def test_subscriber_group_resumes_where_it_left(stream_settings: Settings) -> None:
    a = ScopeKey(1, 2, "standard")
    publish_events(stream_settings, [(a, 1), (a, 2)])
    group = f"{stream_settings.app_id}-dashboard"
    with StatsSubscriber(stream_settings, group_id=group, start="earliest", **FAST_GROUP) as sub:
        assert [e.stats.version for e in sub.events(timeout=3)] == [1, 2]
    publish_events(stream_settings, [(a, 3)])
    with StatsSubscriber(stream_settings, group_id=group, start="earliest", **FAST_GROUP) as sub:
        assert [e.stats.version for e in sub.events(timeout=3)] == [3]


@pytest.mark.redis
@pytest.mark.slow
def test_round_trip_through_the_worker(
    stream_settings: Settings, workers: Callable[..., Any]
) -> None:
    rows = generate_attempts(800, users=10, seed=32)
    workers(stream_settings)
    with StatsSubscriber(
        stream_settings, group_id="platform", start="earliest", **FAST_GROUP
    ) as subscriber:
        with AttemptProducer(stream_settings) as producer:
            producer.emit_many(rows)
        import json

        expected = oracle([(None, json.dumps(r).encode()) for r in rows])
        wait_for_oracle(stream_settings, expected)
        latest = {}
        for event in subscriber.events(timeout=3):
            latest[event.stats.scope_key] = event.stats
    assert results(latest) == expected
