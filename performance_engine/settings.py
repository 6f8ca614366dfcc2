"""The one settings object, read from the environment in one function."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from performance_engine.errors import ConfigurationError

__all__ = [
    "ENV_NAMES",
    "ENV_PREFIX",
    "KAFKA_SASL_MECHANISMS",
    "KAFKA_SECURITY_PROTOCOLS",
    "Settings",
    "load_settings",
    "settings_env",
]

ENV_PREFIX = "PERF_ENGINE_"

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the engine can be configured with; every value has a working default."""

    kafka_bootstrap: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    key_prefix: str = "pe"
    attempts_topic: str = "attempts"
    stats_topic: str = "stats-updated"
    dlq_topic: str = "attempts.dlq"
    app_id: str = "performance-engine"
    learning_modes_path: Path | None = None
    web_port: int = 6066
    #: Custom metrics to register, as ``package.module:ClassName`` import paths.
    metrics: tuple[str, ...] = ()
    #: Run against a Redis whose maxmemory-policy may evict keys (state could be lost).
    allow_eviction: bool = False
    #: Partitions (and replication factor) of the topics the worker creates when missing.
    partitions: int = 8
    replication: int = 1
    #: Most records one batch of the worker holds (one Redis round trip, one commit).
    batch_size: int = 5000
    #: Seconds the group waits for a silent worker before giving its partitions away.
    session_timeout: float = 10.0
    #: Longest the broker may hold a fetch waiting for records (lower: less latency).
    fetch_max_wait_ms: int = 10
    #: Scope states the worker keeps in memory (least recently used go first).
    cache_size: int = 50_000
    #: Faust's data directory (the engine keeps no local state; Faust wants one).
    data_dir: Path = Path("/tmp/performance-engine")
    #: Talk to a Redis Cluster (REDIS_URL names any one of its nodes).
    redis_cluster: bool = False
    #: TLS to Redis (with a rediss:// URL): CA bundle, and a client certificate and key.
    redis_tls_ca_file: Path | None = None
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    #: Kafka security: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    kafka_security_protocol: str = "PLAINTEXT"
    #: SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and credentials.
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    #: TLS to Kafka: CA bundle, and a client certificate and key.
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.key_prefix):
            raise ConfigurationError(
                f"{ENV_PREFIX}KEY_PREFIX={self.key_prefix!r} is not allowed: use 1 to 64 of "
                "letters, digits and _ . : - (no braces, they would break the hash tag)"
            )
        for name in ("attempts_topic", "stats_topic", "dlq_topic"):
            value = getattr(self, name)
            if not _TOPIC_RE.fullmatch(value):
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name.upper()}={value!r} is not a valid Kafka topic name: "
                    "use letters, digits, '.', '_' and '-'"
                )
        if not 0 < self.web_port < 65536:
            raise ConfigurationError(f"{ENV_PREFIX}WEB_PORT={self.web_port} is not a TCP port")
        for name, low in (
            ("partitions", 1),
            ("replication", 1),
            ("batch_size", 1),
            ("cache_size", 0),
            ("fetch_max_wait_ms", 1),
        ):
            if getattr(self, name) < low:
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name.upper()}={getattr(self, name)} must be at least {low}"
                )
        if self.session_timeout <= 0:
            raise ConfigurationError(f"{ENV_PREFIX}SESSION_TIMEOUT must be positive")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"{ENV_PREFIX}REDIS_URL={self.redis_url!r} must start with redis://, "
                "rediss:// or unix://"
            )
        tls_files = (self.redis_tls_ca_file, self.redis_tls_cert_file, self.redis_tls_key_file)
        if any(tls_files) and not self.redis_url.startswith("rediss://"):
            raise ConfigurationError(
                f"{ENV_PREFIX}REDIS_TLS_* files are set but {ENV_PREFIX}REDIS_URL does not start "
                "with rediss://; use rediss:// for TLS"
            )
        if (self.redis_tls_cert_file is None) != (self.redis_tls_key_file is None):
            raise ConfigurationError(
                f"{ENV_PREFIX}REDIS_TLS_CERT_FILE and {ENV_PREFIX}REDIS_TLS_KEY_FILE go together"
            )
        if self.kafka_security_protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigurationError(
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r} must be "
                f"one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
            )
        if self.kafka_security_protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise ConfigurationError(
                    f"{ENV_PREFIX}KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r} must be "
                    f"one of {', '.join(KAFKA_SASL_MECHANISMS)}"
                )
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ConfigurationError(
                    f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    f"{ENV_PREFIX}KAFKA_SASL_USERNAME and {ENV_PREFIX}KAFKA_SASL_PASSWORD"
                )
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            raise ConfigurationError(
                f"{ENV_PREFIX}KAFKA_SSL_CERT_FILE and {ENV_PREFIX}KAFKA_SSL_KEY_FILE go together"
            )

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")


