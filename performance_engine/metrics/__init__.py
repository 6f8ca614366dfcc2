"""The pure domain: attempts, rolling state, metric definitions and the pandas batch engine.

No Kafka, no Redis, no Faust: the stream and the batch path both call into here, so every
metric has one definition.
"""

from performance_engine.metrics.attempt import Attempt, attempt_from_mapping, decode_attempt
from performance_engine.metrics.base import BaseMetric, IncrementalMetric
from performance_engine.metrics.batch import BatchResult, compute_states, compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.loader import LoadResult, RowError, load_attempts, normalise_frame
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.state import ScopeState, decode_state, encode_state, fingerprint
from performance_engine.metrics.types import (
    CompletionStatusEnum,
    DifficultyEnum,
    LearningModeType,
    PerformanceStatsData,
    ScopeKey,
)

__all__ = [
    "Attempt",
    "BaseMetric",
    "BatchResult",
    "CompletionStatusEnum",
    "DifficultyEnum",
    "IncrementalMetric",
    "LearningModeType",
    "LearningModes",
    "LoadResult",
    "MetricsCalculator",
    "PerformanceStatsData",
    "RowError",
    "ScopeKey",
    "ScopeState",
    "attempt_from_mapping",
    "compute_states",
    "compute_stats",
    "decode_attempt",
    "decode_state",
    "encode_state",
    "fingerprint",
    "load_attempts",
    "normalise_frame",
]
