"""Settings: one object, read from the environment through one table of fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from performance_engine.errors import ConfigurationError
from performance_engine.settings import ENV_NAMES, Settings, load_settings


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
        cache_size=10_000,
        fetch_max_wait_ms=10,
        data_dir=Path("/tmp/performance-engine"),
    )


#: Every variable, with a value other than its default, and the setting it must give.
EVERY_VARIABLE: dict[str, tuple[str, object]] = {
    "PERF_ENGINE_KAFKA_BOOTSTRAP": ("k1:9092,k2:9092", "k1:9092,k2:9092"),
    "PERF_ENGINE_REDIS_URL": ("rediss://user:pw@r:6380/2", "rediss://user:pw@r:6380/2"),
    "PERF_ENGINE_KEY_PREFIX": ("stats", "stats"),
    "PERF_ENGINE_ATTEMPTS_TOPIC": ("a", "a"),
    "PERF_ENGINE_STATS_TOPIC": ("s", "s"),
    "PERF_ENGINE_DLQ_TOPIC": ("d", "d"),
    "PERF_ENGINE_ERASURES_TOPIC": ("e", "e"),
    "PERF_ENGINE_XAPI_MAPPING": ("/etc/xapi.toml", Path("/etc/xapi.toml")),
    "PERF_ENGINE_XAPI_TOPIC": ("lms-statements", "lms-statements"),
    "PERF_ENGINE_XAPI_STATEMENT_DAYS": ("30", 30),
    "PERF_ENGINE_APP_ID": ("app", "app"),
    "PERF_ENGINE_LEARNING_MODES": ("/etc/modes.toml", Path("/etc/modes.toml")),
    "PERF_ENGINE_LEARNING_PARAMS": ("/etc/params.json", Path("/etc/params.json")),
    "PERF_ENGINE_WEB_PORT": ("7000", 7000),
    "PERF_ENGINE_METRICS": ("a.b:C, d:E", ("a.b:C", "d:E")),
    "PERF_ENGINE_ALLOW_EVICTION": ("yes", True),
    "PERF_ENGINE_PARTITIONS": ("16", 16),
    "PERF_ENGINE_REPLICATION": ("3", 3),
    "PERF_ENGINE_BATCH_SIZE": ("100", 100),
    "PERF_ENGINE_SESSION_TIMEOUT": ("7.5", 7.5),
    "PERF_ENGINE_FETCH_MAX_WAIT_MS": ("100", 100),
    "PERF_ENGINE_CACHE_SIZE": ("0", 0),
    "PERF_ENGINE_DATA_DIR": ("/var/lib/pe", Path("/var/lib/pe")),
    "PERF_ENGINE_REDIS_CLUSTER": ("on", True),
    "PERF_ENGINE_REDIS_TLS_CA_FILE": ("/tls/ca.pem", Path("/tls/ca.pem")),
    "PERF_ENGINE_REDIS_TLS_CERT_FILE": ("/tls/c.pem", Path("/tls/c.pem")),
    "PERF_ENGINE_REDIS_TLS_KEY_FILE": ("/tls/k.pem", Path("/tls/k.pem")),
    "PERF_ENGINE_KAFKA_SECURITY_PROTOCOL": ("sasl_ssl", "SASL_SSL"),
    "PERF_ENGINE_KAFKA_SASL_MECHANISM": ("scram-sha-512", "SCRAM-SHA-512"),
    "PERF_ENGINE_KAFKA_SASL_USERNAME": ("engine", "engine"),
    "PERF_ENGINE_KAFKA_SASL_PASSWORD": (" pass word ", " pass word "),  # kept as given
    "PERF_ENGINE_KAFKA_SSL_CA_FILE": ("/k/ca.pem", Path("/k/ca.pem")),
    "PERF_ENGINE_KAFKA_SSL_CERT_FILE": ("/k/c.pem", Path("/k/c.pem")),
    "PERF_ENGINE_KAFKA_SSL_KEY_FILE": ("/k/k.pem", Path("/k/k.pem")),
    "PERF_ENGINE_OUTBOX_URL": ("sqlite:///o.db", "sqlite:///o.db"),
    "PERF_ENGINE_REDIS_SENTINELS": ("s1:26379, s2:26379", ("s1:26379", "s2:26379")),
    "PERF_ENGINE_REDIS_SENTINEL_MASTER": ("engine", "engine"),
    "PERF_ENGINE_REDIS_WAIT_REPLICAS": ("1", 1),
    "PERF_ENGINE_REDIS_WAIT_TIMEOUT_MS": ("250", 250),
    "PERF_ENGINE_STATE_CHECK_SECONDS": ("2.5", 2.5),
    "PERF_ENGINE_ACCEPT_STATE_GAP": ("true", True),
    "PERF_ENGINE_WEB_HOST": ("0.0.0.0", "0.0.0.0"),
    "PERF_ENGINE_WEB_TOKENS_FILE": ("/etc/pe/tokens", Path("/etc/pe/tokens")),
    "PERF_ENGINE_INSECURE_OPEN_HTTP": ("yes", True),
    "PERF_ENGINE_CORS_ORIGINS": (
        "https://a.example, http://b.example:8080",
        ("https://a.example", "http://b.example:8080"),
    ),
    "PERF_ENGINE_DASHBOARD": ("off", False),
}


def test_every_variable_is_read() -> None:
    """Each of the settings' variables, set at once, lands in its own field."""
    assert set(EVERY_VARIABLE) == set(ENV_NAMES.values())  # a new setting must be listed
    loaded = load_settings({name: text for name, (text, _) in EVERY_VARIABLE.items()})
    defaults = Settings()
    for attr, name in ENV_NAMES.items():
        expected = EVERY_VARIABLE[name][1]
        assert getattr(loaded, attr) == expected, name
        assert getattr(defaults, attr) != expected, f"{name}: pick a value other than the default"


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
        ("REDIS_SENTINELS", "s1:26379,s2", "host:port pairs"),
        ("STATE_CHECK_SECONDS", "0", "positive"),
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
