"""The engine's topics: which exist, and creating those that are missing."""

from __future__ import annotations

from typing import Any

from performance_engine.broker import broker_failed, require_broker
from performance_engine.connections import kafka_python_options
from performance_engine.errors import BrokerUnavailableError
from performance_engine.settings import Settings

__all__ = ["ERASURES_CONFIG", "create_missing_topics", "new_topic", "topic_names"]


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


#: The erasures topic keeps each learner's latest record for good: compacted, one partition
#: (a few records per erased learner, read whole by every worker at start).
ERASURES_CONFIG = {"cleanup.policy": "compact"}


def new_topic(settings: Settings, name: str) -> Any:
    from kafka.admin import NewTopic

    if name == settings.erasures_topic:
        return NewTopic(name, 1, settings.replication, topic_configs=ERASURES_CONFIG)
    return NewTopic(name, settings.partitions, settings.replication)


def create_missing_topics(settings: Settings) -> list[str]:
    """Create the engine's topics that are missing; returns the names it created.

    The worker calls this before it joins its group, so that its subscription sees the
    attempts topic with the configured partitions (not one auto-created by a producer).
    """
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    wanted = [
        settings.attempts_topic,
        settings.stats_topic,
        settings.dlq_topic,
        settings.erasures_topic,
        *([settings.xapi_topic] if settings.xapi_topic else []),
    ]
    missing = [name for name in wanted if name not in topic_names(settings)]
    if not missing:
        return []
    admin = _admin(settings)
    try:
        for name in missing:
            try:
                admin.create_topics([new_topic(settings, name)])
            except TopicAlreadyExistsError:
                continue  # created meanwhile by someone else
    except KafkaError as exc:
        raise BrokerUnavailableError(f"creating topics {missing} failed: {exc}") from exc
    finally:
        admin.close()
    return missing
