"""The erasure record: what the engine keeps of a learner it was asked to forget.

An erasure (``perf-engine erase``, :func:`performance_engine.erase_learner`, ``DELETE
/learners/{user_id}``) deletes the learner's stats and state and writes this record twice:

- on the erasures topic (compacted, key = the user id): the durable copy, which a loss of
  Redis cannot take; every worker reads it at start and follows it;
- in Redis, under the learner's marker key (``{prefix}:erased:{u<user_id>}``): the copy the
  compare-and-set of every state write consults, so that a batch already in flight when
  the learner was erased cannot write them back.

The marker's value is the record's ``epoch`` (16 hexadecimal characters) followed by the
record's JSON. While an erasure is under way (its keys deleted, the attempts topic's
offsets not yet read) the JSON has no ``offsets``: a writer then holds back every attempt
of the learner it has (all of them were in the topic before the erasure ends). A marker
whose JSON lacks offsets is also what an erasure that died half-way leaves; running it
again finishes it.

The record holds no attempt and no stats: the user id, when, why, who asked, the attempts
topic's end offsets at that moment (attempts before them are the erased ones) and each
erased scope's last ``revision`` (a scope that starts again counts from zero with a
revision above it, so that "newer than" checks of consumers stay true).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import msgspec

__all__ = [
    "EPOCH_LENGTH",
    "Erasure",
    "decode_erasure",
    "decode_marker",
    "encode_erasure",
    "marker_value",
    "new_epoch",
]

#: Characters of an erasure's epoch (the marker's first bytes).
EPOCH_LENGTH = 16


class Erasure(msgspec.Struct, frozen=True, kw_only=True):
    """One learner's erasure: who, when, why, who asked, the attempts topic's end offsets
    at that moment (the learner's attempts before them are erased; null while the erasure
    is under way) and the last revision of each erased scope. It holds no learning data."""

    #: The learner's id, as a decimal string (exact for any 63-bit id in any language).
    user_id: str
    #: Random, new for every run of an erasure; the marker's first 16 characters.
    epoch: str
    #: When it was asked (UTC, ISO 8601) and in epoch milliseconds.
    erased_at: str
    erased_at_ms: int
    reason: str = ""
    #: The name of the token (or ``cli``, ``api``) that asked for it.
    erased_by: str = ""
    #: The attempts topic's end offset per partition (as a string) when the learner's
    #: state was gone: attempts of the learner before it are erased. None while under way.
    offsets: dict[str, int] | None = None
    #: The last ``revision`` of every erased scope, by ``<sub_topic_id>:<learning_mode>``.
    revisions: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def user(self) -> int:
        return int(self.user_id)

    @property
    def complete(self) -> bool:
        """Whether the attempts topic's offsets are recorded (the erasure finished)."""
        return self.offsets is not None

    def erases(self, partition: int, offset: int, occurred_at_ms: int | None = None) -> bool:
        """Whether the learner's attempt at (partition, offset) of the attempts topic is one
        of the erased ones: it was in the topic before the erasure, or it occurred before
        it (an older attempt sent late: a relay catching up, history sent again); while the
        erasure is under way, every attempt of the learner."""
        offsets = self.offsets
        if offsets is None or offset < offsets.get(str(partition), 0):
            return True
        return occurred_at_ms is not None and occurred_at_ms <= self.erased_at_ms

    def erases_time(self, occurred_at_ms: int) -> bool:
        """Whether an attempt of the learner that occurred at this time is erased (for
        history files, which have no offsets: what occurred up to the erasure)."""
        return occurred_at_ms <= self.erased_at_ms

    def revision_floor(self, field: str) -> int:
        """The revision a scope of the learner (its stats field) starts again above."""
        return self.revisions.get(field, 0)

    def merged(self, earlier: Erasure | None) -> Erasure:
        """This erasure, keeping the higher revisions of an earlier one of the learner."""
        if earlier is None:
            return self
        revisions = dict(earlier.revisions)
        for field, revision in self.revisions.items():
            revisions[field] = max(revision, revisions.get(field, 0))
        return msgspec.structs.replace(self, revisions=revisions)


def new_epoch() -> str:
    return secrets.token_hex(EPOCH_LENGTH // 2)


def started(user_id: int, reason: str, erased_by: str) -> Erasure:
    """A new erasure of a learner, under way (no offsets yet, no revisions)."""
    now = datetime.now(UTC)
    return Erasure(
        user_id=str(user_id),
        epoch=new_epoch(),
        erased_at=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        erased_at_ms=int(now.timestamp() * 1000),
        reason=reason,
        erased_by=erased_by,
    )


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Erasure).decode


def encode_erasure(erasure: Erasure) -> bytes:
    return _encode(erasure)


def decode_erasure(value: bytes) -> Erasure:
    """An erasure record's JSON (msgspec.ValidationError / DecodeError if it is not one)."""
    return _decode(value)


def marker_value(erasure: Erasure) -> bytes:
    return erasure.epoch.encode() + encode_erasure(erasure)


def decode_marker(value: bytes | None) -> Erasure | None:
    """The erasure a marker key holds; None for a missing or unreadable one."""
    if not value or len(value) <= EPOCH_LENGTH:
        return None
    try:
        erasure = decode_erasure(value[EPOCH_LENGTH:])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return erasure if erasure.epoch.encode() == value[:EPOCH_LENGTH] else None
