"""Voids: an attempt that no longer counts leaves its scope as if it had never arrived,
whatever the order (the void before the attempt included) and however often either comes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.errors import InvalidAttemptError
from performance_engine.metrics.attempt import Attempt, AttemptVoid, decode_record
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.params import ParameterSet
from performance_engine.metrics.types import DifficultyEnum, ScopeKey
from tests.example_metrics import MostTriedQuestion, TimeSpent, WrongInARow
from tests.helpers import SPILL_LIMITS, StreamModel
from tests.strategies import attempts, parameter_sets


def void_of(attempt: Attempt) -> AttemptVoid:
    return AttemptVoid(
        attempt_id=attempt.attempt_id,
        user_id=attempt.user_id,
        sub_topic_id=attempt.sub_topic_id,
        learning_mode=attempt.learning_mode,
        occurred_at=attempt.occurred_at + 1,
        voided_by="voiding-statement",
    )


def calculator(limit: int, params: ParameterSet | None, custom: bool) -> MetricsCalculator:
    found = MetricsCalculator(history_inline_limit=limit, parameters=params)
    if custom:
        found.register_metrics([TimeSpent(), WrongInARow(), MostTriedQuestion()])
    return found


@settings(max_examples=300, deadline=None)
@given(
    attempts(),
    st.data(),
    st.sampled_from(SPILL_LIMITS),
    parameter_sets(),
    st.booleans(),
    st.integers(1, 4),
)
def test_stats_equal_the_stream_without_the_voided_attempts(
    stream: list[Attempt],
    data: Any,
    limit: int,
    params: ParameterSet | None,
    custom: bool,
    batch: int,
) -> None:
    distinct = list({(a.scope, a.attempt_id): a for a in stream}.values())
    voided = data.draw(st.lists(st.sampled_from(distinct), unique=True, max_size=len(distinct)))
    gone = {(a.scope, a.attempt_id) for a in voided}
    records: list[Attempt | AttemptVoid] = list(stream)
    for attempt in voided:  # each void anywhere: before its attempt, after, or twice
        for _ in range(data.draw(st.integers(1, 2))):
            records.insert(data.draw(st.integers(0, len(records))), void_of(attempt))
    records += data.draw(st.lists(st.sampled_from(stream), max_size=5))  # resends, later
    model = StreamModel(calculator(limit, params, custom))
    for start in range(0, len(records), batch):
        model.apply(records[start : start + batch])
    kept = [a for a in stream if (a.scope, a.attempt_id) not in gone]
    oracle = StreamModel(calculator(limit, params, custom)).apply_each(kept)
    found = model.stats()
    expected = oracle.stats()
    for scope, stats in found.items():
        if scope in expected:
            assert stats == expected[scope], scope
        else:  # every attempt of the scope was voided
            assert stats.total_attempts == 0, scope
    assert set(expected) <= set(found)
    for scope, state in model.states.items():  # the history holds what counts, no more
        assert state.history == state.version == len(model.history(scope))


def test_a_void_makes_the_version_fall_and_a_resend_stays_out() -> None:
    calc = MetricsCalculator()
    scope = ScopeKey(7, 3, "standard")
    first, second = (
        Attempt(
            attempt_id=name,
            user_id=7,
            sub_topic_id=3,
            learning_mode="standard",
            question_id=1,
            difficulty=DifficultyEnum.EASY,
            is_correct=True,
            occurred_at=1_795_510_800_000 + i,
        )
        for i, name in enumerate(["a", "b"])
    )
    model = StreamModel(calc).apply_each([first, second])
    assert model.stats()[scope].version == 2
    model.apply([void_of(first)])
    assert model.stats()[scope].version == 1
    model.apply([first])
    assert model.stats()[scope].version == 1


def test_a_void_that_breaks_the_rules_is_refused_as_an_attempt_would_be() -> None:
    modes = LearningModes.default()
    good = (
        b'{"void":"a","user_id":7,"sub_topic_id":3,"learning_mode":"Standard",'
        b'"occurred_at":1795510800000}'
    )
    found = decode_record(good, modes)
    assert isinstance(found, AttemptVoid)
    assert (found.scope, found.attempt_id) == (ScopeKey(7, 3, "standard"), "a")
    for value, error_class in [
        (b'{"void":"a","user_id":7}', "missing_field"),
        (
            b'{"void":"","user_id":7,"sub_topic_id":3,"learning_mode":"standard","occurred_at":1}',
            "invalid_field",
        ),
        (b'{"void":"\xff"}', "invalid_utf8"),
        (b'{"void":"a",,}', "invalid_json"),
        (b'{"void":"' + b"x" * 70_000 + b'"}', "oversized"),
    ]:
        with pytest.raises(InvalidAttemptError) as caught:
            decode_record(value, modes)
        assert caught.value.error_class == error_class, value[:40]