#: The environment variable of each setting.
ENV_NAMES: dict[str, str] = {
    "kafka_bootstrap": "PERF_ENGINE_KAFKA_BOOTSTRAP",
    "redis_url": "PERF_ENGINE_REDIS_URL",
    "key_prefix": "PERF_ENGINE_KEY_PREFIX",
    "attempts_topic": "PERF_ENGINE_ATTEMPTS_TOPIC",
    "stats_topic": "PERF_ENGINE_STATS_TOPIC",
    "dlq_topic": "PERF_ENGINE_DLQ_TOPIC",
    "app_id": "PERF_ENGINE_APP_ID",
    "learning_modes_path": "PERF_ENGINE_LEARNING_MODES",
    "web_port": "PERF_ENGINE_WEB_PORT",
    "metrics": "PERF_ENGINE_METRICS",
    "allow_eviction": "PERF_ENGINE_ALLOW_EVICTION",
    "partitions": "PERF_ENGINE_PARTITIONS",
    "replication": "PERF_ENGINE_REPLICATION",
    "batch_size": "PERF_ENGINE_BATCH_SIZE",
    "session_timeout": "PERF_ENGINE_SESSION_TIMEOUT",
    "cache_size": "PERF_ENGINE_CACHE_SIZE",
    "fetch_max_wait_ms": "PERF_ENGINE_FETCH_MAX_WAIT_MS",
    "data_dir": "PERF_ENGINE_DATA_DIR",
    "redis_cluster": "PERF_ENGINE_REDIS_CLUSTER",
    "redis_tls_ca_file": "PERF_ENGINE_REDIS_TLS_CA_FILE",
    "redis_tls_cert_file": "PERF_ENGINE_REDIS_TLS_CERT_FILE",
    "redis_tls_key_file": "PERF_ENGINE_REDIS_TLS_KEY_FILE",
    "kafka_security_protocol": "PERF_ENGINE_KAFKA_SECURITY_PROTOCOL",
    "kafka_sasl_mechanism": "PERF_ENGINE_KAFKA_SASL_MECHANISM",
    "kafka_sasl_username": "PERF_ENGINE_KAFKA_SASL_USERNAME",
    "kafka_sasl_password": "PERF_ENGINE_KAFKA_SASL_PASSWORD",
    "kafka_ssl_ca_file": "PERF_ENGINE_KAFKA_SSL_CA_FILE",
    "kafka_ssl_cert_file": "PERF_ENGINE_KAFKA_SSL_CERT_FILE",
    "kafka_ssl_key_file": "PERF_ENGINE_KAFKA_SSL_KEY_FILE",
}


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``PERF_ENGINE_*`` variables that :func:`load_settings` reads back as ``settings``
    (for starting another process with the same settings)."""
    env: dict[str, str] = {}
    for attr, name in ENV_NAMES.items():
        value = getattr(settings, attr)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = ",".join(value)
        else:
            text = str(value)
        env[name] = text
    return env


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from the ``PERF_ENGINE_*`` variables (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    defaults = Settings()

    def text(attr: str) -> str | None:
        value = env.get(ENV_NAMES[attr], "").strip()
        return value or None

    def number(attr: str, kind: type[int] | type[float] = int) -> Any:
        value = text(attr)
        if value is None:
            return getattr(defaults, attr)
        try:
            return kind(value)
        except ValueError:
            raise ConfigurationError(
                f"{ENV_NAMES[attr]}={value!r} is not a number; unset it or give a number"
            ) from None

    def flag(attr: str) -> bool:
        value = (text(attr) or "false").lower()
        if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigurationError(f"{ENV_NAMES[attr]}={value!r} is not true or false")
        return value in ("1", "true", "yes", "on")

    strings = {
        attr: text(attr) or getattr(defaults, attr)
        for attr in (
            "kafka_bootstrap",
            "redis_url",
            "key_prefix",
            "attempts_topic",
            "stats_topic",
            "dlq_topic",
            "app_id",
        )
    }
    modes = text("learning_modes_path")

    def path(attr: str) -> Path | None:
        value = text(attr)
        return Path(value) if value else None

    return Settings(
        redis_tls_ca_file=path("redis_tls_ca_file"),
        redis_tls_cert_file=path("redis_tls_cert_file"),
        redis_tls_key_file=path("redis_tls_key_file"),
        kafka_ssl_ca_file=path("kafka_ssl_ca_file"),
        kafka_ssl_cert_file=path("kafka_ssl_cert_file"),
        kafka_ssl_key_file=path("kafka_ssl_key_file"),
        redis_cluster=flag("redis_cluster"),
        kafka_security_protocol=(text("kafka_security_protocol") or "PLAINTEXT").upper(),
        kafka_sasl_mechanism=(text("kafka_sasl_mechanism") or "PLAIN").upper(),
        kafka_sasl_username=text("kafka_sasl_username"),
        kafka_sasl_password=env.get(ENV_NAMES["kafka_sasl_password"]) or None,
        **strings,
        learning_modes_path=Path(modes) if modes else None,
        web_port=number("web_port"),
        metrics=tuple(item.strip() for item in (text("metrics") or "").split(",") if item.strip()),
        allow_eviction=flag("allow_eviction"),
        partitions=number("partitions"),
        replication=number("replication"),
        batch_size=number("batch_size"),
        session_timeout=number("session_timeout", float),
        cache_size=number("cache_size"),
        fetch_max_wait_ms=number("fetch_max_wait_ms"),
        data_dir=Path(text("data_dir") or defaults.data_dir),
    )
