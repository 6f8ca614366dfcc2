"""Every error the engine raises on purpose.

One root, so that a platform can catch everything the engine means to raise with a
single ``except PerformanceEngineError``::

    PerformanceEngineError
    ├── ConfigurationError          a setting or learning-mode file is wrong
    ├── InvalidAttemptError         an attempt event breaks the contract (SPEC 2)
    │                               (also a ValueError)
    ├── InputFileError              a backfill/emit file cannot be read, or a row is bad
    ├── InvalidScopeError           a user id, sub-topic id or learning mode is malformed
    │                               (also a ValueError)
    ├── UserAttemptsNotFoundError   no stats stored for the scope (also a LookupError)
    ├── BrokerUnavailableError      no Kafka bootstrap server answers
    └── DatabaseQueryError          Redis failed; the cause is chained
        └── StateConflictError      a scope changed under a compare-and-set write

Every message says what went wrong and what to do about it.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "ERROR_CLASSES",
    "BrokerUnavailableError",
    "ConfigurationError",
    "DatabaseQueryError",
    "ErrorClass",
    "InputFileError",
    "InvalidAttemptError",
    "InvalidScopeError",
    "PerformanceEngineError",
    "StateConflictError",
    "UserAttemptsNotFoundError",
]


#: Why an attempt was rejected (a dead letter's ``pe-error-class`` header).
ErrorClass = Literal[
    "oversized",
    "invalid_utf8",
    "invalid_json",
    "missing_field",
    "invalid_field",
    "unknown_learning_mode",
    "unknown_difficulty",
    "implausible_time",
    "xapi_too_large",
    "xapi_not_json",
    "xapi_invalid",
    "xapi_missing_field",
    "xapi_version",
    "xapi_bad_timestamp",
    "xapi_conflict",
]
ERROR_CLASSES: tuple[str, ...] = get_args(ErrorClass)


class PerformanceEngineError(Exception):
    """The root of every error the engine raises on purpose."""


class ConfigurationError(PerformanceEngineError):
    """A setting, environment variable or learning-mode file is invalid."""


class InvalidAttemptError(PerformanceEngineError, ValueError):
    """An attempt event breaks the contract.

    ``error_class`` is a short machine-readable name (it becomes the dead-letter
    header), ``reason`` the human-readable explanation.
    """

    def __init__(self, error_class: ErrorClass, reason: str) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason


class InputFileError(PerformanceEngineError):
    """An input file is missing, unreadable, of an unknown format, or has a bad row."""


class InvalidScopeError(PerformanceEngineError, ValueError):
    """A requested user id, sub-topic id or learning mode is malformed."""


class UserAttemptsNotFoundError(PerformanceEngineError, LookupError):
    """No stats are stored for the requested (user, sub-topic, learning mode)."""


class BrokerUnavailableError(PerformanceEngineError):
    """No Kafka bootstrap server answers."""


class DatabaseQueryError(PerformanceEngineError):
    """Talking to Redis failed; the Redis exception is chained as ``__cause__``."""


class StateConflictError(DatabaseQueryError):
    """A scope was changed by someone else between reading and writing it."""
