"""A scope's attempt history: each distinct attempt once, in learning order, compactly.

Sequential metrics are defined over the attempts in learning order (``occurred_at``, then
``attempt_id``). The stream folds an attempt that comes after everything applied in O(1);
one that arrives out of order is put in its place in the history and the sequential
metrics are folded again over it, which gives exactly the in-order result.

An entry is the tuple ``metrics.types.Entry``. A history is the concatenation of each entry's
msgpack encoding (an array of seven), read back by putting an array header with the entry
count (kept in the scope's state) in front. About 20 bytes plus the length of the
``attempt_id`` per attempt. A small history is kept inside the scope's state; a large one
in a Redis key of its own, where an attempt that comes last is added with one ``APPEND``
and nothing is rewritten.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import msgspec

from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.types import DIFFICULTIES, DIFFICULTY_INDEX, Entry, ScopeKey

__all__ = [
    "DIFFICULTY_INDEX",
    "Entry",
    "HistoryError",
    "HistoryWrite",
    "attempt_of",
    "decode_entries",
    "encode_entries",
    "encode_entry",
    "entry_of",
    "learning_key",
]

#: Learning order: occurred_at, then attempt_id (Python compares str by code point, which
#: is the order of their UTF-8 bytes).
learning_key = operator.itemgetter(0, 1)

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[Entry])


class HistoryError(Exception):
    """A stored history does not hold the number of entries its scope's state says."""


class HistoryWrite(msgspec.Struct, frozen=True, gc=False):
    """What to do to a scope's stored history: append ``data``, or replace it with it."""

    data: bytes
    replace: bool


def entry_of(attempt: Attempt) -> Entry:
    return (
        attempt.occurred_at,
        attempt.attempt_id,
        attempt.question_id,
        DIFFICULTY_INDEX[attempt.difficulty],
        attempt.is_correct,
        attempt.attempt_number,
        attempt.time_spent_ms,
    )


def attempt_of(scope: ScopeKey, entry: Entry) -> Attempt:
    occurred, attempt_id, question, difficulty, correct, number, spent = entry
    return Attempt(
        attempt_id=attempt_id,
        user_id=scope.user_id,
        sub_topic_id=scope.sub_topic_id,
        learning_mode=scope.learning_mode,
        question_id=question,
        difficulty=DIFFICULTIES[difficulty],
        is_correct=correct,
        occurred_at=occurred,
        attempt_number=number,
        time_spent_ms=spent,
    )


#: The stored form of one entry.
encode_entry = _ENCODER.encode


def encode_entries(entries: Iterable[Entry]) -> bytes:
    """The stored form of some entries; the form of a history is that of its entries joined."""
    return b"".join(map(encode_entry, entries))


def decode_entries(data: bytes, count: int) -> list[Entry]:
    """The ``count`` entries of a stored history, in learning order."""
    try:
        entries = _DECODER.decode(b"\xdd" + count.to_bytes(4, "big") + data)
    except (msgspec.DecodeError, OverflowError) as exc:
        raise HistoryError(
            f"the stored history ({len(data)} bytes) does not hold {count} attempts: {exc}"
        ) from None
    entries.sort(key=learning_key)  # a no-op for a history written in order
    return entries
