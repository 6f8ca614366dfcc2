"""Hypothesis strategies for attempts."""

from __future__ import annotations

from hypothesis import strategies as st

from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.params import FittedGroup, ParameterSet
from performance_engine.metrics.types import DifficultyEnum

START = 1_795_510_800_000


@st.composite
def attempts(draw: st.DrawFn, max_size: int = 60) -> list[Attempt]:
    """Attempts over few users, sub-topics and questions, with duplicated ids (same content)."""
    distinct = draw(
        st.lists(
            st.builds(
                Attempt,
                attempt_id=st.text(min_size=1, max_size=8),
                user_id=st.integers(1, 3),
                sub_topic_id=st.sampled_from([1, 2**63 - 1]),
                learning_mode=st.sampled_from(["standard", "practice", "mastery"]),
                question_id=st.integers(1, 6),
                difficulty=st.sampled_from(list(DifficultyEnum)),
                is_correct=st.booleans(),
                occurred_at=st.integers(START, START + 10_000_000),
                attempt_number=st.none() | st.integers(1, 5),
                time_spent_ms=st.none() | st.integers(0, 10_000),
            ),
            min_size=1,
            max_size=max_size,
            unique_by=lambda a: (a.user_id, a.sub_topic_id, a.learning_mode, a.attempt_id),
        )
    )
    repeats = draw(st.lists(st.sampled_from(distinct), max_size=len(distinct)))
    return distinct + repeats


MODES = ("standard", "practice", "mastery")
_probability = st.floats(0.02, 0.9)
_guess_or_slip = st.floats(0.01, 0.45)


@st.composite
def parameter_sets(draw: st.DrawFn) -> ParameterSet | None:
    """None (the modes' parameters), or a fitted set (SPEC 3.2, 3.3) for the scopes of
    :func:`attempts`: groups for some (mode, sub-topic), classes and offsets for some of
    their questions."""
    if draw(st.booleans()):
        return None
    groups = {}
    for mode, sub in draw(
        st.lists(
            st.tuples(
                st.sampled_from(["standard", "practice", "mastery"]),
                st.sampled_from([1, 2**63 - 1]),
            ),
            max_size=3,
            unique=True,
        )
    ):
        triple = st.tuples(_guess_or_slip, _guess_or_slip, _guess_or_slip)
        groups[mode, sub] = FittedGroup(
            mode,
            sub,
            draw(_probability),
            draw(st.floats(0.001, 0.5)),
            draw(st.sampled_from([0.0, 0.05])),
            draw(triple),
            draw(triple),
            60,
            600,
            -100.0,
        )
    classes = draw(st.dictionaries(st.integers(1, 6), st.integers(0, 2), max_size=4))
    offsets = draw(st.dictionaries(st.integers(1, 6), st.floats(-2, 2), max_size=3))
    return ParameterSet(groups, (), classes, {}, offsets)
