"""Settings: one object, read from the environment in one function."""

from __future__ import annotations

from pathlib import Path

import pytest

from performance_engine.errors import ConfigurationError
from performance_engine.settings import Settings, load_settings


def test_defaults_work_on_a_developer_machine() -> None:
    assert load_settings({}) == Settings(
        kafka_bootstrap="localhost:9092",
        redis_url="redis://localhost:6379/0",
        key_prefix="pe",
        attempts_topic="attempts",
        stats_topic="stats-updated",
        dlq_topic="attempts.dlq",
        app_id="performance-engine",
        learning_modes_path=None,
        web_port=6066,
        metrics=(),
        partitions=8,
        replication=1,
        batch_size=5000,
        session_timeout=10.0,
        cache_size=50_000,
        fetch_max_wait_ms=10,
        data_dir=Path("/tmp/performance-engine"),
    )


def test_every_variable_is_read() -> None:
    env = {
        "PERF_ENGINE_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
        "PERF_ENGINE_REDIS_URL": "rediss://user:pw@r:6380/2",
        "PERF_ENGINE_KEY_PREFIX": "stats",
        "PERF_ENGINE_ATTEMPTS_TOPIC": "a",
        "PERF_ENGINE_STATS_TOPIC": "s",
        "PERF_ENGINE_DLQ_TOPIC": "d",
        "PERF_ENGINE_APP_ID": "app",
        "PERF_ENGINE_LEARNING_MODES": "/etc/modes.toml",
        "PERF_ENGINE_WEB_PORT": "7000",
        "PERF_ENGINE_PARTITIONS": "16",
        "PERF_ENGINE_REPLICATION": "3",
        "PERF_ENGINE_BATCH_SIZE": "100",
        "PERF_ENGINE_SESSION_TIMEOUT": "7.5",
        "PERF_ENGINE_CACHE_SIZE": "0",
        "PERF_ENGINE_FETCH_MAX_WAIT_MS": "100",
        "PERF_ENGINE_DATA_DIR": "/var/lib/pe",
        "PERF_ENGINE_METRICS": "a.b:C, d:E",
    }
    assert load_settings(env) == Settings(
        kafka_bootstrap="k1:9092,k2:9092",
        redis_url="rediss://user:pw@r:6380/2",
        key_prefix="stats",
        attempts_topic="a",
        stats_topic="s",
        dlq_topic="d",
        app_id="app",
        learning_modes_path=Path("/etc/modes.toml"),
        web_port=7000,
        partitions=16,
        replication=3,
        batch_size=100,
        session_timeout=7.5,
        cache_size=0,
        fetch_max_wait_ms=100,
        data_dir=Path("/var/lib/pe"),
        metrics=("a.b:C", "d:E"),
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("KEY_PREFIX", "p{x}", "braces"),
        ("WEB_PORT", "http", "not a number"),
        ("BATCH_SIZE", "0", "at least 1"),
        ("SESSION_TIMEOUT", "-1", "positive"),
        ("WEB_PORT", "70000", "not a TCP port"),
        ("STATS_TOPIC", "bad topic", "not a valid Kafka topic"),
        ("REDIS_URL", "localhost:6379", "must start with"),
    ],
)
def test_bad_values_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings({f"PERF_ENGINE_{name}": value})


def test_settings_env_round_trips() -> None:
    from performance_engine.settings import settings_env

    for settings in (
        Settings(),
        Settings(
            metrics=("a:B", "c.d:E"),
            allow_eviction=True,
            learning_modes_path=Path("/m.toml"),
            session_timeout=2.5,
            cache_size=0,
        ),
    ):
        assert load_settings(settings_env(settings)) == settings
