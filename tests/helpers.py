"""Small builders shared by the tests."""

from __future__ import annotations

from typing import Any

from performance_engine.metrics.attempt import Attempt, attempt_from_mapping
from performance_engine.metrics.modes import LearningModes

_COUNTER = iter(range(1, 10**9))


def raw(**overrides: Any) -> dict[str, Any]:
    """A valid SPEC 2 attempt object, with overrides."""
    base: dict[str, Any] = {
        "attempt_id": f"a{next(_COUNTER)}",
        "user_id": 123,
        "sub_topic_id": 456,
        "learning_mode": "standard",
        "question_id": 1,
        "difficulty": "easy",
        "is_correct": True,
        "occurred_at": "2026-11-24T09:00:00Z",
    }
    base.update(overrides)
    return base


def attempt(**overrides: Any) -> Attempt:
    return attempt_from_mapping(raw(**overrides), LearningModes.default())
