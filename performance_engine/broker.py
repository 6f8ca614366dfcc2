"""Reaching the Kafka brokers: their addresses, and the check a command makes before it
starts (can a broker be reached at all?)."""

from __future__ import annotations

import socket

from performance_engine.errors import BrokerUnavailableError, ConfigurationError
from performance_engine.settings import Settings

__all__ = ["bootstrap_hosts", "broker_failed", "require_broker"]


def bootstrap_hosts(settings: Settings) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for item in settings.kafka_bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"PERF_ENGINE_KAFKA_BOOTSTRAP entry {item!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def broker_failed(settings: Settings, exc: Exception) -> BrokerUnavailableError:
    """The error for a Kafka client that failed, saying what to check."""
    return BrokerUnavailableError(
        f"Kafka at {settings.kafka_bootstrap} failed: {exc}; check that the broker runs and "
        "that PERF_ENGINE_KAFKA_BOOTSTRAP points at it"
    )


def require_broker(settings: Settings, timeout: float = 5.0) -> None:
    """Raise BrokerUnavailableError unless some bootstrap server accepts a connection."""
    errors = []
    for host, port in bootstrap_hosts(settings):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            errors.append(f"{host}:{port} ({exc.strerror or exc})")
    raise BrokerUnavailableError(
        f"Kafka at {settings.kafka_bootstrap} is unreachable: {'; '.join(errors)}; check that "
        "the broker runs and that PERF_ENGINE_KAFKA_BOOTSTRAP points at it"
    )
