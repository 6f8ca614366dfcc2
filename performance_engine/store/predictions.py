"""A stored scope's next-answer prediction (SPEC 3.3), read from Redis: what the read
API (``PerformanceStats.predict``) and the worker's ``GET /predict`` serve.

The prediction comes from the scope's stored learning values and the calculator's
parameters (those in force: follow a published set with ``store.params.ParamsFollower``
first). Values folded with other parameters are folded again from the scope's history
(read from its own key when it is kept there), so the number is what the worker would
store after a refold, never a stale one. A scope with no attempts gets the prior's
prediction (``version`` 0).
"""

from __future__ import annotations

import msgspec

from performance_engine.errors import InvalidScopeError
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.history import Entry
from performance_engine.metrics.state import ScopeState
from performance_engine.metrics.types import DIFFICULTIES, DifficultyEnum, ScopeKey
from performance_engine.store.stats_store import AsyncStatsStore, StatsStore

__all__ = ["Prediction", "difficulty_index", "predict", "predict_async"]


class Prediction(msgspec.Struct, frozen=True):
    """P(the next answer is right), the parameters' version, and the scope's ``version``
    (distinct attempts applied; 0 for a scope with none)."""

    p: float
    params_version: str
    version: int


def difficulty_index(difficulty: DifficultyEnum | str | int) -> int:
    """0, 1, 2 for easy, medium, hard (a name in any case, or the index itself)."""
    if isinstance(difficulty, int) and not isinstance(difficulty, bool) and 0 <= difficulty <= 2:
        return difficulty
    name = difficulty.value if isinstance(difficulty, DifficultyEnum) else difficulty
    if isinstance(name, str):
        for i, d in enumerate(DIFFICULTIES):
            if name.lower() == d.value:
                return i
    raise InvalidScopeError(f"difficulty must be easy, medium or hard, got {difficulty!r}")


def _checked(calculator: MetricsCalculator, scope: ScopeKey, question_id: int) -> None:
    if scope.learning_mode not in calculator.learning_modes.rules:
        known = ", ".join(calculator.learning_modes.names)
        raise InvalidScopeError(
            f"learning_mode {scope.learning_mode!r} is not configured; known modes: {known}"
        )
    if isinstance(question_id, bool) or not isinstance(question_id, int) or question_id < 0:
        raise InvalidScopeError(f"question_id must be a whole number, got {question_id!r}")


def _prediction(
    calculator: MetricsCalculator,
    scope: ScopeKey,
    found: ScopeState | None,
    question_id: int,
    d: int,
    history: list[Entry] | None = None,
) -> Prediction | None:
    state = found if found is not None else calculator.new_state()
    p = calculator.predict(scope, state, question_id, d, history)
    if p is None:
        return None
    return Prediction(p, calculator.group(scope).version, state.version)


def _wants_history(found: ScopeState, prediction: Prediction | None) -> bool:
    """Whether a prediction failed only for want of the history kept in its own key
    (values folded with other parameters, to be folded again)."""
    return prediction is None and found.spilled and found.history_complete


def predict(
    store: StatsStore,
    calculator: MetricsCalculator,
    scope: ScopeKey,
    question_id: int,
    difficulty: DifficultyEnum | str | int,
) -> Prediction | None:
    """The scope's prediction for a question; None while its learning values are unknown
    (state from the first release, or a lost history)."""
    _checked(calculator, scope, question_id)
    d = difficulty_index(difficulty)
    (found,) = store.read_states([scope])
    prediction = _prediction(calculator, scope, found, question_id, d)
    if found is not None and _wants_history(found, prediction):
        (history,) = store.read_histories([(scope, found.history)])
        prediction = _prediction(calculator, scope, found, question_id, d, history)
    return prediction


async def predict_async(
    store: AsyncStatsStore,
    calculator: MetricsCalculator,
    scope: ScopeKey,
    question_id: int,
    difficulty: DifficultyEnum | str | int,
) -> Prediction | None:
    """:func:`predict` through the asyncio store."""
    _checked(calculator, scope, question_id)
    d = difficulty_index(difficulty)
    (found,) = await store.read_states([scope])
    prediction = _prediction(calculator, scope, found, question_id, d)
    if found is not None and _wants_history(found, prediction):
        (history,) = await store.read_histories([(scope, found.history)])
        prediction = _prediction(calculator, scope, found, question_id, d, history)
    return prediction
