"""The pure domain: attempts, rolling state, metric definitions and the pandas batch engine.

No Kafka, no Redis, no Faust: the stream and the batch path both call into here. Each
metric has one reference definition (``builtin``, ``learning``); the column-wise twins
that many scopes at once go through (``columnar``, ``sequence``) are held equal to them by
property tests. The pandas parts (``metrics.batch``, ``metrics.frame``) are imported
from their modules, so that the worker and the platform's client do not load pandas and
pyarrow (about 100 MB) unless they use them.
"""

from performance_engine.metrics.attempt import Attempt, attempt_from_mapping, decode_attempt
from performance_engine.metrics.base import BaseMetric, IncrementalMetric, SequentialMetric
from performance_engine.metrics.calculator import MetricsCalculator
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
    "CompletionStatusEnum",
    "DifficultyEnum",
    "IncrementalMetric",
    "LearningModeType",
    "LearningModes",
    "MetricsCalculator",
    "PerformanceStatsData",
    "ScopeKey",
    "ScopeState",
    "SequentialMetric",
    "attempt_from_mapping",
    "decode_attempt",
    "decode_state",
    "encode_state",
    "fingerprint",
]
