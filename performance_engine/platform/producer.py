"""The platform's producer: validated attempt events onto the attempts topic (kafka-python).

Synchronous, for a Django/WSGI platform::

    from performance_engine import AttemptProducer

    with AttemptProducer() as producer:          # settings from PERF_ENGINE_* variables
        producer.emit({"attempt_id": "a-1", "user_id": 123, ...})

Every attempt is validated against SPEC 2 first: an invalid one raises
:class:`InvalidAttemptError` and nothing is sent (``emit_many`` validates the whole
batch before sending any of it). Records are keyed by ``user_id``, so a learner's attempts
stay in one partition, in order. Importing this module does not import Faust.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from performance_engine.broker import broker_failed, require_broker
from performance_engine.connections import kafka_python_options
from performance_engine.metrics.attempt import Attempt, attempt_from_mapping
from performance_engine.metrics.modes import LearningModes
from performance_engine.settings import Settings, load_learning_modes, load_settings

__all__ = ["AttemptProducer"]


class AttemptProducer:
    """Validates attempts and publishes them, keyed by ``user_id``."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        learning_modes: LearningModes | None = None,
        **kafka_options: Any,
    ) -> None:
        self.settings = settings or load_settings()
        self.learning_modes = learning_modes or load_learning_modes(
            self.settings.learning_modes_path
        )
        options: dict[str, Any] = {
            "bootstrap_servers": self.settings.kafka_bootstrap.split(","),
            "acks": "all",
            "linger_ms": 5,
            "retries": 5,
            "bootstrap_timeout_ms": 10_000,
            **kafka_python_options(self.settings),
        }
        options.update(kafka_options)
        require_broker(self.settings)  # a clear error, before kafka-python retries for long
        try:
            self._producer = KafkaProducer(**options)
        except KafkaError as exc:
            raise broker_failed(self.settings, exc) from exc
        self.sent = 0

    def validate(self, attempt: Mapping[str, Any] | Attempt) -> Attempt:
        """The attempt as the engine will see it; InvalidAttemptError if it breaks SPEC 2."""
        if isinstance(attempt, Attempt):
            return attempt_from_mapping(attempt.to_mapping(), self.learning_modes)
        return attempt_from_mapping(attempt, self.learning_modes)

    def emit(self, attempt: Mapping[str, Any] | Attempt) -> Any:
        """Validate and send one attempt; returns kafka-python's future for the record."""
        return self._send(self.validate(attempt))

    def emit_many(self, attempts: Iterable[Mapping[str, Any] | Attempt]) -> int:
        """Validate every attempt, then send them all; returns how many were sent."""
        valid = [self.validate(a) for a in attempts]
        for attempt in valid:
            self._send(attempt)
        return len(valid)

    def emit_raw(self, key: bytes | None, value: bytes | None) -> Any:
        """Send a record as it is, unvalidated (for tests and demos of the dead-letter path)."""
        try:
            return self._producer.send(self.settings.attempts_topic, key=key, value=value)
        except KafkaError as exc:
            raise broker_failed(self.settings, exc) from exc

    def flush(self, timeout: float | None = None) -> None:
        """Block until every sent attempt is acknowledged by the broker."""
        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise broker_failed(self.settings, exc) from exc

    def close(self, timeout: float | None = None) -> None:
        self._producer.close(timeout=timeout)

    def __enter__(self) -> AttemptProducer:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.close()

    def _send(self, attempt: Attempt) -> Any:
        try:
            future = self._producer.send(
                self.settings.attempts_topic,
                key=str(attempt.user_id).encode(),
                value=attempt.to_json(),
            )
        except KafkaError as exc:
            raise broker_failed(self.settings, exc) from exc
        self.sent += 1
        return future
