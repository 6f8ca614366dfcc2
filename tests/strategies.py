"""Hypothesis strategies for attempts."""

from __future__ import annotations

from hypothesis import strategies as st

from performance_engine.metrics.attempt import Attempt
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
