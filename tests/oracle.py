"""The judge of end-to-end results: SPEC 3's definitions computed with pandas and plain
Python, written for the tests and sharing no code with the engine's calculator, its batch
path or its compiled loops (which the worker under test runs).

Input: attempts as a frame with the SPEC 2 fields (``difficulty`` as its name).
Registered custom metrics are user code: the oracle calls their own definitions.
"""

from __future__ import annotations

import decimal
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, cast

import pandas as pd

from performance_engine.metrics.base import IncrementalMetric, SequentialMetric
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.types import (
    CompletionStatusEnum,
    DifficultyEnum,
    LearningStats,
    PerformanceStatsData,
    ScopeKey,
)

LEVELS = ("easy", "medium", "hard")
SCOPE = ["user_id", "sub_topic_id", "learning_mode"]


def _per_level(counts: pd.Series[Any]) -> dict[str, int]:
    """A count per difficulty name, 0 where there is none."""
    return {level: int(counts.get(level, 0)) for level in LEVELS}


def _time(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    )


def _mastery(rows: pd.DataFrame, params: Any) -> Decimal:
    """P(learned) after the rows (SPEC 3.1's BKT), exactly: carried as odds in ``decimal``
    (relative precision, so no run of answers can push it to 1)."""
    with decimal.localcontext() as context:
        context.prec = 60
        one, prior = Decimal(1), Decimal(params.prior)
        odds: Decimal | None = None if prior == 1 else prior / (one - prior)  # None: p is 1
        learn, forget = Decimal(params.learn), Decimal(params.forget)
        for level, correct in rows[["difficulty", "is_correct"]].itertuples(index=False):
            if odds is None:  # the skill is known whatever the answer: p becomes 1 - F
                odds = None if forget == 0 else (one - forget) / forget
                continue
            d = LEVELS.index(level)
            g, s = Decimal(params.guess[d]), Decimal(params.slip[d])
            odds *= (one - s) / g if correct else s / (one - g)
            below = odds * forget + (one - learn)
            odds = None if below == 0 else (odds * (one - forget) + learn) / below
        return one if odds is None else odds / (one + odds)


def _learning(rows: pd.DataFrame, params: Any, questions: dict[str, int]) -> LearningStats:
    """SPEC 3.1, folded over the rows in learning order."""
    e, streak, longest = params.ewma_prior, 0, 0
    first_try: dict[tuple[str, int], bool] = {}
    for level, question, correct in rows[["difficulty", "question_id", "is_correct"]].itertuples(
        index=False
    ):
        e = params.ewma_alpha * correct + (1 - params.ewma_alpha) * e
        streak = streak + 1 if correct else 0
        longest = max(longest, streak)
        first_try.setdefault((level, question), bool(correct))
    exact = _mastery(rows, params)
    p = float(exact)
    predicted = [
        float(exact * (1 - Decimal(params.slip[d])) + (1 - exact) * Decimal(params.guess[d]))
        for d in range(3)
    ]
    reaching = [d for d in (2, 1) if predicted[d] >= params.target_success]
    first = {
        level: round(
            sum(v for (lv, _), v in first_try.items() if lv == level) / questions[level], 4
        )
        if questions[level]
        else None
        for level in LEVELS
    }
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
        first_attempt_accuracy={DifficultyEnum(lv): v for lv, v in first.items()},
    )


def oracle_stats(
    attempts: pd.DataFrame, calculator: MetricsCalculator
) -> dict[ScopeKey, PerformanceStatsData]:
    """Every scope's stats from its distinct attempts (the first of each ``attempt_id``)."""
    distinct = attempts.drop_duplicates([*SCOPE, "attempt_id"], keep="first")
    distinct = distinct.assign(_order=distinct["attempt_id"].map(lambda i: i.encode()))
    found: dict[ScopeKey, PerformanceStatsData] = {}
    for key, rows in distinct.groupby(SCOPE, sort=True):
        user, sub, mode = cast(tuple[int, int, str], key)
        scope = ScopeKey(int(user), int(sub), str(mode))
        rows = rows.sort_values(["occurred_at", "_order"], kind="stable")
        by = rows.groupby("difficulty")
        tries = _per_level(by.size())
        right = _per_level(by["is_correct"].sum())
        asked = _per_level(by["question_id"].nunique())
        solved = _per_level(rows[rows["is_correct"]].groupby("difficulty")["question_id"].nunique())
        need = calculator.learning_modes.rules[scope.learning_mode]
        done = {lv: solved[lv] >= need[i] for i, lv in enumerate(LEVELS)}
        tried = [lv for lv in LEVELS if tries[lv]]
        ranking = sorted(tried, key=lambda lv: (Fraction(tries[lv], asked[lv]), LEVELS.index(lv)))
        custom: dict[str, Any] = {}
        for name, metric in calculator.metrics.items():
            if isinstance(metric, IncrementalMetric | SequentialMetric):
                value = metric.initial()
                for attempt in _attempt_objects(rows):
                    value = metric.update(value, attempt)
                custom[name] = metric.result(value)
            else:
                frame = rows.tail(calculator.attempt_log_limit).drop(columns="_order")
                frame = frame.assign(
                    occurred_at=pd.to_datetime(frame["occurred_at"], unit="ms", utc=True)
                )
                custom[name] = metric(frame.groupby("difficulty"))
        found[scope] = PerformanceStatsData(
            user_id=scope.user_id,
            sub_topic_id=scope.sub_topic_id,
            learning_mode=scope.learning_mode,
            version=len(rows),
            total_attempts=len(rows),
            total_correct_attempts=int(rows["is_correct"].sum()),
            attempts={DifficultyEnum(lv): tries[lv] for lv in LEVELS},
            correct_attempts={DifficultyEnum(lv): right[lv] for lv in LEVELS},
            difficulty_scores={DifficultyEnum(lv): solved[lv] for lv in LEVELS},
            average_attempts={
                DifficultyEnum(lv): round(tries[lv] / asked[lv], 4) if tries[lv] else None
                for lv in LEVELS
            },
            accuracy={
                DifficultyEnum(lv): round(right[lv] / tries[lv], 4) if tries[lv] else None
                for lv in LEVELS
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
            first_attempt_at=_time(int(rows["occurred_at"].min())),
            last_attempt_at=_time(int(rows["occurred_at"].max())),
            learning=_learning(rows, calculator.learning_modes.params(scope.learning_mode), asked),
            custom_metrics=custom,
        )
    return found


def _attempt_objects(rows: pd.DataFrame) -> list[Any]:
    """The rows as the Attempt objects a custom metric's ``update`` takes."""
    from performance_engine.metrics.attempt import Attempt

    return [
        Attempt(
            attempt_id=r["attempt_id"],
            user_id=int(r["user_id"]),
            sub_topic_id=int(r["sub_topic_id"]),
            learning_mode=r["learning_mode"],
            question_id=int(r["question_id"]),
            difficulty=DifficultyEnum(r["difficulty"]),
            is_correct=bool(r["is_correct"]),
            occurred_at=int(r["occurred_at"]),
            attempt_number=None if pd.isna(r.get("attempt_number")) else int(r["attempt_number"]),
            time_spent_ms=None if pd.isna(r.get("time_spent_ms")) else int(r["time_spent_ms"]),
        )
        for r in rows.to_dict("records")
    ]
