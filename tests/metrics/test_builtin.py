"""Every built-in counting metric (SPEC 3) on small hand-made cases, as whole stats records.

The ``learning`` block (SPEC 3.1) is left out here (``run`` clears it) and tested whole in
``test_learning.py``.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from performance_engine.metrics.attempt import Attempt, attempt_from_mapping
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.types import (
    CompletionStatusEnum,
    DifficultyEnum,
    PerformanceStatsData,
)
from tests.helpers import StreamModel, attempt, raw

E, M, H = DifficultyEnum.EASY, DifficultyEnum.MEDIUM, DifficultyEnum.HARD
DONE, TODO = CompletionStatusEnum.COMPLETE, CompletionStatusEnum.INCOMPLETE


def run(
    attempts: list[Attempt], calculator: MetricsCalculator | None = None
) -> PerformanceStatsData:
    model = StreamModel(calculator or MetricsCalculator()).apply_each(attempts)
    return msgspec.structs.replace(model.stats()[attempts[0].scope], learning=None)


def expected(**fields: Any) -> PerformanceStatsData:
    base: dict[str, Any] = {
        "user_id": 123,
        "sub_topic_id": 456,
        "learning_mode": "standard",
        "revision": 0,
        "custom_metrics": {},
    }
    base.update(fields)
    return PerformanceStatsData(**base)


def test_two_difficulties() -> None:
    """3 easy (2 questions, both solved), 4 medium (2 questions, 1 solved)."""
    attempts = [
        attempt(
            attempt_id="1",
            question_id=1,
            difficulty="easy",
            is_correct=False,
            occurred_at="2026-11-24T09:00:00Z",
        ),
        attempt(
            attempt_id="2",
            question_id=1,
            difficulty="easy",
            is_correct=True,
            occurred_at="2026-11-24T09:01:00Z",
        ),
        attempt(
            attempt_id="3",
            question_id=2,
            difficulty="easy",
            is_correct=True,
            occurred_at="2026-11-24T09:02:00Z",
        ),
        attempt(
            attempt_id="4",
            question_id=10,
            difficulty="medium",
            is_correct=True,
            occurred_at="2026-11-24T09:03:00Z",
        ),
        attempt(
            attempt_id="5",
            question_id=10,
            difficulty="medium",
            is_correct=True,
            occurred_at="2026-11-24T09:04:00Z",
        ),
        attempt(
            attempt_id="6",
            question_id=11,
            difficulty="medium",
            is_correct=False,
            occurred_at="2026-11-24T09:05:00Z",
        ),
        attempt(
            attempt_id="7",
            question_id=11,
            difficulty="medium",
            is_correct=False,
            occurred_at="2026-11-24T09:12:31.250Z",
        ),
    ]
    assert run(attempts) == expected(
        version=7,
        total_attempts=7,
        total_correct_attempts=4,
        attempts={E: 3, M: 4, H: 0},
        correct_attempts={E: 2, M: 2, H: 0},
        difficulty_scores={E: 2, M: 1, H: 0},
        average_attempts={E: 1.5, M: 2.0, H: None},
        accuracy={E: 0.6667, M: 0.5, H: None},
        difficulty_completion={E: DONE, M: TODO, H: TODO},
        passed_difficulties=[E],
        failed_difficulties=[M],
        difficulty_ranking=[E, M],
        first_attempt_at="2026-11-24T09:00:00.000Z",
        last_attempt_at="2026-11-24T09:12:31.250Z",
    )


def test_never_attempted_difficulties_are_null_and_neither_passed_nor_failed() -> None:
    stats = run([attempt(difficulty="hard", is_correct=False, question_id=5)])
    assert stats == expected(
        version=1,
        total_attempts=1,
        total_correct_attempts=0,
        attempts={E: 0, M: 0, H: 1},
        correct_attempts={E: 0, M: 0, H: 0},
        difficulty_scores={E: 0, M: 0, H: 0},
        average_attempts={E: None, M: None, H: 1.0},
        accuracy={E: None, M: None, H: 0.0},
        difficulty_completion={E: TODO, M: TODO, H: TODO},
        passed_difficulties=[],
        failed_difficulties=[H],
        difficulty_ranking=[H],
        first_attempt_at="2026-11-24T09:00:00.000Z",
        last_attempt_at="2026-11-24T09:00:00.000Z",
    )


def test_duplicate_attempt_ids_count_once_even_with_other_content() -> None:
    first = attempt(attempt_id="dup", question_id=1, is_correct=False)
    again = attempt(attempt_id="dup", question_id=2, is_correct=True, difficulty="hard")
    calculator = MetricsCalculator()
    state = calculator.new_state()
    assert calculator.apply(first.scope, state, [first]).applied == 1
    assert calculator.apply(first.scope, state, [again]).applied == 0
    assert run([first, again]) == run([first])


def test_same_attempt_id_in_another_scope_counts_there() -> None:
    calculator = MetricsCalculator()
    a = attempt(attempt_id="x", sub_topic_id=1)
    b = attempt(attempt_id="x", sub_topic_id=2)
    assert run([a], calculator).version == 1
    assert run([b], calculator).version == 1


def test_question_answered_correctly_twice_scores_once() -> None:
    stats = run(
        [
            attempt(question_id=7, is_correct=True),
            attempt(question_id=7, is_correct=True),
            attempt(question_id=8, is_correct=False),
        ]
    )
    assert (stats.difficulty_scores, stats.correct_attempts, stats.average_attempts) == (
        {E: 1, M: 0, H: 0},
        {E: 2, M: 0, H: 0},
        {E: 1.5, M: None, H: None},
    )
    assert stats.difficulty_completion[E] is TODO  # 1 distinct solved < 2 required


def test_ranking_ties_break_easy_medium_hard() -> None:
    stats = run(
        [
            attempt(difficulty="hard", question_id=30),
            attempt(difficulty="easy", question_id=10),
            attempt(difficulty="medium", question_id=20),
        ]
    )
    assert stats.difficulty_ranking == [E, M, H]


def test_ranking_orders_by_exact_average() -> None:
    # hard: 1 attempt/question; easy: 3 attempts on 1 question; medium: 3 on 2 (1.5)
    stats = run(
        [
            attempt(difficulty="easy", question_id=1),
            attempt(difficulty="easy", question_id=1),
            attempt(difficulty="easy", question_id=1),
            attempt(difficulty="medium", question_id=2),
            attempt(difficulty="medium", question_id=2),
            attempt(difficulty="medium", question_id=3),
            attempt(difficulty="hard", question_id=4),
        ]
    )
    assert stats.difficulty_ranking == [H, M, E]


def test_ranking_does_not_tie_on_rounding() -> None:
    # 10001/10000 and 10002/10001 round alike to 4 places but differ exactly.
    calculator = MetricsCalculator()
    state = calculator.new_state()
    state.attempts = [10001, 10002, 0]
    state.questions = [b"\x00" * 8 * 10000, b"\x00" * 8 * 10001, b""]
    stats = calculator.stats(attempt().scope, state)
    assert stats.average_attempts[E] == stats.average_attempts[M]
    assert stats.difficulty_ranking == [M, E]


@pytest.mark.parametrize(("mode", "required"), [("standard", 2), ("practice", 1), ("mastery", 3)])
def test_each_learning_mode_threshold(mode: str, required: int) -> None:
    calculator = MetricsCalculator()
    attempts = [
        attempt(learning_mode=mode, question_id=q, difficulty=d, is_correct=True)
        for d in ("easy", "medium")
        for q in range(1, required)
    ]
    attempts += [attempt(learning_mode=mode, question_id=99, difficulty="easy", is_correct=True)]
    attempts += [attempt(learning_mode=mode, question_id=98, difficulty="medium", is_correct=False)]
    stats = run(attempts, calculator)
    assert stats.difficulty_scores == {E: required, M: required - 1, H: 0}
    assert stats.difficulty_completion == {E: DONE, M: TODO, H: TODO}
    assert (stats.passed_difficulties, stats.failed_difficulties) == ([E], [M])


def test_zero_threshold_completes_even_unattempted() -> None:
    modes = LearningModes.default().merged({"modes": {"free": {"required": 0}}})
    calculator = MetricsCalculator(learning_modes=modes)
    stats = run(
        [attempt_from_mapping(raw(learning_mode="free", is_correct=False), modes)], calculator
    )
    assert stats.passed_difficulties == [E, M, H]
    assert stats.failed_difficulties == []


def test_seed_single_threshold_applies_to_every_mode() -> None:
    calculator = MetricsCalculator(required_correct_questions=1)
    stats = run([attempt(learning_mode="mastery", question_id=1, is_correct=True)], calculator)
    assert stats.passed_difficulties == [E]


def test_first_and_last_are_min_and_max_not_arrival_order() -> None:
    stats = run(
        [
            attempt(occurred_at="2026-11-24T10:00:00Z"),
            attempt(occurred_at=1_795_510_800_000),  # 09:00:00Z
            attempt(occurred_at="2026-11-24T11:30:00.5+01:00"),  # 10:30:00.500Z
        ]
    )
    assert (stats.first_attempt_at, stats.last_attempt_at) == (
        "2026-11-24T09:00:00.000Z",
        "2026-11-24T10:30:00.500Z",
    )


def test_stats_json_round_trip_is_exact() -> None:
    stats = run([attempt(), attempt(difficulty="medium", question_id=3, is_correct=False)])
    assert PerformanceStatsData.from_json(stats.to_json()) == stats
    assert stats.to_dict()["difficulty_completion"] == {
        "easy": "incomplete",
        "medium": "incomplete",
        "hard": "incomplete",
    }


def test_timestamps_format_like_datetime() -> None:
    from datetime import UTC, datetime

    from performance_engine.metrics.builtin import format_timestamp

    for millis in (0, 999, 1_795_510_800_123, 253_402_300_799_999, 951_782_400_000):
        moment = datetime.fromtimestamp(millis / 1000, tz=UTC)
        assert format_timestamp(millis) == f"{moment:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"
