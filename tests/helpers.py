"""Small builders shared by the tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from performance_engine.metrics.attempt import Attempt, attempt_from_mapping
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.history import Entry, decode_entries
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.state import ScopeState, fingerprint
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey

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


class StreamModel:
    """The worker's way of applying batches, without Kafka or Redis: states, and each
    scope's history kept as the bytes the store would hold (appended or replaced as the
    calculator says, decoded only when a plan needs it)."""

    def __init__(self, calculator: MetricsCalculator) -> None:
        self.calculator = calculator
        self.states: dict[ScopeKey, ScopeState] = {}
        self.blobs: dict[ScopeKey, bytes] = {}
        #: Plans that made the store read a history, and plans that refolded one.
        self.history_reads = 0
        self.refolds = 0

    def apply(self, batch: Iterable[Attempt]) -> None:
        """One batch: per scope, its attempts in the batch's order."""
        calculator = self.calculator
        by_scope: dict[ScopeKey, list[tuple[Attempt, int]]] = {}
        for a in batch:
            by_scope.setdefault(a.scope, []).append((a, fingerprint(a.attempt_id)))
        for scope, pairs in by_scope.items():
            state = self.states.get(scope)
            if state is None:
                state = self.states[scope] = calculator.new_state()
            plan = calculator.plan(scope, state, pairs)
            self.refolds += plan.refold
            history = None
            if plan.needs_history:
                self.history_reads += state.history > 0  # the store reads nothing for 0
                history = self.history(scope)
            write = calculator.apply_plan(scope, state, plan, history).history
            if write is not None:
                kept = b"" if write.replace else self.blobs.get(scope, b"")
                self.blobs[scope] = kept + write.data

    def apply_each(self, attempts: Iterable[Attempt]) -> StreamModel:
        for a in attempts:
            self.apply([a])
        return self

    def history(self, scope: ScopeKey) -> list[Entry]:
        """The scope's history, wherever it is kept (its own key or its state)."""
        state = self.states[scope]
        if not state.spilled:
            return state.inline_entries()
        return decode_entries(self.blobs.get(scope, b""), state.history)

    def stats(self) -> dict[ScopeKey, PerformanceStatsData]:
        calculator = self.calculator
        return {
            scope: calculator.stats(
                scope, state, self.history(scope) if calculator.frame_metrics else None
            )
            for scope, state in self.states.items()
        }


#: History limits for calculators whose histories stay in the state, move to their own
#: keys after an attempt or two (40 bytes), or are in their own keys from the first.
SPILL_LIMITS = (512, 40, 0)
