"""The outbox tables as Django models.

The tables belong to the engine (``managed = False``): the app's migration creates them
with the engine's own DDL (:func:`performance_engine.platform.outbox.outbox_ddl`), so a
Django platform and ``perf-engine outbox init`` make the very same schema, and the relay
(SQLAlchemy) reads what the ORM wrote.
"""

from __future__ import annotations

from django.db import models

from performance_engine.platform.outbox import LANES_TABLE, OUTBOX_TABLE


class OutboxRow(models.Model):
    """One recorded attempt, waiting for the relay (``sent_at`` is null) or sent."""

    id = models.BigAutoField(primary_key=True)
    user_id = models.BigIntegerField()
    lane = models.IntegerField()
    attempt_id = models.CharField(max_length=128)
    payload = models.TextField()
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = OUTBOX_TABLE

    def __str__(self) -> str:
        return f"outbox row {self.id}: attempt {self.attempt_id}"


class OutboxLane(models.Model):
    """One lane of the outbox: what relays lock to share it."""

    lane = models.IntegerField(primary_key=True)

    class Meta:
        managed = False
        db_table = LANES_TABLE

    def __str__(self) -> str:
        return f"outbox lane {self.lane}"
