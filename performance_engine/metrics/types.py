"""The domain vocabulary: difficulties, completion, learning modes, a history entry and
the stats record. Everything else in ``metrics`` (and the settings) builds on these; this
module imports nothing of the engine's."""

from __future__ import annotations

from enum import Enum
from typing import Any

import msgspec

__all__ = [
    "DIFFICULTIES",
    "DIFFICULTY_INDEX",
    "CompletionStatusEnum",
    "DifficultyEnum",
    "Entry",
    "LearningModeType",
    "LearningStats",
    "PerformanceStatsData",
    "ScopeKey",
    "with_custom_metrics",
    "with_revision",
]


class DifficultyEnum(str, Enum):
    EASY = "easy"
    MEDIUM = "medium"
    HARD = "hard"


#: Every difficulty in its canonical order (easy < medium < hard); index = difficulty code.
DIFFICULTIES: tuple[DifficultyEnum, ...] = tuple(DifficultyEnum)
DIFFICULTY_INDEX = {d: i for i, d in enumerate(DIFFICULTIES)}

#: One attempt of a scope's history (``metrics.history``): (occurred_at, attempt_id,
#: question_id, difficulty code, is_correct, attempt_number, time_spent_ms). The one
#: definition of the entry's fields and their order: the history's stored form is this
#: tuple as a msgpack array, and its compiled writer checks its width against it.
Entry = tuple[int, str, int, int, bool, int | None, int | None]


class CompletionStatusEnum(str, Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"


class LearningModeType(str, Enum):
    """The built-in learning modes. More can be configured (see ``metrics.modes``)."""

    STANDARD = "standard"
    PRACTICE = "practice"
    MASTERY = "mastery"


class ScopeKey(msgspec.Struct, frozen=True, order=True, array_like=True):
    """What stats are kept per: one learner, one sub-topic, one learning mode."""

    user_id: int
    sub_topic_id: int
    learning_mode: str

    def __str__(self) -> str:
        return f"{self.user_id}:{self.sub_topic_id}:{self.learning_mode}"


class LearningStats(msgspec.Struct, frozen=True, kw_only=True):
    """The sequential metrics of one scope (SPEC 3.1), the ``learning`` block of its stats."""

    mastery_probability: float
    mastered: bool
    predicted_correct: dict[DifficultyEnum, float]
    recommended_difficulty: DifficultyEnum
    recent_accuracy: float
    current_streak: int
    longest_streak: int
    first_attempt_accuracy: dict[DifficultyEnum, float | None]
    #: Which parameters produced these values (SPEC 3.2): a fitted set's version,
    #: ``mode:<hash>`` for a mode file's, or ``defaults``.
    params_version: str = "defaults"


class PerformanceStatsData(msgspec.Struct, frozen=True, kw_only=True):
    """The latest stats of one scope; its JSON form is SPEC section 4.

    Per-difficulty fields are dicts keyed by :class:`DifficultyEnum` with every
    difficulty present. Timestamps are RFC 3339 strings in UTC (millisecond precision).
    ``version`` counts the distinct attempts applied; ``revision`` rises by one with every
    change of the scope's stored stats and never falls (compare-and-set, "newer than").
    ``scope`` is ``"<user_id>:<sub_topic_id>:<learning_mode>"``, exact for any id in any
    language (filled in from the three when not given; :attr:`scope_key` is the key).
    """

    scope: str = ""
    user_id: int
    sub_topic_id: int
    learning_mode: str
    version: int
    revision: int = 0  # stats written before revisions existed have none
    total_attempts: int
    total_correct_attempts: int
    attempts: dict[DifficultyEnum, int]
    correct_attempts: dict[DifficultyEnum, int]
    difficulty_scores: dict[DifficultyEnum, int]
    average_attempts: dict[DifficultyEnum, float | None]
    accuracy: dict[DifficultyEnum, float | None]
    difficulty_completion: dict[DifficultyEnum, CompletionStatusEnum]
    passed_difficulties: list[DifficultyEnum]
    failed_difficulties: list[DifficultyEnum]
    difficulty_ranking: list[DifficultyEnum]
    first_attempt_at: str | None
    last_attempt_at: str | None
    learning: LearningStats | None = None
    custom_metrics: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.scope:  # built without it, or written before stats carried it
            text = f"{self.user_id}:{self.sub_topic_id}:{self.learning_mode}"
            msgspec.structs.force_setattr(self, "scope", text)

    @property
    def scope_key(self) -> ScopeKey:
        return ScopeKey(self.user_id, self.sub_topic_id, self.learning_mode)

    def to_json(self) -> bytes:
        return _ENCODER.encode(self)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result

    @classmethod
    def from_json(cls, data: bytes | str) -> PerformanceStatsData:
        return _DECODER.decode(data)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(PerformanceStatsData)


# -- edits of a written stats JSON, where rewriting the whole record would cost more --------
# They rely on the field order above: ``revision`` among the first fields, before any text
# a custom metric writes, and ``custom_metrics`` last (checked here, at import).
_FIELDS = PerformanceStatsData.__struct_fields__
if _FIELDS[-1] != "custom_metrics" or _FIELDS.index("revision") > _FIELDS.index("learning"):
    raise ImportError("with_revision and with_custom_metrics rely on the stats' field order")

_NO_CUSTOM_METRICS = b'"custom_metrics":{}}'
_REVISION = b',"revision":'


def with_custom_metrics(stats_json: bytes, custom: dict[str, Any]) -> bytes:
    """A stats JSON written without custom metrics (it ends with an empty
    ``custom_metrics``), with ``custom`` in their place: the bytes ``to_json`` gives."""
    if not custom:
        return stats_json
    if not stats_json.endswith(_NO_CUSTOM_METRICS):
        raise ValueError("the stats JSON does not end with an empty custom_metrics")
    return stats_json[:-3] + _ENCODER.encode(custom) + b"}"


def with_revision(stats_json: bytes, revision: int) -> bytes:
    """A stats JSON with its ``revision`` replaced (the top-level one: it comes before
    any custom metric's text), the bytes ``to_json`` gives at that revision."""
    at = stats_json.index(_REVISION) + len(_REVISION)
    end = stats_json.index(b",", at)
    return b"%s%d%s" % (stats_json[:at], revision, stats_json[end:])
