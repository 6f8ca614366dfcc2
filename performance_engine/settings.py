"""The one settings object, read from the environment in one function."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from performance_engine.errors import ConfigurationError

__all__ = ["ENV_NAMES", "ENV_PREFIX", "Settings", "load_settings", "settings_env"]

ENV_PREFIX = "PERF_ENGINE_"

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

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.key_prefix):
            raise ConfigurationError(
                f"{ENV_PREFIX}KEY_PREFIX={self.key_prefix!r} is not allowed: use 1 to 64 of "
                "letters, digits and _ . : - (no braces, they would break the hash tag)"
            )
        for name in ("attempts_topic", "stats_topic", "dlq_topic"):
            value = getattr(self, name)
            if not _TOPIC_RE.match(value):
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
}


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``PERF_ENGINE_*`` variables that :func:`load_settings` reads back as ``settings``
    (for starting another process with the same settings)."""
    env: dict[str, str] = {}
    for field, name in ENV_NAMES.items():
        value = getattr(settings, field)
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

    def text(field: str) -> str | None:
        value = env.get(ENV_NAMES[field], "").strip()
        return value or None

    def number(field: str, kind: type[int] | type[float] = int) -> Any:
        value = text(field)
        if value is None:
            return getattr(defaults, field)
        try:
            return kind(value)
        except ValueError:
            raise ConfigurationError(
                f"{ENV_NAMES[field]}={value!r} is not a number; unset it or give a number"
            ) from None

    def flag(field: str) -> bool:
        value = (text(field) or "false").lower()
        if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigurationError(f"{ENV_NAMES[field]}={value!r} is not true or false")
        return value in ("1", "true", "yes", "on")

    strings = {
        field: text(field) or getattr(defaults, field)
        for field in (
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
    return Settings(
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
