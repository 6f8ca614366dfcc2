"""The one settings object, read from the environment in one function."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from performance_engine.errors import ConfigurationError

__all__ = ["ENV_PREFIX", "Settings", "load_settings"]

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
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"{ENV_PREFIX}REDIS_URL={self.redis_url!r} must start with redis://, "
                "rediss:// or unix://"
            )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``PERF_ENGINE_*`` variables (``os.environ`` by default)."""
    env = os.environ if environ is None else environ

    def get(name: str, default: str) -> str:
        value = env.get(ENV_PREFIX + name, "").strip()
        return value or default

    port_text = get("WEB_PORT", "6066")
    try:
        web_port = int(port_text)
    except ValueError:
        raise ConfigurationError(
            f"{ENV_PREFIX}WEB_PORT={port_text!r} is not a number; set it to a TCP port"
        ) from None
    modes = get("LEARNING_MODES", "")
    return Settings(
        kafka_bootstrap=get("KAFKA_BOOTSTRAP", "localhost:9092"),
        redis_url=get("REDIS_URL", "redis://localhost:6379/0"),
        key_prefix=get("KEY_PREFIX", "pe"),
        attempts_topic=get("ATTEMPTS_TOPIC", "attempts"),
        stats_topic=get("STATS_TOPIC", "stats-updated"),
        dlq_topic=get("DLQ_TOPIC", "attempts.dlq"),
        app_id=get("APP_ID", "performance-engine"),
        learning_modes_path=Path(modes) if modes else None,
        web_port=web_port,
    )
