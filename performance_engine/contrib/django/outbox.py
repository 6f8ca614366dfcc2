"""Attempts into the outbox inside the current Django transaction."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.conf import settings as django_settings

from performance_engine.contrib.django.models import OutboxRow
from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.modes import LearningModes
from performance_engine.platform.outbox import outbox_rows
from performance_engine.settings import load_learning_modes, load_settings

__all__ = ["record_attempt", "record_attempts"]


def record_attempt(
    attempt: Mapping[str, Any] | Attempt,
    *,
    using: str = "default",
    learning_modes: LearningModes | None = None,
) -> None:
    """Validate an attempt (SPEC 2; :class:`InvalidAttemptError`, nothing written) and
    insert it into the outbox of database ``using``, inside the current transaction::

        with transaction.atomic():
            answer = Answer.objects.create(...)
            record_attempt({"attempt_id": str(answer.pk), "user_id": ..., ...})

    A rollback of that transaction leaves nothing for the relay to send. The learning
    modes are ``PERF_ENGINE_LEARNING_MODES``'s (the built-in ones when unset) unless given.
    """
    record_attempts([attempt], using=using, learning_modes=learning_modes)


def record_attempts(
    attempts: Iterable[Mapping[str, Any] | Attempt],
    *,
    using: str = "default",
    learning_modes: LearningModes | None = None,
) -> int:
    """Validate every attempt, then insert them all (none if one is invalid); returns how
    many were recorded."""
    rows = outbox_rows(attempts, learning_modes or _configured_modes())
    if rows:
        now = _utc_now()
        OutboxRow.objects.using(using).bulk_create(
            [OutboxRow(**row, created_at=now) for row in rows]
        )
    return len(rows)


@functools.cache
def _configured_modes() -> LearningModes:
    return load_learning_modes(load_settings().learning_modes_path)


def _utc_now() -> datetime:
    """Now in UTC as Django stores it in the outbox's zone-less column: aware with
    ``USE_TZ`` (Django writes UTC), else naive UTC."""
    now = datetime.now(UTC)
    return now if django_settings.USE_TZ else now.replace(tzinfo=None)
