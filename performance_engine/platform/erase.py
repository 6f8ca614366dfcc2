"""Erasing a learner everywhere the engine keeps them (``perf-engine erase``, ``DELETE
/learners/{user_id}``, and the platform's Python API)::

    from performance_engine import erase_learner

    report = erase_learner(123, reason="request of 2026-12-01")

One call, in this order, each step safe to run again:

1. the learner's scopes in Redis (state, history, stats) are deleted and their erasure
   marker is left in their place, in one script call (:mod:`performance_engine.store.
   erasure`): from then on no worker can write the learner back;
2. the attempts topic's end offsets are read: the learner's attempts before them are the
   erased ones;
3. the erasure record goes to the erasures topic (compacted, acknowledged by every
   replica): the copy a loss of Redis cannot take;
4. the marker gets the complete record;
5. the learner leaves the dashboard's index, a tombstone (key = the scope, value null)
   goes to the stats topic for each erased scope, and the learner's rows leave the
   platform's outbox (when its database URL is given).

A run that died half-way (killed, or the broker or the database unreachable) leaves the
learner erased in Redis with a marker the workers honour (they hold back every attempt of
the learner meanwhile); running the erasure again finishes it. Attempts the platform sends
after the erasure count from zero, with revisions above the erased ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from performance_engine.broker import broker_failed, require_broker
from performance_engine.connections import kafka_python_options
from performance_engine.erasure import Erasure, decode_erasure, decode_marker, encode_erasure
from performance_engine.erasure import started as erasure_started
from performance_engine.errors import (
    BrokerUnavailableError,
    DatabaseQueryError,
    InvalidScopeError,
)
from performance_engine.events import partition_index
from performance_engine.metrics.attempt import MAX_ID
from performance_engine.settings import Settings, load_settings
from performance_engine.store.dashboard_index import forget_commands
from performance_engine.store.erasure import ScriptCall, erase_call, finish_call
from performance_engine.store.failures import REDIS_ERRORS, failure
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.stats_store import StatsStore
from performance_engine.topics import create_missing_topics

__all__ = ["ErasureReport", "erase_learner", "erased_learners", "learner_id", "read_erasures"]

logger = logging.getLogger(__name__)

#: Seconds to wait for the broker (metadata, acknowledgements) before giving up.
BROKER_TIMEOUT = 30.0


@dataclass(slots=True)
class ErasureReport:
    """What an erasure removed."""

    record: Erasure
    #: The erased scopes, as ``<user_id>:<sub_topic_id>:<learning_mode>``.
    scopes: list[str] = field(default_factory=list)
    outbox_rows: int | None = None

    def summary(self) -> str:
        outbox = (
            "the outbox was not touched (no outbox URL)"
            if self.outbox_rows is None
            else f"{self.outbox_rows} outbox rows deleted"
        )
        return (
            f"erased user {self.record.user_id}: {len(self.scopes)} scopes "
            f"(tombstones published), {outbox}; attempts before offsets "
            f"{_offsets_text(self.record)} of the attempts topic will not count again"
        )


def _offsets_text(record: Erasure) -> str:
    offsets = record.offsets or {}
    return ", ".join(f"{p}:{o}" for p, o in sorted(offsets.items(), key=lambda i: int(i[0])))


def learner_id(value: int | str) -> int:
    """A user id given as an integer or its decimal string; InvalidScopeError otherwise."""
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or value != str(int(value)):
            raise InvalidScopeError(f"user_id must be a whole number from 1, got {value!r}")
        value = int(value)
    if isinstance(value, bool) or not 1 <= value <= MAX_ID:
        raise InvalidScopeError(f"user_id must be from 1 to {MAX_ID}, got {value!r}")
    return value


def erase_learner(
    user_id: int | str,
    reason: str = "",
    *,
    settings: Settings | None = None,
    outbox_url: str | None = None,
    erased_by: str = "api",
) -> ErasureReport:
    """Erase a learner everywhere (see the module docstring); returns what was removed.

    ``outbox_url`` (else ``PERF_ENGINE_OUTBOX_URL``) is the platform's database holding
    the outbox. Raises DatabaseQueryError or BrokerUnavailableError when Redis or the
    broker fail; run it again then.
    """
    settings = settings or load_settings()
    user = learner_id(user_id)
    outbox_url = outbox_url or settings.outbox_url
    require_broker(settings)
    create_missing_topics(settings)  # the erasures topic, compacted, before it is written
    with StatsStore.from_settings(settings) as store:
        earlier = _earlier(store, settings, user)
        under_way = _erase_keys(store, erasure_started(user, reason, erased_by).merged(earlier))
        record = msgspec.structs.replace(under_way, offsets=_end_offsets(settings))
        _publish_record(settings, record)
        _run(store, finish_call(store.keys, record))
        report = ErasureReport(record, [f"{user}:{f}" for f in sorted(record.revisions)])
        _forget_in_dashboard(store, user, record)
    _publish_tombstones(settings, report.scopes)
    if outbox_url:
        report.outbox_rows = _delete_outbox_rows(outbox_url, user)
    logger.warning(
        "erased user %s (asked by %s, reason %r): %d scopes",
        record.user_id,
        erased_by or "unnamed",
        reason,
        len(report.scopes),
    )
    return report


# -- Redis ---------------------------------------------------------------------------


def _run(store: StatsStore, call: ScriptCall) -> Any:
    try:
        return store.client.eval(call.script, *call.eval_args())
    except REDIS_ERRORS as exc:
        raise failure(store.url, exc) from exc


def _earlier(store: StatsStore, settings: Settings, user: int) -> Erasure | None:
    """The learner's last erasure: the marker's, else the erasures topic's (Redis lost it)."""
    try:
        marker = store.client.get(store.keys.erased(user))
    except REDIS_ERRORS as exc:
        raise failure(store.url, exc) from exc
    found = decode_marker(marker)
    if found is not None:
        return found
    return read_erasures(settings).get(user)


