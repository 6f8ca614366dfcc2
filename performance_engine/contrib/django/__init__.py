"""The engine's Django app: the transactional outbox in Django's own transactions.

::

    INSTALLED_APPS = [..., "performance_engine.contrib.django"]

``python manage.py migrate`` creates the outbox tables (the same schema as
``perf-engine outbox init``); :func:`record_attempt` writes an attempt inside the current
Django transaction; ``manage.py perf_engine_relay`` publishes committed rows to Kafka and
``manage.py perf_engine_backfill`` backfills a model's or a queryset's attempts. Needs the
``[django]`` extra. Importing this package imports neither models nor Django's settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from performance_engine.contrib.django.outbox import record_attempt, record_attempts

__all__ = ["record_attempt", "record_attempts"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # the models need Django's app registry: loaded on first use
        from performance_engine.contrib.django import outbox

        return getattr(outbox, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
