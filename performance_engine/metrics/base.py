"""How a custom metric is written.

Three kinds, all registered with :meth:`MetricsCalculator.register_metrics`:

* **Frame-based** (the seed's way): subclass :class:`BaseMetric`, set ``name`` and
  implement ``__call__(self, difficulty_groups, *args, **kwargs)``. ``difficulty_groups``
  is ``frame.groupby("difficulty")`` over the scope's distinct attempts, with the columns
  of :data:`FRAME_COLUMNS` (``difficulty`` holds ``"easy"``, ``"medium"``, ``"hard"``;
  ``occurred_at`` is a UTC ``datetime64``). Simple to write, but slow: it is called with a
  frame of the scope's latest ``attempt_log_limit`` attempts (1,000 by default; in
  learning order, so the same whatever the arrival order), built from the scope's history
  each time the scope's stats are computed (about a millisecond, plus reading the history
  from Redis).
* **Incremental** (the fast path): subclass :class:`IncrementalMetric` and implement
  ``initial``, ``update`` and optionally ``result``. State in, one attempt in, state out,
  in arrival order; the state must be msgpack-serialisable (None, bool, int, float, str,
  bytes, lists and dicts of them). For results independent of arrival order, ``update``
  must be commutative (counts, sums, sets).
* **Sequential**: subclass :class:`SequentialMetric`, with the same three methods. The
  engine calls ``update`` in learning order (``occurred_at``, then ``attempt_id``) however
  the attempts arrive: an attempt later than all applied costs one ``update``; one that
  arrives out of order makes the engine fold the scope's history again from ``initial``.
  Use it for anything that depends on order (streaks, moving averages, knowledge
  tracing). Bump the class's ``version`` when ``initial`` or ``update`` change meaning:
  states folded with another version are folded again at their scope's next attempt.

A metric's value must be JSON-serialisable; it appears under ``custom_metrics[name]``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from performance_engine.metrics.attempt import ATTEMPT_COLUMNS, Attempt
from performance_engine.metrics.types import DIFFICULTIES, DifficultyEnum, Entry, ScopeKey

if TYPE_CHECKING:
    import pandas as pd
    from pandas.core.groupby import DataFrameGroupBy

__all__ = [
    "FRAME_COLUMNS",
    "BaseMetric",
    "FoldMetric",
    "IncrementalMetric",
    "SequentialMetric",
    "attempt_from_row",
    "log_frame",
]

#: The columns of the frame a frame-based metric receives, in order.
FRAME_COLUMNS = ATTEMPT_COLUMNS


class BaseMetric(ABC):
    """A custom metric: give it a ``name`` and register an instance with the calculator."""

    name: ClassVar[str] = ""

    @abstractmethod
    def __call__(
        self, difficulty_groups: DataFrameGroupBy[Any, Any], *args: Any, **kwargs: Any
    ) -> Any:
        """The metric's value for one scope, from its attempts grouped by difficulty."""


class FoldMetric(BaseMetric):
    """A metric folded one attempt at a time over a small state of its own."""

    @abstractmethod
    def initial(self) -> Any:
        """The state before any attempt."""

    @abstractmethod
    def update(self, state: Any, attempt: Attempt) -> Any:
        """The state after one more (distinct) attempt."""

    def result(self, state: Any) -> Any:
        """The value shown in ``custom_metrics``; the state itself by default."""
        return state

    def __call__(
        self, difficulty_groups: DataFrameGroupBy[Any, Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Seed-style use: fold :meth:`update` over the grouped attempts, oldest first."""
        state = self.initial()
        frame = difficulty_groups.obj.sort_values(["occurred_at", "attempt_id"], kind="stable")
        for row in frame.to_dict("records"):
            state = self.update(state, attempt_from_row(row))
        return self.result(state)


class IncrementalMetric(FoldMetric):
    """Folded in arrival order: ``update`` must be commutative to be order-independent."""


class SequentialMetric(FoldMetric):
    """Folded in learning order (``occurred_at``, then ``attempt_id``), whatever the
    arrival order."""

    #: Bump when ``initial`` or ``update`` change meaning (see the module docstring).
    version: ClassVar[int] = 1


def log_frame(scope: ScopeKey, log: Sequence[Entry]) -> pd.DataFrame:
    """A scope's attempt log as the frame a frame-based metric receives."""
    import numpy as np
    import pandas as pd

    occurred, ids, questions, codes, correct, numbers, spent = (
        zip(*log, strict=True) if log else ((),) * 7
    )
    n = len(log)
    return pd.DataFrame(
        {
            "attempt_id": pd.array(ids, dtype=object),
            "user_id": np.full(n, scope.user_id, dtype=np.int64),
            "sub_topic_id": np.full(n, scope.sub_topic_id, dtype=np.int64),
            "learning_mode": pd.array([scope.learning_mode] * n, dtype=object),
            "question_id": np.array(questions, dtype=np.int64),
            "difficulty": pd.array([DIFFICULTIES[c].value for c in codes], dtype=object),
            "is_correct": np.array(correct, dtype=bool),
            "occurred_at": pd.to_datetime(np.array(occurred, dtype=np.int64), unit="ms", utc=True),
            "attempt_number": pd.array(numbers, dtype="Int64"),
            "time_spent_ms": pd.array(spent, dtype="Int64"),
        },
        columns=list(FRAME_COLUMNS),
    )


def attempt_from_row(row: Mapping[Hashable, Any]) -> Attempt:
    """An :class:`Attempt` from one row of a normalised attempts frame."""
    occurred = row["occurred_at"]
    millis = occurred if isinstance(occurred, int) else int(occurred.value // 1_000_000)
    return Attempt(
        attempt_id=str(row["attempt_id"]),
        user_id=int(row["user_id"]),
        sub_topic_id=int(row["sub_topic_id"]),
        learning_mode=str(row["learning_mode"]),
        question_id=int(row["question_id"]),
        difficulty=DifficultyEnum(str(row["difficulty"])),
        is_correct=bool(row["is_correct"]),
        occurred_at=millis,
        attempt_number=_optional_int(row.get("attempt_number")),
        time_spent_ms=_optional_int(row.get("time_spent_ms")),
    )


def _optional_int(value: Any) -> int | None:
    if value is None or type(value).__name__ == "NAType":  # pandas.NA, without pandas
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return int(value)
