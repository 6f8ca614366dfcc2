"""Checks a command makes before it starts: can the services be reached at all?"""

from __future__ import annotations

import socket
from typing import Any

import redis

from performance_engine.connections import kafka_python_options
from performance_engine.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    DatabaseQueryError,
)
from performance_engine.settings import Settings
from performance_engine.store import REDIS_ERRORS, StatsStore

__all__ = [
    "bootstrap_hosts",
    "broker_failed",
    "ensure_topics",
    "eviction_policy",
    "require_broker",
    "require_redis",
    "require_safe_redis",
    "topic_names",
]


def bootstrap_hosts(settings: Settings) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for item in settings.kafka_bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"PERF_ENGINE_KAFKA_BOOTSTRAP entry {item!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def broker_failed(settings: Settings, exc: Exception) -> BrokerUnavailableError:
    """The error for a Kafka client that failed, saying what to check."""
    return BrokerUnavailableError(
        f"Kafka at {settings.kafka_bootstrap} failed: {exc}; check that the broker runs and "
        "that PERF_ENGINE_KAFKA_BOOTSTRAP points at it"
    )


def require_broker(settings: Settings, timeout: float = 5.0) -> None:
    """Raise BrokerUnavailableError unless some bootstrap server accepts a connection."""
    errors = []
    for host, port in bootstrap_hosts(settings):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            errors.append(f"{host}:{port} ({exc.strerror or exc})")
    raise BrokerUnavailableError(
        f"Kafka at {settings.kafka_bootstrap} is unreachable: {'; '.join(errors)}; check that "
        "the broker runs and that PERF_ENGINE_KAFKA_BOOTSTRAP points at it"
    )


def require_redis(settings: Settings) -> None:
    """Raise DatabaseQueryError unless Redis answers a PING."""
    with StatsStore.from_settings(settings) as store:
        store.ping()


def eviction_policy(settings: Settings) -> str | None:
    """Redis's ``maxmemory-policy`` (on a cluster: any node's that may evict, else
    ``noeviction``), or None when this user may not read it.

    Read from ``INFO memory``, which a restricted ACL user can be granted without CONFIG.
    """
    with StatsStore.from_settings(settings) as store:
        try:
            info = store.client.info("memory")
        except redis.ResponseError:  # e.g. an ACL user without INFO
            return None
        except REDIS_ERRORS as exc:
            store.ping()  # raises the engine's DatabaseQueryError with the reason
            raise DatabaseQueryError(f"reading Redis's memory settings failed: {exc}") from exc
    nodes = [info] if "maxmemory_policy" in info else list(info.values())
    found = (node.get("maxmemory_policy") for node in nodes if isinstance(node, dict))
    policies = {str(policy) for policy in found if policy is not None}
    evicting = sorted(policies - {"noeviction"})
    if evicting:
        return evicting[0]
    return "noeviction" if policies else None


def require_safe_redis(settings: Settings) -> str | None:
    """Refuse a Redis that may evict state, unless ``allow_eviction``; returns the policy."""
    policy = eviction_policy(settings)
    if policy not in (None, "noeviction") and not settings.allow_eviction:
        raise ConfigurationError(
            f"Redis's maxmemory-policy is {policy!r}: it may evict the engine's state and "
            "lose attempts; set it to noeviction (CONFIG SET maxmemory-policy noeviction, or "
            "in redis.conf), or accept the risk with --allow-eviction / "
            "PERF_ENGINE_ALLOW_EVICTION=true"
        )
    return policy


def _admin(settings: Settings) -> Any:
    """A kafka-python admin client (the caller closes it)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    require_broker(settings)
    try:
        return KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            bootstrap_timeout_ms=10_000,
            **kafka_python_options(settings),
        )
    except KafkaError as exc:
        raise broker_failed(settings, exc) from exc


def topic_names(settings: Settings) -> set[str]:
    """The topics the broker knows (kafka-python admin client)."""
    admin = _admin(settings)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def ensure_topics(settings: Settings) -> list[str]:
    """Create the engine's topics that are missing; returns the names it created.

    The worker calls this before it joins its group, so that its subscription sees the
    attempts topic with the configured partitions (not one auto-created by a producer).
    """
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    wanted = [settings.attempts_topic, settings.stats_topic, settings.dlq_topic]
    missing = [name for name in wanted if name not in topic_names(settings)]
    if not missing:
        return []
    admin = _admin(settings)
    try:
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, settings.partitions, settings.replication)])
            except TopicAlreadyExistsError:
                continue  # created meanwhile by someone else
    except KafkaError as exc:
        raise BrokerUnavailableError(f"creating topics {missing} failed: {exc}") from exc
    finally:
        admin.close()
    return missing
