"""MetricsCalculator: the built-in metrics plus registered custom ones, one definition for all.

The stream and the pandas batch path both call :meth:`MetricsCalculator.apply` /
:meth:`MetricsCalculator.stats`, so a metric is defined once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from performance_engine.errors import ConfigurationError
from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.base import BaseMetric, IncrementalMetric, log_frame
from performance_engine.metrics.builtin import builtin_fields
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.state import ScopeState, fingerprint
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey

__all__ = ["COLUMNAR_MIN_SCOPES", "MetricsCalculator"]

#: From this many scopes on, stats_json_many takes the columnar path (below it, numpy's
#: fixed cost per call is more than the per-scope path's).
COLUMNAR_MIN_SCOPES = 64


class MetricsCalculator:
    """Computes :class:`PerformanceStatsData` from a scope's state.

    ``required_correct_questions`` is the seed's single threshold: when given, it applies
    to every built-in learning mode and difficulty. Otherwise the thresholds come from
    ``learning_modes`` (the built-in rules by default).
    """

    def __init__(
        self,
        required_correct_questions: int | None = None,
        *,
        learning_modes: LearningModes | None = None,
        attempt_log_limit: int = 1000,
    ) -> None:
        if required_correct_questions is not None and learning_modes is not None:
            raise ConfigurationError(
                "give either required_correct_questions or learning_modes, not both"
            )
        if required_correct_questions is not None:
            learning_modes = LearningModes.uniform(required_correct_questions)
        self.learning_modes = learning_modes or LearningModes.default()
        if attempt_log_limit < 1:
            raise ConfigurationError("attempt_log_limit must be at least 1")
        self.attempt_log_limit = attempt_log_limit
        self._metrics: dict[str, BaseMetric] = {}
        self._incremental: tuple[IncrementalMetric, ...] = ()
        self._frame: tuple[BaseMetric, ...] = ()

    def register_metrics(self, metrics: Iterable[BaseMetric]) -> None:
        """Add custom metrics; each needs a unique, non-empty ``name``."""
        for metric in metrics:
            if not isinstance(metric, BaseMetric):
                raise ConfigurationError(
                    f"{metric!r} is not a BaseMetric instance; subclass BaseMetric and "
                    "register an instance"
                )
            name = metric.name
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"{type(metric).__name__} needs a non-empty `name`")
            if name in self._metrics:
                raise ConfigurationError(f"a metric named {name!r} is already registered")
            self._metrics[name] = metric
        self._incremental = tuple(
            m for m in self._metrics.values() if isinstance(m, IncrementalMetric)
        )
        self._frame = tuple(
            m for m in self._metrics.values() if not isinstance(m, IncrementalMetric)
        )

    @property
    def metrics(self) -> Mapping[str, BaseMetric]:
        """The registered custom metrics by name."""
        return dict(self._metrics)

    @property
    def incremental_metrics(self) -> tuple[IncrementalMetric, ...]:
        return self._incremental

    @property
    def frame_metrics(self) -> tuple[BaseMetric, ...]:
        """Registered seed-style metrics, which need the scope's attempts as a frame."""
        return self._frame

    def new_state(self) -> ScopeState:
        custom = {m.name: m.initial() for m in self._incremental} if self._incremental else {}
        # Positional and literal: ScopeState() would call a Python factory per list.
        return ScopeState(
            0, None, None, [0, 0, 0], [0, 0, 0], [b"", b"", b""], [b"", b"", b""], b"", custom, []
        )

    def apply(self, state: ScopeState, attempt: Attempt, fp: int | None = None) -> bool:
        """Apply one attempt in place; False if its ``attempt_id`` was applied already."""
        if not state.apply(attempt, fingerprint(attempt.attempt_id) if fp is None else fp):
            return False
        custom = state.custom
        for metric in self._incremental:
            name = metric.name
            custom[name] = metric.update(custom.get(name, metric.initial()), attempt)
        if self._frame:
            state.record(attempt, self.attempt_log_limit)
        return True

    def stats_json_many(
        self, scopes: Sequence[ScopeKey], states: Sequence[ScopeState]
    ) -> list[bytes]:
        """Each scope's stats JSON, byte-equal to ``self.stats(scope, state).to_json()``.

        Without custom metrics, many scopes at once take the columnar path
        (:mod:`metrics.columnar`, numpy: several times faster per scope).
        """
        rules = self.learning_modes.rules
        if (
            len(scopes) >= COLUMNAR_MIN_SCOPES
            and not self._metrics
            and {scope.learning_mode for scope in scopes} <= rules.keys()
        ):
            from performance_engine.metrics.columnar import builtin_stats_json

            columnar = builtin_stats_json(scopes, states, rules)
            if columnar is not None:
                return columnar
        return [self.stats(s, state).to_json() for s, state in zip(scopes, states, strict=True)]

    def stats(self, scope: ScopeKey, state: ScopeState) -> PerformanceStatsData:
        """The stats of one scope, derived from its state."""
        required = self.learning_modes.rules.get(scope.learning_mode)
        if required is None:
            raise ConfigurationError(
                f"learning mode {scope.learning_mode!r} of scope {scope} is not configured; "
                "add it to the learning-mode file (PERF_ENGINE_LEARNING_MODES)"
            )
        fields = builtin_fields(state, required)
        custom: dict[str, Any] = {}
        for name, metric in self._metrics.items():
            if isinstance(metric, IncrementalMetric):
                value = state.custom.get(name)
                custom[name] = metric.result(metric.initial() if value is None else value)
        if self._frame:
            groups = log_frame(scope, state.log).groupby("difficulty")
            for metric in self._frame:
                custom[metric.name] = metric(groups)
        return PerformanceStatsData(
            user_id=scope.user_id,
            sub_topic_id=scope.sub_topic_id,
            learning_mode=scope.learning_mode,
            custom_metrics=custom,
            **fields,
        )