def _erase_keys(store: StatsStore, under_way: Erasure) -> Erasure:
    """Delete the learner's scopes, leave the marker; returns the record under way with
    the scopes' last revisions."""
    keys = store.keys
    try:
        store.client.sadd(keys.erasures(), under_way.user)
    except REDIS_ERRORS as exc:
        raise failure(store.url, exc) from exc
    while True:
        try:
            fields = sorted(
                {
                    f.decode()
                    for f in store.client.hkeys(keys.stats(under_way.user))
                    if KeySpace.parse_stats_field(f) is not None
                }
                | set(under_way.revisions)
            )
        except REDIS_ERRORS as exc:
            raise failure(store.url, exc) from exc
        outcome = _run(store, erase_call(keys, under_way, fields))
        if outcome[0] == b"done":
            return decode_erasure(outcome[1])
        logger.info("a scope of the learner appeared meanwhile (%s); again", outcome[1])


def _forget_in_dashboard(store: StatsStore, user: int, record: Erasure) -> None:
    cohorts = [KeySpace.parse_stats_field(f) for f in record.revisions]
    try:
        known = store.client.smembers(store.keys.dashboard("learner", user))
        cohorts += [KeySpace.parse_stats_field(m) for m in known]
        with store.client.pipeline(transaction=False) as pipe:
            for command in forget_commands(store.keys, user, {c for c in cohorts if c}):
                pipe.execute_command(*command)
            pipe.execute()
    except REDIS_ERRORS as exc:
        raise failure(store.url, exc) from exc


# -- Kafka ---------------------------------------------------------------------------


def _consumer(settings: Settings) -> KafkaConsumer:
    try:
        return KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            bootstrap_timeout_ms=10_000,
            request_timeout_ms=int(BROKER_TIMEOUT * 1000),
            **kafka_python_options(settings),
        )
    except KafkaError as exc:
        raise broker_failed(settings, exc) from exc


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    deadline = time.monotonic() + BROKER_TIMEOUT
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(f"the broker does not know the topic {topic!r}")
        consumer.topics()  # refresh the metadata
        time.sleep(0.1)


def _caught_up(consumer: KafkaConsumer, parts: list[TopicPartition]) -> bool:
    """Whether the consumer has read every partition to the high watermark its fetches
    report (some Kafka-protocol brokers answer ListOffsets with the start of the last
    record batch, not the end of the partition)."""
    for tp in parts:
        high = consumer.highwater(tp)
        if high is None or consumer.position(tp) < high:
            return False
    return True


def _end_offsets(settings: Settings) -> dict[str, int]:
    """The attempts topic's end offset per partition, now: the high watermark of a fetch
    from near the end."""
    consumer = _consumer(settings)
    try:
        parts = _partitions(consumer, settings.attempts_topic)
        consumer.assign(parts)
        consumer.seek_to_end(*parts)
        deadline = time.monotonic() + BROKER_TIMEOUT
        while not _caught_up(consumer, parts):
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"the end of {settings.attempts_topic} could not be read in time"
                )
            consumer.poll(timeout_ms=100)
        ends = {str(tp.partition): int(consumer.highwater(tp) or 0) for tp in parts}
    except KafkaError as exc:
        raise broker_failed(settings, exc) from exc
    finally:
        consumer.close()
    return ends


