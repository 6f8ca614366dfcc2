"""The records the worker writes to Kafka: ``stats-updated`` events and dead letters.

A ``stats-updated`` event (SPEC 4): key ``"{user_id}:{sub_topic_id}:{learning_mode}"``,
value ``{"event_id", "stats", "updated_at", "source": {"topic", "partition", "offset",
"attempt_id"}}``. ``event_id`` is a UUID-5 of (scope, revision): the same stats revision
always has the same id, so a subscriber can drop repeats. When a learner is erased, each
of their scopes gets a tombstone: the same key, a null value (a compacted topic then drops
the scope's stats; consumers treat it as "this scope no longer exists").

A dead letter keeps the rejected record's key and value unchanged and adds the headers
of :data:`DLQ_HEADERS`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Annotated

import msgspec
import xxhash

from performance_engine.errors import ErrorClass
from performance_engine.metrics.builtin import format_timestamp
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey

__all__ = [
    "DEAD_LETTER_MAX_VALUE",
    "DLQ_HEADERS",
    "EVENT_NAMESPACE",
    "TRUNCATED_HEADER",
    "DeadLetterHeaders",
    "Source",
    "StatsUpdated",
    "dead_letter",
    "dead_letter_headers",
    "event_id",
    "parse_scope",
    "partition_index",
    "stats_event",
]

#: The UUID-5 namespace of stats event ids.
EVENT_NAMESPACE = uuid.UUID("5d1c7e0a-4f7b-5c1e-9a51-3f1f0c2b7e11")

MAX_REASON = 1000
#: A dead letter keeps the original value up to this size. A longer one (the attempts topic
#: let it in, but Kafka's default message limit of 1 MB would refuse it on the dead-letter
#: topic and block the stream) keeps its first DEAD_LETTER_MAX_VALUE bytes, and the header
#: ``pe-value-truncated`` gives the original size.
DEAD_LETTER_MAX_VALUE = 512 * 1024
TRUNCATED_HEADER = "pe-value-truncated"

_Decimal = Annotated[str, msgspec.Meta(pattern=r"^(0|[1-9][0-9]*)$")]


class DeadLetterHeaders(msgspec.Struct, frozen=True, omit_defaults=True):
    """The headers a dead letter carries beside the rejected record's key and value (each
    a UTF-8 string; its JSON Schema, ``dead-letter-headers``, describes them as an object)."""

    error_class: Annotated[ErrorClass, msgspec.Meta(description="Why the record was rejected.")] = (
        msgspec.field(name="pe-error-class")
    )
    reason: Annotated[
        str,
        msgspec.Meta(
            max_length=MAX_REASON,
            description="What was wrong, naming the field (the first 1,000 characters).",
        ),
    ] = msgspec.field(name="pe-error-reason")
    source_topic: str = msgspec.field(name="pe-source-topic")
    source_partition: _Decimal = msgspec.field(name="pe-source-partition")
    source_offset: _Decimal = msgspec.field(name="pe-source-offset")
    value_truncated: Annotated[
        _Decimal | None,
        msgspec.Meta(
            description="Present when the value was cut to its first 512 KiB: its size in bytes."
        ),
    ] = msgspec.field(default=None, name=TRUNCATED_HEADER)


#: The names of a dead letter's headers that every one carries, in order.
DLQ_HEADERS = tuple(msgspec.structs.fields(DeadLetterHeaders)[i].encode_name for i in range(5))


class Source(msgspec.Struct, frozen=True):
    """Where the attempt that led to an event came from."""

    topic: str
    partition: int
    offset: int
    attempt_id: str


class StatsUpdated(msgspec.Struct, frozen=True):
    """The value of a ``stats-updated`` event. A record of the topic with a null value
    (no JSON at all) is a tombstone: the learner of the scope its key names was erased,
    and the scope no longer exists."""

    event_id: str
    stats: PerformanceStatsData
    updated_at: str
    source: Source


class _StatsUpdatedWire(msgspec.Struct, frozen=True):
    """The same shape with the stats already encoded (no second JSON encoding)."""

    event_id: str
    stats: msgspec.Raw
    updated_at: str
    source: Source


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(StatsUpdated)


_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


def event_id(scope: ScopeKey, revision: int) -> str:
    """``uuid.uuid5(EVENT_NAMESPACE, f"{scope}:{revision}")``, without the UUID object."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{scope}:{revision}".encode()).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def stats_event(
    scope: ScopeKey, revision: int, stats_json: bytes, source: Source, now_ms: int | None = None
) -> tuple[bytes, bytes]:
    """The key and value of the ``stats-updated`` event of a scope at a revision."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    value = _ENCODER.encode(
        _StatsUpdatedWire(
            event_id=event_id(scope, revision),
            stats=msgspec.Raw(stats_json),
            updated_at=format_timestamp(now) or "",
            source=source,
        )
    )
    return str(scope).encode(), value


def partition_index(key: bytes, count: int) -> int:
    """Which of a topic's ``count`` partitions (in order) the engine's events of ``key``
    go to: the XXH3 hash of the key, so a scope's events keep their order in one."""
    return xxhash.xxh3_64_intdigest(key) % count


def parse_scope(key: bytes | None) -> ScopeKey | None:
    """The scope a stats record's key names (``<user_id>:<sub_topic_id>:<mode>``); None for
    any other key."""
    parts = (key or b"").decode("utf-8", "replace").split(":")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or not parts[2]:
        return None
    return ScopeKey(int(parts[0]), int(parts[1]), parts[2])


def decode_stats_event(value: bytes) -> StatsUpdated:
    return _DECODER.decode(value)


def dead_letter_headers(
    error_class: ErrorClass,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    value_size: int | None = None,
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter (:class:`DeadLetterHeaders`)."""
    headers = DeadLetterHeaders(
        error_class,
        reason[:MAX_REASON],
        topic,
        str(partition),
        str(offset),
        None if value_size is None else str(value_size),
    )
    found: dict[str, str] = msgspec.to_builtins(headers)
    return [(name, value.encode()) for name, value in found.items()]


def dead_letter(
    key: bytes | None,
    value: bytes | None,
    error_class: ErrorClass,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The (key, value, headers) of a rejected record on the dead-letter topic."""
    size = len(value) if value is not None and len(value) > DEAD_LETTER_MAX_VALUE else None
    headers = dead_letter_headers(error_class, reason, topic, partition, offset, size)
    if value is not None and size is not None:
        value = value[:DEAD_LETTER_MAX_VALUE]
    return key, value, headers
