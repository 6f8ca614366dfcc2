"""The attempt event (SPEC 2): its validated form and the one decoder of raw records.

Every way in (a Kafka record, a producer call, a line of an emit file) goes through
:func:`decode_attempt` or :func:`attempt_from_mapping`, so the rules live here once.
Rejections raise :class:`InvalidAttemptError` with one of the ``error_class`` values in
:data:`ERROR_CLASSES`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import msgspec

from performance_engine.errors import (
    ERROR_CLASSES,
    ErrorClass,
    InvalidAttemptError,
    InvalidScopeError,
)
from performance_engine.metrics.modes import MODE_NAME_RE, LearningModes
from performance_engine.metrics.types import DifficultyEnum, LearningModeType, ScopeKey

__all__ = [
    "ATTEMPT_COLUMNS",
    "ERROR_CLASSES",
    "FUTURE_TOLERANCE_MS",
    "MAX_EPOCH_MS",
    "MAX_VALUE_BYTES",
    "MIN_EPOCH_MS",
    "RFC3339_PATTERN",
    "Attempt",
    "AttemptEvent",
    "AttemptVoid",
    "ErrorClass",
    "IdValue",
    "VoidEvent",
    "attempt_from_mapping",
    "decode_attempt",
    "decode_record",
    "parse_difficulty",
    "parse_occurred_at",
    "scope_key",
]

MAX_VALUE_BYTES = 64 * 1024
MAX_ID = 2**63 - 1
#: 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
MAX_EPOCH_MS = 253_402_300_799_999
#: 2000-01-01T00:00:00Z: an integer ``occurred_at`` below it is what epoch *seconds* look
#: like, and is rejected as ``implausible_time`` (SPEC 2).
MIN_EPOCH_MS = 946_684_800_000
#: How far after its Kafka record's timestamp an attempt may say it happened (SPEC 2).
FUTURE_TOLERANCE_MS = 24 * 3600 * 1000

#: The fields of an attempt as the columns of a frame (files, batch engine, frame metrics).
ATTEMPT_COLUMNS = (
    "attempt_id",
    "user_id",
    "sub_topic_id",
    "learning_mode",
    "question_id",
    "difficulty",
    "is_correct",
    "occurred_at",
    "attempt_number",
    "time_spent_ms",
)


#: An RFC 3339 timestamp with a zone (the files' vectorised check uses the same pattern).
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
_RFC3339_RE = re.compile(RFC3339_PATTERN)
_DIFFICULTY_BY_NAME = {d.value: d for d in DifficultyEnum}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: An id: a JSON integer, or its canonical decimal string (no sign, no leading zero, no
#: space), which languages whose numbers are doubles can write exactly beyond 2^53.
_ID_TEXT = r"^[1-9][0-9]{0,18}$"
_Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)] | Annotated[str, msgspec.Meta(pattern=_ID_TEXT)]
#: An id in JSON as the engine takes it everywhere: an integer, or its canonical decimal
#: string (which a pattern cannot bound: check it against 2^63-1 once decoded).
IdValue = _Id


_ID_DOC = (
    "A JSON integer or its canonical decimal string, from 1 to 9223372036854775807 "
    "(2^63-1; a string above it is rejected too)."
)


def _doc(text: str, **schema: Any) -> msgspec.Meta:
    """A field's description (and what else its JSON Schema says) for the published schema
    (``performance_engine.schemas``); nothing here changes what the decoder accepts."""
    return msgspec.Meta(description=text, extra_json_schema=schema or None)


#: A scope's parts, as an attempt and a void carry them.
_UserId = Annotated[_Id, _doc(f"The learner. {_ID_DOC}")]
_SubTopicId = Annotated[_Id, _doc(f"The sub-topic. {_ID_DOC}")]
_Mode = Annotated[
    str,
    _doc(
        "A configured learning mode (standard, practice, mastery by default); "
        "case-insensitive, lower case is canonical.",
        pattern=MODE_NAME_RE.pattern,
    ),
]


class AttemptEvent(msgspec.Struct):
    """An attempt event as it arrives (SPEC 2): a JSON object; fields not named here are
    ignored. The learning mode and difficulty are checked against the configuration after
    decoding, and ``occurred_at`` against the record's time."""

    attempt_id: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=128),
        _doc("The platform's id of this answer; a redelivery with the same id counts once."),
    ]
    user_id: _UserId
    sub_topic_id: _SubTopicId
    learning_mode: _Mode
    question_id: Annotated[_Id, _doc(f"The question. {_ID_DOC}")]
    difficulty: Annotated[
        str,
        _doc(
            "easy, medium or hard; case-insensitive, lower case is canonical.",
            enum=[d.value for d in DifficultyEnum],
        ),
    ]
    is_correct: bool
    occurred_at: Annotated[
        Annotated[str, _doc("RFC 3339 with a zone.", pattern=RFC3339_PATTERN)]
        | Annotated[
            int,
            msgspec.Meta(ge=0, le=MAX_EPOCH_MS),
            # below 2000-01-01 (what epoch seconds look like): implausible_time, not a
            # malformed field, so the decoder's bound stays 0 and the schema's is this
            _doc("Epoch milliseconds.", exclusiveMinimum=MIN_EPOCH_MS - 1),
        ],
        _doc(
            "When the learner answered, at most 24 hours after the record's Kafka "
            "timestamp. Epoch milliseconds start at 2000-01-01: smaller numbers look like "
            "seconds and are rejected."
        ),
    ]
    attempt_number: Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)] | None = None
    time_spent_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)] | None = None
    schema_version: Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)] = 1