def _records(settings: Settings) -> Iterator[tuple[bytes | None, bytes | None]]:
    """Every (key, value) of the erasures topic, from its start to its end now."""
    consumer = _consumer(settings)
    try:
        if settings.erasures_topic not in consumer.topics():
            return  # no learner was ever erased (the first erasure creates the topic)
        parts = _partitions(consumer, settings.erasures_topic)
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + BROKER_TIMEOUT
        while True:
            batches = consumer.poll(timeout_ms=100)
            for batch in batches.values():
                for record in batch:
                    yield record.key, record.value
            if not batches and _caught_up(consumer, parts):
                return
            if not batches and time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"{settings.erasures_topic} could not be read to its end in time"
                )
    except KafkaError as exc:
        raise broker_failed(settings, exc) from exc
    finally:
        consumer.close()


def read_erasures(settings: Settings) -> dict[int, Erasure]:
    """Every learner's last recorded erasure (the erasures topic, read whole); an
    unreadable record is logged and skipped."""
    require_broker(settings)
    found: dict[int, Erasure] = {}
    for _key, value in _records(settings):
        if value is None:
            continue
        try:
            erasure = decode_erasure(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            logger.error("an unreadable record in %s: %s", settings.erasures_topic, exc)
            continue
        found[erasure.user] = erasure
    return found


def erased_learners(settings: Settings, *, required: bool = True) -> dict[int, Erasure]:
    """Every erased learner's last erasure, for a command that reads history (backfill,
    fit, evaluate): the erasures topic's, and the markers Redis holds; either one alone if
    the other cannot be reached; if neither can, ConfigurationError (none found, if not
    ``required``: the command keeps erased learners' attempts anyway)."""
    from performance_engine.errors import ConfigurationError
    from performance_engine.store.erasure import stored_erasures

    found: dict[int, Erasure] = {}
    failures: list[str] = []
    try:
        found.update(read_erasures(settings))
    except BrokerUnavailableError as exc:
        failures.append(str(exc))
    try:
        with StatsStore.from_settings(settings) as store:
            for user, erasure in stored_erasures(store).items():
                known = found.get(user)
                if known is None or erasure.erased_at_ms > known.erased_at_ms:
                    found[user] = erasure
    except DatabaseQueryError as exc:
        failures.append(str(exc))
    if len(failures) == 2 and required:
        raise ConfigurationError(
            "cannot tell which learners were erased: neither the erasures topic nor Redis "
            f"answers ({failures[1]}; {failures[0]}); pass --include-erased to read the "
            "history as it is"
        )
    for failed in failures:  # the other one answered: enough (a worker keeps both in step)
        logger.info("the erased learners are read from one place only: %s", failed)
    return found


def _producer(settings: Settings) -> KafkaProducer:
    try:
        return KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            acks="all",
            bootstrap_timeout_ms=10_000,
            **kafka_python_options(settings),
        )
    except KafkaError as exc:
        raise broker_failed(settings, exc) from exc


def _publish_record(settings: Settings, record: Erasure) -> None:
    producer = _producer(settings)
    try:
        producer.send(
            settings.erasures_topic, key=record.user_id.encode(), value=encode_erasure(record)
        ).get(timeout=BROKER_TIMEOUT)
    except KafkaError as exc:
        raise broker_failed(settings, exc) from exc
    finally:
        producer.close()


def _publish_tombstones(settings: Settings, scopes: list[str]) -> None:
    """A null value per scope on the stats topic, in the partition of its events."""
    if not scopes:
        return
    producer = _producer(settings)
    try:
        partitions = sorted(producer.partitions_for(settings.stats_topic))
        pending = [
            producer.send(
                settings.stats_topic,
                key=scope.encode(),
                value=None,
                partition=partitions[partition_index(scope.encode(), len(partitions))],
            )
            for scope in scopes
        ]
        for future in pending:
            future.get(timeout=BROKER_TIMEOUT)
    except KafkaError as exc:
        raise broker_failed(settings, exc) from exc
    finally:
        producer.close()


# -- the outbox ----------------------------------------------------------------------


def _delete_outbox_rows(url: str, user: int) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from performance_engine.platform.outbox import outbox_engine, outbox_table, redacted_url

    engine = outbox_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(outbox_table.delete().where(outbox_table.c.user_id == user))
            return int(result.rowcount)
    except SQLAlchemyError as exc:
        raise DatabaseQueryError(
            f"deleting the learner's outbox rows at {redacted_url(url)} failed: {exc}"
        ) from exc
    finally:
        engine.dispose()
