"""Custom metrics as a user writes them, loaded by import path in the tests."""

from __future__ import annotations

from typing import Any

from performance_engine import Attempt, BaseMetric, IncrementalMetric, SequentialMetric


class MostTriedQuestion(BaseMetric):
    """Seed style: per difficulty, the question with the most attempts (lowest id on ties)."""

    name = "most_tried_question"

    def __call__(self, difficulty_groups: Any, *args: Any, **kwargs: Any) -> Any:
        result = {}
        for difficulty, group in difficulty_groups:
            counts = group.groupby("question_id").size()
            result[difficulty] = int(counts[counts == counts.max()].index.min())
        return result


class LatestTimes(BaseMetric):
    """Seed style: the occurred_at (epoch ms) of the attempts the frame holds, in order."""

    name = "latest_times"

    def __call__(self, difficulty_groups: Any, *args: Any, **kwargs: Any) -> Any:
        times = difficulty_groups.obj["occurred_at"].sort_values()
        return [int(t.value // 1_000_000) for t in times]


class TimeSpent(IncrementalMetric):
    """Incremental: total time spent, and how many attempts reported it."""

    name = "time_spent"

    def initial(self) -> Any:
        return {"total_ms": 0, "reported": 0}

    def update(self, state: Any, attempt: Attempt) -> Any:
        if attempt.time_spent_ms is None:
            return state
        return {
            "total_ms": state["total_ms"] + attempt.time_spent_ms,
            "reported": state["reported"] + 1,
        }


class WrongInARow(SequentialMetric):
    """Sequential: the longest run of wrong answers (depends on the order of attempts)."""

    name = "wrong_in_a_row"

    def initial(self) -> Any:
        return [0, 0]  # the current run, the longest

    def update(self, state: Any, attempt: Attempt) -> Any:
        run = 0 if attempt.is_correct else state[0] + 1
        return [run, max(run, state[1])]

    def result(self, state: Any) -> Any:
        return state[1]


class NeedsArguments(IncrementalMetric):
    name = "broken"

    def __init__(self, required: int) -> None:
        self.required = required

    def initial(self) -> Any:
        return 0

    def update(self, state: Any, attempt: Attempt) -> Any:
        return state
