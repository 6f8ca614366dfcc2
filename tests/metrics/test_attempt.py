"""The one attempt decoder (SPEC 2): what it accepts and the class of every rejection."""

from __future__ import annotations

import json
from typing import Any

import pytest

from performance_engine.errors import InvalidAttemptError
from performance_engine.metrics.attempt import (
    MAX_VALUE_BYTES,
    Attempt,
    attempt_from_mapping,
    decode_attempt,
    parse_occurred_at,
)
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.types import DifficultyEnum
from tests.helpers import raw

MODES = LearningModes.default()


def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def rejection(value: bytes | None) -> str:
    with pytest.raises(InvalidAttemptError) as info:
        decode_attempt(value, MODES)
    assert info.value.reason  # every rejection says why
    return info.value.error_class


def test_valid_attempt_is_normalised() -> None:
    value = encode(
        raw(
            attempt_id="x-1",
            learning_mode="STANDARD",
            difficulty="Hard",
            occurred_at="2026-11-24T10:00:00.1234+01:00",
            attempt_number=2,
            time_spent_ms=0,
            extra_field={"ignored": True},
        )
    )
    assert decode_attempt(value, MODES) == Attempt(
        attempt_id="x-1",
        user_id=123,
        sub_topic_id=456,
        learning_mode="standard",
        question_id=1,
        difficulty=DifficultyEnum.HARD,
        is_correct=True,
        occurred_at=1_795_510_800_123,
        attempt_number=2,
        time_spent_ms=0,
        schema_version=1,
    )


def test_json_round_trip_of_attempt() -> None:
    attempt = attempt_from_mapping(raw(), MODES)
    assert decode_attempt(attempt.to_json(), MODES) == attempt


@pytest.mark.parametrize(
    ("value", "error_class"),
    [
        (b"x" * (MAX_VALUE_BYTES + 1), "oversized"),
        (b'{"attempt_id": "\xff"}', "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (None, "invalid_json"),
        (b"[" * 30_000 + b"]" * 30_000, "invalid_field"),
        (b'{"x":' + b"[" * 30_000 + b"]" * 30_000 + b"}", "invalid_json"),
        (encode({k: v for k, v in raw().items() if k != "user_id"}), "missing_field"),
        (encode(raw(user_id="0123")), "invalid_field"),
        (encode(raw(user_id="1e3")), "invalid_field"),
        (encode(raw(user_id=" 123")), "invalid_field"),
        (encode(raw(user_id="-5")), "invalid_field"),
        (encode(raw(user_id="0")), "invalid_field"),
        (encode(raw(sub_topic_id="9223372036854775808")), "invalid_field"),
        (encode(raw(question_id="12.0")), "invalid_field"),
        (encode(raw(occurred_at=1_795_510_800)), "implausible_time"),  # seconds, not ms
        (encode(raw(occurred_at=946_684_799_999)), "implausible_time"),
        (encode(raw(user_id=True)), "invalid_field"),
        (encode(raw(user_id=0)), "invalid_field"),
        (encode(raw(user_id=2**63)), "invalid_field"),
        (encode(raw(question_id=1.0)), "invalid_field"),
        (encode(raw(is_correct=1)), "invalid_field"),
        (encode(raw(is_correct="true")), "invalid_field"),
        (encode(raw(attempt_id="")), "invalid_field"),
        (encode(raw(attempt_id="a" * 129)), "invalid_field"),
        (encode(raw(occurred_at="2026-11-24T09:00:00")), "invalid_field"),
        (encode(raw(occurred_at="yesterday")), "invalid_field"),
        (encode(raw(occurred_at=-1)), "invalid_field"),
        (encode(raw(occurred_at=0)), "implausible_time"),
        (encode(raw(occurred_at="2026-02-30T09:00:00Z")), "invalid_field"),
        (encode(raw(attempt_number=0)), "invalid_field"),
        (encode(raw(time_spent_ms=-5)), "invalid_field"),
        (encode([raw()]), "invalid_field"),
        (encode(raw(learning_mode="cram")), "unknown_learning_mode"),
        (encode(raw(difficulty="extreme")), "unknown_difficulty"),
    ],
)
def test_rejections_have_their_class(value: bytes | None, error_class: str) -> None:
    assert rejection(value) == error_class


def test_attempt_id_limit_counts_characters_not_bytes() -> None:
    value = encode(raw(attempt_id="é" * 128))
    assert decode_attempt(value, MODES).attempt_id == "é" * 128


def test_optional_fields_may_be_null() -> None:
    value = encode(raw(attempt_number=None, time_spent_ms=None))
    decoded = decode_attempt(value, MODES)
    assert (decoded.attempt_number, decoded.time_spent_ms) == (None, None)


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01t00:00:00.999z", 999),
        ("1970-01-01 01:00:00+01:00", 0),
        ("1970-01-01T00:00:00.123456789Z", 123),
        (1_795_510_800_000, 1_795_510_800_000),
        (946_684_800_000, 946_684_800_000),  # 2000-01-01, the first integer accepted
    ],
)
def test_occurred_at_forms(text: str | int, millis: int) -> None:
    assert parse_occurred_at(text) == millis


def test_mapping_and_bytes_paths_agree() -> None:
    data = raw(learning_mode="Mastery", difficulty="MEDIUM")
    assert attempt_from_mapping(data, MODES) == decode_attempt(encode(data), MODES)
    with pytest.raises(InvalidAttemptError, match="bool"):
        attempt_from_mapping(raw(user_id=True), MODES)


def test_ids_may_be_canonical_decimal_strings() -> None:
    """How languages whose JSON numbers are doubles send ids above 2^53 exactly (and how
    node-postgres returns a BIGINT)."""
    found = decode_attempt(
        encode(
            raw(user_id="1003", sub_topic_id="9223372036854775807", question_id="9007199254740993")
        ),
        MODES,
    )
    assert (found.user_id, found.sub_topic_id, found.question_id) == (
        1003, 2**63 - 1, 2**53 + 1
    )  # fmt: skip
    assert found == decode_attempt(
        encode(raw(user_id=1003, sub_topic_id=2**63 - 1, question_id=2**53 + 1,
                   attempt_id=found.attempt_id)),
        MODES,
    )  # fmt: skip


def test_epoch_seconds_are_refused_with_a_reason_that_says_so() -> None:
    with pytest.raises(InvalidAttemptError) as refused:
        decode_attempt(encode(raw(occurred_at=1_795_510_800)), MODES)
    assert refused.value.error_class == "implausible_time"
    assert "looks like epoch seconds" in refused.value.reason


def test_an_attempt_a_day_after_its_record_is_implausible() -> None:
    """Judged against the record's own Kafka timestamp, so a replay gives the same verdict."""
    record_ms = 1_795_510_800_000
    day = 24 * 3600 * 1000
    ok = decode_attempt(encode(raw(occurred_at=record_ms + day)), MODES, record_ms)
    assert ok.occurred_at == record_ms + day
    with pytest.raises(InvalidAttemptError) as refused:
        decode_attempt(encode(raw(occurred_at=record_ms + day + 1)), MODES, record_ms)
    assert refused.value.error_class == "implausible_time"
    assert "24 hours after the record" in refused.value.reason
    # No record timestamp (a file, the producer's own check): nothing to compare with.
    assert decode_attempt(encode(raw(occurred_at=record_ms + 10 * day)), MODES).occurred_at
