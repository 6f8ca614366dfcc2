"""The rolling state of one scope, and how one attempt changes it.

The state is a mergeable aggregate: counters per difficulty, the distinct question ids
attempted and answered correctly per difficulty, first/last timestamps, and the
fingerprints of every attempt already applied. Every built-in metric of SPEC 3 derives
from it in O(1); applying an attempt is O(log n) plus a memory copy. Beside it, the state
carries the running values of the sequential metrics (SPEC 3.1) after the last attempt in
learning order, and how many attempts the scope's history (``metrics.history``, stored
apart) holds.

Format 2 appended the fields from ``history`` on; format 3 (this one) appended
``revision``. A state of an earlier format decodes with ``revision == 0``; the store then
takes its revision from the value's header, which held its version. A format-1 state (written
before the history existed) decodes with ``history == 0`` while ``version > 0``: its
sequential metrics cannot be known until its history is rebuilt (see
``MetricsCalculator``), and they are reported as unknown meanwhile, never guessed.

Sets are kept as sorted arrays of unsigned 64-bit little-endian integers packed into
``bytes``: compact in Redis, searchable with ``bisect`` without unpacking, and buildable
from numpy in the batch path without a Python object per element.

An attempt's fingerprint is the 64-bit XXH3 hash of its UTF-8 ``attempt_id``. Two distinct
ids of one scope collide with probability about n²/2⁶⁵ (n = attempts of that scope:
10⁻¹¹ for 10,000 attempts); a collision would drop the later attempt as a duplicate.
"""

from __future__ import annotations

import struct
import sys
from bisect import bisect_left
from typing import Any

import msgspec
import xxhash

from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.history import DIFFICULTY_INDEX, Entry, decode_entries
from performance_engine.metrics.learning import LearningState

__all__ = [
    "APPLIED",
    "DUPLICATE",
    "NEW_QUESTION",
    "ScopeState",
    "decode_state",
    "encode_state",
    "fingerprint",
    "insert_sorted",
]

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("performance_engine's packed state needs a little-endian platform")


def fingerprint(attempt_id: str) -> int:
    """The 64-bit fingerprint an attempt is deduplicated by."""
    return xxhash.xxh3_64_intdigest(attempt_id.encode("utf-8", "surrogatepass"))


_PACK = struct.Struct("<Q").pack


def insert_sorted(blob: bytes, value: int) -> bytes | None:
    """``blob`` (sorted packed uint64) with ``value`` inserted, or None if already there."""
    if not blob:
        return _PACK(value)
    view = memoryview(blob).cast("Q")
    at = bisect_left(view, value)
    if at < len(view) and view[at] == value:
        return None
    cut = at * 8
    return blob[:cut] + _PACK(value) + blob[cut:]


def _three_ints() -> list[int]:
    return [0, 0, 0]


def _three_blobs() -> list[bytes]:
    return [b"", b"", b""]


#: What :meth:`ScopeState.apply` did.
DUPLICATE, APPLIED, NEW_QUESTION = 0, 1, 2


def _contains(blob: bytes, value: int) -> bool:
    view = memoryview(blob).cast("Q")
    at = bisect_left(view, value)
    return at < len(view) and view[at] == value


class ScopeState(msgspec.Struct, array_like=True, gc=False):
    """Everything the metrics of one scope are derived from.

    ``log`` is read from format-1 states only (the latest attempts, kept then for
    frame-based metrics). ``history``: attempts in the scope's history, which is kept
    here (``inline``, encoded as in ``metrics.history``) while it is small and in a key
    of its own once it has grown (``spilled``); ``tail_id``: the ``attempt_id`` of the
    last attempt in learning order (its time is ``last_at``);
    ``learning`` and ``sequential``: the built-in and custom sequential folds after it
    (``sequential`` is None while no custom sequential metric is registered);
    ``signature``: of the parameters and metrics they were folded with; ``revision``:
    how many times the scope's stored stats changed (set by the writers, never by the
    metrics: 0 until stored).
    """

    version: int = 0
    first_at: int | None = None
    last_at: int | None = None
    attempts: list[int] = msgspec.field(default_factory=_three_ints)
    correct: list[int] = msgspec.field(default_factory=_three_ints)
    questions: list[bytes] = msgspec.field(default_factory=_three_blobs)
    solved: list[bytes] = msgspec.field(default_factory=_three_blobs)
    seen: bytes = b""
    custom: dict[str, Any] = msgspec.field(default_factory=dict)
    log: tuple[Entry, ...] = ()
    history: int = 0
    spilled: bool = False
    inline: bytes = b""
    tail_id: str = ""
    learning: LearningState | None = None
    sequential: dict[str, Any] | None = None
    signature: int = 0
    revision: int = 0

    @property
    def history_complete(self) -> bool:
        """Whether the stored history holds every applied attempt (false for format 1)."""
        return self.history == self.version

    def inline_entries(self) -> list[Entry]:
        """The history kept in the state (empty once it has its own key)."""
        return decode_entries(self.inline, self.history) if self.inline else []

    def has_seen(self, fp: int) -> bool:
        return _contains(self.seen, fp)

    def has_question(self, difficulty: int, question: int) -> bool:
        """Whether ``question`` was attempted at the difficulty of index ``difficulty``."""
        return _contains(self.questions[difficulty], question)

    def apply(self, attempt: Attempt, fp: int) -> int:
        """Apply one attempt in place: :data:`DUPLICATE` (and no change) if it was applied
        before, else :data:`APPLIED`, or :data:`NEW_QUESTION` if it is its question's
        first attempt at its difficulty."""
        seen = insert_sorted(self.seen, fp)
        if seen is None:
            return DUPLICATE
        self.seen = seen
        index = DIFFICULTY_INDEX[attempt.difficulty]
        self.version += 1
        self.attempts[index] += 1
        question = attempt.question_id
        questions = insert_sorted(self.questions[index], question)
        if questions is not None:
            self.questions[index] = questions
        if attempt.is_correct:
            self.correct[index] += 1
            solved = insert_sorted(self.solved[index], question)
            if solved is not None:
                self.solved[index] = solved
        at = attempt.occurred_at
        if self.first_at is None or at < self.first_at:
            self.first_at = at
        if self.last_at is None or at > self.last_at:
            self.last_at = at
        return APPLIED if questions is None else NEW_QUESTION

    def copy(self) -> ScopeState:
        return ScopeState(
            self.version,
            self.first_at,
            self.last_at,
            list(self.attempts),
            list(self.correct),
            list(self.questions),
            list(self.solved),
            self.seen,
            _deep_copy(self.custom),
            self.log,
            self.history,
            self.spilled,
            self.inline,
            self.tail_id,
            None if self.learning is None else self.learning.copy(),
            None if self.sequential is None else _deep_copy(self.sequential),
            self.signature,
            self.revision,
        )


def _deep_copy(values: dict[str, Any]) -> dict[str, Any]:
    if not values:
        return {}
    copied: dict[str, Any] = msgspec.msgpack.decode(msgspec.msgpack.encode(values))
    return copied


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(ScopeState)


def encode_state(state: ScopeState) -> bytes:
    return _ENCODER.encode(state)


def decode_state(data: bytes) -> ScopeState:
    return _DECODER.decode(data)