class Attempt(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A validated attempt: names canonical, ``occurred_at`` in epoch milliseconds (UTC)."""

    attempt_id: str
    user_id: int
    sub_topic_id: int
    learning_mode: str
    question_id: int
    difficulty: DifficultyEnum
    is_correct: bool
    occurred_at: int
    attempt_number: int | None = None
    time_spent_ms: int | None = None
    schema_version: int = 1

    @property
    def scope(self) -> ScopeKey:
        return ScopeKey(self.user_id, self.sub_topic_id, self.learning_mode)

    def to_json(self) -> bytes:
        """The SPEC 2 JSON form (``occurred_at`` as epoch milliseconds)."""
        return _ENCODER.encode(self)

    def to_mapping(self) -> dict[str, Any]:
        """The SPEC 2 object (``difficulty`` by name), e.g. to validate it again against
        other learning modes."""
        return {
            "attempt_id": self.attempt_id,
            "user_id": self.user_id,
            "sub_topic_id": self.sub_topic_id,
            "learning_mode": self.learning_mode,
            "question_id": self.question_id,
            "difficulty": self.difficulty.value,
            "is_correct": self.is_correct,
            "occurred_at": self.occurred_at,
            "attempt_number": self.attempt_number,
            "time_spent_ms": self.time_spent_ms,
            "schema_version": self.schema_version,
        }


class VoidEvent(msgspec.Struct):
    """A void (SPEC 2 records of their own, on the attempts topic keyed by ``user_id``): the
    attempt ``void`` names no longer counts; its scope is folded again without it. An
    attempt voided before it arrives is not counted when it does. A JSON object whose
    first field is ``void``."""

    void: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=128),
        _doc("The attempt_id of the attempt that no longer counts."),
    ]
    user_id: _UserId
    sub_topic_id: _SubTopicId
    learning_mode: _Mode
    occurred_at: Annotated[
        Annotated[str, _doc("RFC 3339 with a zone.", pattern=RFC3339_PATTERN)]
        | Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS), _doc("Epoch milliseconds.")],
        _doc("When the attempt was voided."),
    ]
    voided_by: Annotated[
        Annotated[str, msgspec.Meta(max_length=128)] | None,
        _doc("What voided it (the id of an xAPI voiding statement)."),
    ] = None


class AttemptVoid(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A validated void: the attempt ``attempt_id`` of a scope no longer counts."""

    attempt_id: str
    user_id: int
    sub_topic_id: int
    learning_mode: str
    occurred_at: int
    voided_by: str | None = None

    @property
    def scope(self) -> ScopeKey:
        return ScopeKey(self.user_id, self.sub_topic_id, self.learning_mode)


W = TypeVar("W")
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(AttemptEvent)
_VOID_DECODER = msgspec.json.Decoder(VoidEvent)
_VOID_HEAD = b'{"void"'


def parse_difficulty(value: str) -> DifficultyEnum:
    found = _DIFFICULTY_BY_NAME.get(value.lower()) if isinstance(value, str) else None
    if found is None:
        raise InvalidAttemptError(
            "unknown_difficulty", f"difficulty {value!r} is not one of easy, medium, hard"
        )
    return found


def parse_occurred_at(value: str | int) -> int:
    """An RFC 3339 timestamp with a zone, or epoch milliseconds from 2000-01-01 on, as
    epoch milliseconds."""
    if isinstance(value, int):
        if isinstance(value, bool) or not 0 <= value <= MAX_EPOCH_MS:
            raise InvalidAttemptError(
                "invalid_field", f"occurred_at {value!r} is not epoch milliseconds"
            )
        if value < MIN_EPOCH_MS:
            raise InvalidAttemptError(
                "implausible_time",
                f"occurred_at {value} is before 2000-01-01 in epoch milliseconds; it looks "
                "like epoch seconds: send milliseconds (seconds x 1000) or an RFC 3339 string",
            )
        return value
    if not _RFC3339_RE.fullmatch(value):
        raise InvalidAttemptError(
            "invalid_field",
            f"occurred_at {value[:64]!r} is not an RFC 3339 timestamp with a time zone "
            "(e.g. 2026-11-24T09:00:00Z) nor epoch milliseconds",
        )
    text = value.upper().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    fraction = ""
    if "." in text:  # fromisoformat takes at most microseconds; keep milliseconds
        head, _, rest = text.partition(".")
        digits = rest[: len(rest) - 6]
        fraction = digits[:3].ljust(3, "0")
        text = head + rest[len(rest) - 6 :]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidAttemptError(
            "invalid_field", f"occurred_at {value!r} is not a valid date and time"
        ) from None
    seconds = (moment - _EPOCH).total_seconds()
    if seconds < 0:  # as for epoch milliseconds, and as the file loaders decide
        raise InvalidAttemptError("invalid_field", f"occurred_at {value!r} is before 1970")
    millis = int(seconds) * 1000 + int(fraction or "0")
    if millis > MAX_EPOCH_MS:
        raise InvalidAttemptError("invalid_field", f"occurred_at {value!r} is out of range")
    return millis


def _id(value: int | str, name: str) -> int:
    """An id as an integer (a decimal string checked against 2^63-1)."""
    if isinstance(value, int):
        return value
    number = int(value)
    if number > MAX_ID:
        raise InvalidAttemptError(
            "invalid_field", f"{name} {value!r} is above 2^63-1 (9223372036854775807)"
        )
    return number


def _from_wire(wire: AttemptEvent, modes: LearningModes, record_ms: int | None) -> Attempt:
    user_id = _id(wire.user_id, "user_id")
    sub_topic_id = _id(wire.sub_topic_id, "sub_topic_id")
    learning_mode = modes.normalise(wire.learning_mode)
    question_id = _id(wire.question_id, "question_id")
    difficulty = parse_difficulty(wire.difficulty)
    occurred = parse_occurred_at(wire.occurred_at)
    if record_ms is not None and record_ms > 0 and occurred > record_ms + FUTURE_TOLERANCE_MS:
        raise InvalidAttemptError(
            "implausible_time",
            f"occurred_at {wire.occurred_at!r} is more than 24 hours after the record was "
            "produced (its Kafka timestamp); is the device's clock wrong?",
        )
    return Attempt(
        attempt_id=wire.attempt_id,
        user_id=user_id,
        sub_topic_id=sub_topic_id,
        learning_mode=learning_mode,
        question_id=question_id,
        difficulty=difficulty,
        is_correct=wire.is_correct,
        occurred_at=occurred,
        attempt_number=wire.attempt_number,
        time_spent_ms=wire.time_spent_ms,
        schema_version=wire.schema_version,
    )


def _field_error(exc: msgspec.ValidationError) -> InvalidAttemptError:
    message = str(exc)
    if message.startswith("Object missing required field"):
        return InvalidAttemptError("missing_field", message)
    return InvalidAttemptError("invalid_field", message)


def _decode_value(decoder: msgspec.json.Decoder[W], value: bytes | None) -> W:
    """A record's value decoded as ``decoder``'s type; InvalidAttemptError (with the
    class SPEC 2 gives) if it is missing, oversized, not JSON, not UTF-8 or malformed."""
    if value is None:
        raise InvalidAttemptError("invalid_json", "the record has no value (a tombstone)")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidAttemptError(
            "oversized", f"value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES}"
        )
    try:
        return decoder.decode(value)
    except msgspec.ValidationError as exc:
        raise _field_error(exc) from None
    except UnicodeDecodeError as exc:  # older msgspec releases
        raise InvalidAttemptError("invalid_utf8", f"value is not valid UTF-8: {exc}") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        # Newer msgspec reports bad UTF-8 as a DecodeError; tell it apart here, off the
        # hot path, so that the class does not depend on the msgspec release.
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise InvalidAttemptError("invalid_utf8", f"value is not valid UTF-8: {bad}") from None
        raise InvalidAttemptError("invalid_json", f"value is not valid JSON: {exc}") from None


def decode_attempt(
    value: bytes | None, modes: LearningModes, record_ms: int | None = None
) -> Attempt:
    """Validate one raw Kafka record value; raise InvalidAttemptError if it breaks SPEC 2.
    ``record_ms``: the record's Kafka timestamp (an ``occurred_at`` more than 24 hours
    after it is implausible)."""
    return _from_wire(_decode_value(_DECODER, value), modes, record_ms)


def decode_record(
    value: bytes | None, modes: LearningModes, record_ms: int | None = None
) -> Attempt | AttemptVoid:
    """A record of the attempts topic: an attempt (:func:`decode_attempt`) or a void (a
    JSON object whose first field is ``void``)."""
    if value is None or not value.startswith(_VOID_HEAD):
        return decode_attempt(value, modes, record_ms)
    wire = _decode_value(_VOID_DECODER, value)
    return AttemptVoid(
        attempt_id=wire.void,
        user_id=_id(wire.user_id, "user_id"),
        sub_topic_id=_id(wire.sub_topic_id, "sub_topic_id"),
        learning_mode=modes.normalise(wire.learning_mode),
        occurred_at=parse_occurred_at(wire.occurred_at),
        voided_by=wire.voided_by,
    )


def attempt_from_mapping(data: Mapping[str, Any], modes: LearningModes) -> Attempt:
    """Validate an attempt given as a mapping (the producer's and the file loaders' way in)."""
    try:
        wire = msgspec.convert(data, AttemptEvent, strict=True)
    except msgspec.ValidationError as exc:
        raise _field_error(exc) from None
    return _from_wire(wire, modes, None)


def scope_key(user_id: int, sub_topic_id: int, learning_mode: LearningModeType | str) -> ScopeKey:
    """A validated :class:`ScopeKey`; InvalidScopeError for malformed parts."""
    for name, value in (("user_id", user_id), ("sub_topic_id", sub_topic_id)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
            raise InvalidScopeError(f"{name} must be an integer from 1 to 2**63-1, got {value!r}")
    mode = learning_mode.value if isinstance(learning_mode, LearningModeType) else learning_mode
    mode = mode.lower() if isinstance(mode, str) else mode
    if not isinstance(mode, str) or not MODE_NAME_RE.fullmatch(mode):
        raise InvalidScopeError(
            f"learning_mode {learning_mode!r} is not a valid mode name "
            "(1 to 32 of a-z 0-9 _ -, starting with a letter)"
        )
    return ScopeKey(user_id, sub_topic_id, mode)
