"""The built-in metrics (SPEC 3). Each derives its fields from a :class:`ScopeState` in O(1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from performance_engine.metrics.state import ScopeState
from performance_engine.metrics.types import (
    DIFFICULTIES,
    CompletionStatusEnum,
    DifficultyEnum,
    format_timestamp,
)

__all__ = [
    "BUILTIN_METRICS",
    "AccuracyMetric",
    "AverageAttemptsMetric",
    "BuiltinMetric",
    "DifficultyCompletionMetric",
    "DifficultyRankingMetric",
    "DifficultyScoreMetric",
    "TotalsMetric",
]

Required = tuple[int, int, int]


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _per_difficulty(values: Sequence[Any]) -> dict[DifficultyEnum, Any]:
    return dict(zip(DIFFICULTIES, values, strict=True))


class BuiltinMetric:
    """A built-in metric: the stats fields it owns, derived from the scope state."""

    name: ClassVar[str]

    def fields(self, state: ScopeState, required: Required) -> dict[str, Any]:
        raise NotImplementedError


class TotalsMetric(BuiltinMetric):
    name = "totals"

    def fields(self, state: ScopeState, required: Required) -> dict[str, Any]:
        return {
            "version": state.version,
            "total_attempts": sum(state.attempts),
            "total_correct_attempts": sum(state.correct),
            "attempts": _per_difficulty(state.attempts),
            "correct_attempts": _per_difficulty(state.correct),
            "first_attempt_at": format_timestamp(state.first_at),
            "last_attempt_at": format_timestamp(state.last_at),
        }


class DifficultyScoreMetric(BuiltinMetric):
    """The seed's "Difficulty Score": distinct questions answered correctly at least once."""

    name = "difficulty_scores"

    def fields(self, state: ScopeState, required: Required) -> dict[str, Any]:
        return {"difficulty_scores": _per_difficulty([state.questions_solved(i) for i in range(3)])}


class AverageAttemptsMetric(BuiltinMetric):
    name = "average_attempts"

    def fields(self, state: ScopeState, required: Required) -> dict[str, Any]:
        values = [_ratio(state.attempts[i], state.questions_attempted(i)) for i in range(3)]
        return {"average_attempts": _per_difficulty(values)}


class AccuracyMetric(BuiltinMetric):
    name = "accuracy"

    def fields(self, state: ScopeState, required: Required) -> dict[str, Any]:
        values = [_ratio(state.correct[i], state.attempts[i]) for i in range(3)]
        return {"accuracy": _per_difficulty(values)}


class DifficultyCompletionMetric(BuiltinMetric):
    """The seed's "Difficulty Completion", with the passed and failed difficulties."""

    name = "difficulty_completion"

    def fields(self, state: ScopeState, required: Required) -> dict[str, Any]:
        complete = [state.questions_solved(i) >= required[i] for i in range(3)]
        return {
            "difficulty_completion": _per_difficulty(
                [
                    CompletionStatusEnum.COMPLETE if done else CompletionStatusEnum.INCOMPLETE
                    for done in complete
                ]
            ),
            "passed_difficulties": [
                d for d, done in zip(DIFFICULTIES, complete, strict=True) if done
            ],
            "failed_difficulties": [
                d
                for i, (d, done) in enumerate(zip(DIFFICULTIES, complete, strict=True))
                if not done and state.attempts[i]
            ],
        }


class DifficultyRankingMetric(BuiltinMetric):
    """The seed's "Difficulty Ranking": attempted difficulties by average attempts."""

    name = "difficulty_ranking"

    def fields(self, state: ScopeState, required: Required) -> dict[str, Any]:
        attempted = [i for i in range(3) if state.attempts[i]]
        # Compare exact fractions a/q by cross-multiplying; ties keep easy < medium < hard.
        attempted.sort(
            key=lambda i: (_Fraction(state.attempts[i], state.questions_attempted(i)), i)
        )
        return {"difficulty_ranking": [DIFFICULTIES[i] for i in attempted]}


class _Fraction:
    """A non-negative fraction ordered exactly (no float rounding in the ranking)."""

    __slots__ = ("den", "num")

    def __init__(self, num: int, den: int) -> None:
        self.num = num
        self.den = den

    def __lt__(self, other: _Fraction) -> bool:
        return self.num * other.den < other.num * self.den

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Fraction) and self.num * other.den == other.num * self.den

    def __hash__(self) -> int:
        return hash(self.num / self.den)


BUILTIN_METRICS: tuple[BuiltinMetric, ...] = (
    TotalsMetric(),
    DifficultyScoreMetric(),
    AverageAttemptsMetric(),
    AccuracyMetric(),
    DifficultyCompletionMetric(),
    DifficultyRankingMetric(),
)
