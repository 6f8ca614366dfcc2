"""performance-engine: live learner-performance statistics.

Attempt events arrive on Kafka; a Faust worker keeps each scope's rolling state in Redis,
recomputes the registered metrics incrementally and publishes ``stats-updated`` events.
The platform reads the latest stats through :class:`PerformanceStats`.

Importing this package connects to nothing, reads no environment and imports no Faust
(the platform-side clients use kafka-python).
"""

from performance_engine.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    DatabaseQueryError,
    InputFileError,
    InvalidAttemptError,
    InvalidScopeError,
    PerformanceEngineError,
    StateConflictError,
    UserAttemptsNotFoundError,
)
from performance_engine.events import StatsUpdated
from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.base import BaseMetric, IncrementalMetric, SequentialMetric
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.learning import LearningParams
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.types import (
    CompletionStatusEnum,
    DifficultyEnum,
    LearningModeType,
    LearningStats,
    PerformanceStatsData,
    ScopeKey,
)
from performance_engine.platform.erase import ErasureReport, erase_learner
from performance_engine.platform.producer import AttemptProducer
from performance_engine.platform.read_api import AsyncPerformanceStats, PerformanceStats
from performance_engine.platform.subscriber import StatsSubscriber
from performance_engine.settings import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "AsyncPerformanceStats",
    "Attempt",
    "AttemptProducer",
    "BaseMetric",
    "BrokerUnavailableError",
    "CompletionStatusEnum",
    "ConfigurationError",
    "DatabaseQueryError",
    "DifficultyEnum",
    "ErasureReport",
    "IncrementalMetric",
    "InputFileError",
    "InvalidAttemptError",
    "InvalidScopeError",
    "LearningModeType",
    "LearningModes",
    "LearningParams",
    "LearningStats",
    "MetricsCalculator",
    "PerformanceEngineError",
    "PerformanceStats",
    "PerformanceStatsData",
    "ScopeKey",
    "SequentialMetric",
    "Settings",
    "StateConflictError",
    "StatsSubscriber",
    "StatsUpdated",
    "UserAttemptsNotFoundError",
    "erase_learner",
    "load_settings",
]
