"""The built-in metrics (SPEC 3), derived from a :class:`ScopeState` in O(1).

One function computes them all in one pass over the three difficulties, because it runs
for every changed scope on the hot path of the stream and for every scope in a backfill.
For each difficulty d (index 0, 1, 2 = easy, medium, hard):

* ``attempts[d]``, ``correct_attempts[d]``: counters of the state.
* ``difficulty_scores[d]`` (the seed's "Difficulty Score"): distinct questions answered
  correctly at least once.
* ``average_attempts[d]`` = attempts / distinct questions attempted; ``None`` if none.
* ``accuracy[d]`` = correct attempts / attempts; ``None`` if none.
* ``difficulty_completion[d]`` (the seed's "Difficulty Completion"): complete when the
  difficulty score reaches the learning mode's requirement.
* ``passed_difficulties``: the complete ones; ``failed_difficulties``: attempted and not
  complete; both in the order easy, medium, hard.
* ``difficulty_ranking`` (the seed's "Difficulty Ranking"): attempted difficulties by
  exact average attempts (compared as fractions), ties easy < medium < hard.
* totals, first and last ``occurred_at``, ``version`` (distinct attempts applied) and
  ``revision`` (the state's: how many times its stored stats changed).

Floats are rounded to 4 decimals.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import Any

from performance_engine.metrics.state import ScopeState
from performance_engine.metrics.types import DIFFICULTIES, CompletionStatusEnum

__all__ = ["BUILTIN_FIELDS", "builtin_fields", "format_timestamp"]

#: The PerformanceStatsData fields the built-in metrics fill.
BUILTIN_FIELDS = (
    "version",
    "revision",
    "total_attempts",
    "total_correct_attempts",
    "attempts",
    "correct_attempts",
    "difficulty_scores",
    "average_attempts",
    "accuracy",
    "difficulty_completion",
    "passed_difficulties",
    "failed_difficulties",
    "difficulty_ranking",
    "first_attempt_at",
    "last_attempt_at",
)

E, M, H = DIFFICULTIES
_COMPLETE = CompletionStatusEnum.COMPLETE
_INCOMPLETE = CompletionStatusEnum.INCOMPLETE
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=65536)
def _second(seconds: int) -> str:
    days, second_of_day = divmod(seconds, 86400)
    hours, rest = divmod(second_of_day, 3600)
    minutes, secs = divmod(rest, 60)
    day = date.fromordinal(_EPOCH_ORDINAL + days).isoformat()
    return f"{day}T{hours:02d}:{minutes:02d}:{secs:02d}."


def format_timestamp(epoch_ms: int | None) -> str | None:
    """Epoch milliseconds as RFC 3339 UTC with millisecond precision (``...T09:00:00.000Z``)."""
    if epoch_ms is None:
        return None
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_second(seconds)}{millis:03d}Z"


def builtin_fields(state: ScopeState, required: tuple[int, int, int]) -> dict[str, Any]:
    """Every built-in metric of one scope, as PerformanceStatsData fields."""
    a0, a1, a2 = state.attempts
    c0, c1, c2 = state.correct
    questions, solved = state.questions, state.solved
    q0, q1, q2 = len(questions[0]) >> 3, len(questions[1]) >> 3, len(questions[2]) >> 3
    s0, s1, s2 = len(solved[0]) >> 3, len(solved[1]) >> 3, len(solved[2]) >> 3
    r0, r1, r2 = required
    done0, done1, done2 = s0 >= r0, s1 >= r1, s2 >= r2
    passed = []
    failed = []
    for d, done, count in ((E, done0, a0), (M, done1, a1), (H, done2, a2)):
        if done:
            passed.append(d)
        elif count:
            failed.append(d)
    # Exact ranking: compare a/q as fractions by cross-multiplying, via a stable sort.
    tried = [(a, q, d) for a, q, d in ((a0, q0, E), (a1, q1, M), (a2, q2, H)) if a]
    for i in range(1, len(tried)):  # insertion sort of at most three
        j = i
        while j and tried[j][0] * tried[j - 1][1] < tried[j - 1][0] * tried[j][1]:
            tried[j - 1], tried[j] = tried[j], tried[j - 1]
            j -= 1
    return {
        "version": state.version,
        "revision": state.revision,
        "total_attempts": a0 + a1 + a2,
        "total_correct_attempts": c0 + c1 + c2,
        "attempts": {E: a0, M: a1, H: a2},
        "correct_attempts": {E: c0, M: c1, H: c2},
        "difficulty_scores": {E: s0, M: s1, H: s2},
        "average_attempts": {
            E: round(a0 / q0, 4) if q0 else None,
            M: round(a1 / q1, 4) if q1 else None,
            H: round(a2 / q2, 4) if q2 else None,
        },
        "accuracy": {
            E: round(c0 / a0, 4) if a0 else None,
            M: round(c1 / a1, 4) if a1 else None,
            H: round(c2 / a2, 4) if a2 else None,
        },
        "difficulty_completion": {
            E: _COMPLETE if done0 else _INCOMPLETE,
            M: _COMPLETE if done1 else _INCOMPLETE,
            H: _COMPLETE if done2 else _INCOMPLETE,
        },
        "passed_difficulties": passed,
        "failed_difficulties": failed,
        "difficulty_ranking": [d for _, _, d in tried],
        "first_attempt_at": format_timestamp(state.first_at),
        "last_attempt_at": format_timestamp(state.last_at),
    }
