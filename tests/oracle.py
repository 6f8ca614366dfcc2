"""The judge of end-to-end results: SPEC 3's definitions computed with pandas and plain
Python, written for the tests and sharing no code with the engine's calculator, its batch
path or its compiled loops (which the worker under test runs).

Input: attempts as a frame with the SPEC 2 fields (``difficulty`` as its name). The counts
are pandas group-bys over the whole frame; the sequential metrics one pass in plain Python
over the rows in learning order, mastery in exact arithmetic (``decimal``, as odds).
Registered custom metrics are user code: the oracle calls their own definitions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, cast

import pandas as pd

from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.base import IncrementalMetric, SequentialMetric
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.model import mode_version
from performance_engine.metrics.types import (
    CompletionStatusEnum,
    DifficultyEnum,
    LearningStats,
    PerformanceStatsData,
    ScopeKey,
)

LEVELS = ("easy", "medium", "hard")
SCOPE = ["user_id", "sub_topic_id", "learning_mode"]
Key = tuple[int, int, str]


def _time(ms: int) -> str:
    at = datetime.fromtimestamp(ms / 1000, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _per_level(series: pd.Series[Any]) -> dict[Key, dict[str, int]]:
    """A (scope, difficulty)-indexed count as {scope: {difficulty: count}}, 0 where none."""
    found: dict[Key, dict[str, int]] = {}
    for index, count in series.items():
        user, sub, mode, level = cast(tuple[int, int, str, str], index)
        scope = (int(user), int(sub), str(mode))
        found.setdefault(scope, dict.fromkeys(LEVELS, 0))[level] = int(count)
    return found


class _Mastery:
    """P(learned) of SPEC 3.1's BKT, exactly: carried as odds ``p / (1 - p)`` in
    ``decimal`` (relative precision: no run of answers can push it to 1)."""

    def __init__(self, params: Any) -> None:
        self.params = params
        prior = Decimal(params.prior)
        self.odds: Decimal | None = None if prior == 1 else prior / (1 - prior)  # None: p is 1

    def answer(self, d: int, correct: bool) -> None:
        """An answer weighed by the guess and slip of class ``d``."""
        params, one = self.params, Decimal(1)
        learn, forget = Decimal(params.learn), Decimal(params.forget)
        if self.odds is None:  # the skill is known whatever the answer: p becomes 1 - F
            self.odds = None if forget == 0 else (one - forget) / forget
            return
        g, s = Decimal(params.guess[d]), Decimal(params.slip[d])
        odds = self.odds * ((one - s) / g if correct else s / (one - g))  # the posterior q
        below = odds * forget + (one - learn)  # 1 - p and p, both over 1 - q
        self.odds = None if below == 0 else (odds * (one - forget) + learn) / below

    @property
    def p(self) -> Decimal:
        return Decimal(1) if self.odds is None else self.odds / (1 + self.odds)


def _learning(
    rows: Iterable[tuple[str, int, bool]],
    params: Any,
    questions: dict[str, int],
    classes: dict[int, int],
    version: str,
) -> LearningStats:
    """SPEC 3.1 over a scope's (difficulty, question, correct) in learning order; an
    answer to a question with a fitted class is weighed by that class (SPEC 3.3)."""
    mastery = _Mastery(params)
    e, streak, longest = params.ewma_prior, 0, 0
    first_try: dict[tuple[str, int], bool] = {}
    for level, question, correct in rows:
        mastery.answer(classes.get(question, LEVELS.index(level)), correct)
        e = params.ewma_alpha * correct + (1 - params.ewma_alpha) * e
        streak = streak + 1 if correct else 0
        longest = max(longest, streak)
        first_try.setdefault((level, question), correct)
    exact = mastery.p
    p = float(exact)
    predicted = [
        float(exact * (1 - Decimal(params.slip[d])) + (1 - exact) * Decimal(params.guess[d]))
        for d in range(3)
    ]
    reaching = [d for d in (2, 1) if predicted[d] >= params.target_success]
    right_first = {lv: sum(v for (x, _), v in first_try.items() if x == lv) for lv in LEVELS}
    return LearningStats(
        mastery_probability=round(p, 4),
        mastered=p >= params.mastery_threshold,
        predicted_correct={
            DifficultyEnum(lv): round(predicted[d], 4) for d, lv in enumerate(LEVELS)
        },
        recommended_difficulty=DifficultyEnum(LEVELS[reaching[0]] if reaching else "easy"),
        recent_accuracy=round(e, 4),
        current_streak=streak,
        longest_streak=longest,
        first_attempt_accuracy={
            DifficultyEnum(lv): round(right_first[lv] / questions[lv], 4) if questions[lv] else None
            for lv in LEVELS
        },
        params_version=version,
    )


def _params(calculator: MetricsCalculator, mode: str, sub: int) -> tuple[Any, str]:
    """A scope's parameters and their version, as SPEC 3.2 states the precedence: the
    fitted set's group, else the mode's (whose version is its hash, or "defaults")."""
    base = calculator.learning_modes.params(mode)
    fitted = calculator.parameters
    if fitted is None:
        return base, mode_version(base)
    group = fitted.groups.get((mode, sub))
    if group is None:
        return base, fitted.version
    values = {"prior": group.prior, "learn": group.learn, "forget": group.forget}
    return replace(base, guess=group.guess, slip=group.slip, **values), fitted.version


def oracle_stats(
    attempts: pd.DataFrame, calculator: MetricsCalculator
) -> dict[ScopeKey, PerformanceStatsData]:
    """Every scope's stats from its distinct attempts (the first of each ``attempt_id``)."""
    distinct = attempts.drop_duplicates([*SCOPE, "attempt_id"], keep="first")
    distinct = distinct.assign(_order=distinct["attempt_id"].map(lambda i: i.encode()))
    distinct = distinct.sort_values([*SCOPE, "occurred_at", "_order"], kind="stable")
    by_level = distinct.groupby([*SCOPE, "difficulty"])
    tries = _per_level(by_level.size())
    right = _per_level(by_level["is_correct"].sum())
    asked = _per_level(by_level["question_id"].nunique())
    solved = _per_level(
        distinct[distinct["is_correct"]].groupby([*SCOPE, "difficulty"])["question_id"].nunique()
    )
    spans = distinct.groupby(SCOPE)["occurred_at"].agg(["min", "max"])
    times = {
        (int(u), int(s), str(m)): (int(lo), int(hi))
        for (u, s, m), lo, hi in zip(spans.index, spans["min"], spans["max"], strict=True)
    }
    sequences: dict[Key, list[tuple[str, int, bool]]] = {}
    for user, sub, mode, level, question, correct in distinct[
        [*SCOPE, "difficulty", "question_id", "is_correct"]
    ].itertuples(index=False):
        sequences.setdefault((int(user), int(sub), str(mode)), []).append(
            (level, int(question), bool(correct))
        )
    custom = _custom_metrics(distinct, calculator) if calculator.metrics else {}
    found: dict[ScopeKey, PerformanceStatsData] = {}
    for key, sequence in sequences.items():
        scope = ScopeKey(*key)
        none = dict.fromkeys(LEVELS, 0)
        t, r, q, s = tries[key], right.get(key, none), asked[key], solved.get(key, none)
        need = calculator.learning_modes.rules[scope.learning_mode]
        done = {lv: s[lv] >= need[i] for i, lv in enumerate(LEVELS)}
        tried = [lv for lv in LEVELS if t[lv]]
        ranking = sorted(tried, key=lambda lv: (Fraction(t[lv], q[lv]), LEVELS.index(lv)))
        first, last = times[key]
        params, version = _params(calculator, scope.learning_mode, scope.sub_topic_id)
        found[scope] = PerformanceStatsData(
            user_id=scope.user_id,
            sub_topic_id=scope.sub_topic_id,
            learning_mode=scope.learning_mode,
            version=len(sequence),
            revision=0,  # how a writer batched the attempts: not part of the results
            total_attempts=len(sequence),
            total_correct_attempts=sum(r.values()),
            attempts={DifficultyEnum(lv): t[lv] for lv in LEVELS},
            correct_attempts={DifficultyEnum(lv): r[lv] for lv in LEVELS},
            difficulty_scores={DifficultyEnum(lv): s[lv] for lv in LEVELS},
            average_attempts={
                DifficultyEnum(lv): round(t[lv] / q[lv], 4) if t[lv] else None for lv in LEVELS
            },
            accuracy={
                DifficultyEnum(lv): round(r[lv] / t[lv], 4) if t[lv] else None for lv in LEVELS
            },
            difficulty_completion={
                DifficultyEnum(lv): CompletionStatusEnum.COMPLETE
                if done[lv]
                else CompletionStatusEnum.INCOMPLETE
                for lv in LEVELS
            },
            passed_difficulties=[DifficultyEnum(lv) for lv in LEVELS if done[lv]],
            failed_difficulties=[DifficultyEnum(lv) for lv in tried if not done[lv]],
            difficulty_ranking=[DifficultyEnum(lv) for lv in ranking],
            first_attempt_at=_time(int(first)),
            last_attempt_at=_time(int(last)),
            learning=_learning(
                sequence,
                params,
                q,
                dict(calculator.parameters.questions) if calculator.parameters else {},
                version,
            ),
            custom_metrics=custom.get(key, {}),
        )
    return found


