"""The transactional outbox, importable as ``performance_engine.outbox`` (its home is
:mod:`performance_engine.platform.outbox`)."""

from performance_engine.platform.outbox import (
    LANES_TABLE,
    OUTBOX_LANES,
    OUTBOX_TABLE,
    create_outbox,
    outbox_ddl,
    outbox_engine,
    record_attempt,
    record_attempts,
)

__all__ = [
    "LANES_TABLE",
    "OUTBOX_LANES",
    "OUTBOX_TABLE",
    "create_outbox",
    "outbox_ddl",
    "outbox_engine",
    "record_attempt",
    "record_attempts",
]