def _custom_metrics(distinct: pd.DataFrame, calculator: MetricsCalculator) -> dict[Key, Any]:
    """Each scope's custom metrics, by the metrics' own definitions, over its distinct
    attempts in learning order (a frame-based one: the latest ``attempt_log_limit``)."""
    found: dict[Key, dict[str, Any]] = {}
    for key, rows in distinct.groupby(SCOPE, sort=False):
        user, sub, mode = cast(Key, key)
        scope: Key = (int(user), int(sub), str(mode))
        values: dict[str, Any] = {}
        attempts = [_attempt(cast(dict[str, Any], row)) for row in rows.to_dict("records")]
        for name, metric in calculator.metrics.items():
            if isinstance(metric, IncrementalMetric | SequentialMetric):
                value = metric.initial()
                for attempt in attempts:
                    value = metric.update(value, attempt)
                values[name] = metric.result(value)
            else:
                frame = rows.tail(calculator.attempt_log_limit).drop(columns="_order")
                frame = frame.assign(
                    occurred_at=pd.to_datetime(frame["occurred_at"], unit="ms", utc=True)
                )
                values[name] = metric(frame.groupby("difficulty"))
        found[scope] = values
    return found


def _attempt(row: dict[str, Any]) -> Attempt:
    """A row as the Attempt object a custom metric's ``update`` takes."""

    def optional(name: str) -> int | None:
        value = row.get(name)
        return None if value is None or pd.isna(value) else int(value)

    return Attempt(
        attempt_id=row["attempt_id"],
        user_id=int(row["user_id"]),
        sub_topic_id=int(row["sub_topic_id"]),
        learning_mode=row["learning_mode"],
        question_id=int(row["question_id"]),
        difficulty=DifficultyEnum(row["difficulty"]),
        is_correct=bool(row["is_correct"]),
        occurred_at=int(row["occurred_at"]),
        attempt_number=optional("attempt_number"),
        time_spent_ms=optional("time_spent_ms"),
    )
