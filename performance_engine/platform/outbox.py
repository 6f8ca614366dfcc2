"""A transactional outbox: attempts written in the platform's own database transaction.

Saving a learner's answer and sending its attempt event are two writes; a process that
dies between them loses the event. With the outbox, the platform inserts the attempt into
``perf_engine_outbox`` with the same SQLAlchemy ``Connection`` (so in the same transaction)
as its own row, and ``perf-engine relay`` publishes committed rows to Kafka::

    from performance_engine.platform.outbox import record_attempt

    with engine.begin() as connection:              # the platform's transaction
        connection.execute(answers.insert().values(...))
        record_attempt(connection, {"attempt_id": "a-1", "user_id": 123, ...})
    # committed: both rows, or (on an exception) neither

SQLAlchemy 2 Core; PostgreSQL, MariaDB/MySQL and SQLite. The table's DDL is also
available as text (:func:`outbox_ddl`) for migration tools.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    create_mock_engine,
    inspect,
)
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import CreateIndex, CreateTable

from performance_engine.errors import ConfigurationError, DatabaseQueryError
from performance_engine.metrics.attempt import Attempt, attempt_from_mapping
from performance_engine.metrics.modes import LearningModes

__all__ = [
    "LANES_TABLE",
    "OUTBOX_LANES",
    "OUTBOX_TABLE",
    "create_outbox",
    "lanes_table",
    "outbox_ddl",
    "outbox_engine",
    "outbox_rows",
    "outbox_table",
    "record_attempt",
    "record_attempts",
    "redacted_url",
]

OUTBOX_TABLE = "perf_engine_outbox"
LANES_TABLE = "perf_engine_outbox_lanes"
#: A learner's rows all go to lane ``user_id % OUTBOX_LANES``; a relay publishes a lane
#: only while it holds that lane's row lock, so a learner's attempts leave in order even
#: with several relays (fixed when the table is created).
OUTBOX_LANES = 16


def utc_now() -> datetime:
    """The current UTC time as the outbox stores it (no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


metadata = MetaData()

#: One row per recorded attempt. ``id`` gives the insertion order the relay publishes in;
#: ``sent_at`` is set once the broker acknowledged the row's event.
outbox_table = Table(
    OUTBOX_TABLE,
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("user_id", BigInteger, nullable=False),
    Column("lane", Integer, nullable=False),
    Column("attempt_id", String(128), nullable=False),
    Column("payload", Text, nullable=False),  # the SPEC 2 JSON, as the producer sends it
    # UTC, without a zone (MySQL's DATETIME has none); set by the writer and the relay.
    Column("created_at", DateTime, nullable=False, default=utc_now),
    Column("sent_at", DateTime, nullable=True),
)
#: ``sent_at`` first: the pending rows (``sent_at IS NULL``) are one range of it, however
#: many sent rows the retention keeps, and so are the rows to prune.
Index(f"ix_{OUTBOX_TABLE}_pending", outbox_table.c.sent_at, outbox_table.c.lane, outbox_table.c.id)

#: One row per lane: what relays lock to share the outbox.
lanes_table = Table(
    LANES_TABLE, metadata, Column("lane", Integer, primary_key=True, autoincrement=False)
)

_DEFAULT_MODES = LearningModes.default()


def outbox_ddl(dialect: str = "postgresql") -> list[str]:
    """The statements that create the outbox for a dialect (``postgresql``, ``mysql``,
    ``mariadb``, ``sqlite``), for migration tools: the two tables, their indexes, and the
    rows of the lanes table."""
    engine = create_mock_engine(f"{dialect}://", executor=lambda *a, **k: None)
    statements: list[Any] = []
    for table in (outbox_table, lanes_table):
        statements += [CreateTable(table), *(CreateIndex(i) for i in table.indexes)]
    ddl = [str(s.compile(dialect=engine.dialect)).strip() for s in statements]
    rows = ", ".join(f"({lane})" for lane in range(OUTBOX_LANES))
    return [*ddl, f"INSERT INTO {LANES_TABLE} (lane) VALUES {rows}"]


def outbox_engine(url: str | URL, **options: Any) -> Engine:
    """An SQLAlchemy engine for a database URL, with a clear error for a bad one."""
    try:
        return create_engine(url, **options)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigurationError(
            f"database URL {redacted_url(url)!r} cannot be used: {exc}"
        ) from exc


def create_outbox(engine: Engine) -> bool:
    """Create the outbox tables unless they exist; True when it created them."""
    try:
        with engine.begin() as connection:
            if inspect(connection).has_table(OUTBOX_TABLE):
                return False
            metadata.create_all(connection, tables=[outbox_table, lanes_table])
            connection.execute(lanes_table.insert(), [{"lane": n} for n in range(OUTBOX_LANES)])
            return True
    except SQLAlchemyError as exc:
        raise DatabaseQueryError(
            f"creating {OUTBOX_TABLE} in {engine.url.render_as_string(hide_password=True)} "
            f"failed: {exc}"
        ) from exc


def record_attempt(
    connection: Connection,
    attempt: Mapping[str, Any] | Attempt,
    *,
    learning_modes: LearningModes | None = None,
) -> None:
    """Validate an attempt (SPEC 2; :class:`InvalidAttemptError`, nothing written) and insert
    it into the outbox through ``connection``, inside the caller's transaction."""
    record_attempts(connection, [attempt], learning_modes=learning_modes)


def record_attempts(
    connection: Connection,
    attempts: Iterable[Mapping[str, Any] | Attempt],
    *,
    learning_modes: LearningModes | None = None,
) -> int:
    """Validate every attempt, then insert them all (none if one is invalid); returns how
    many were recorded."""
    rows = outbox_rows(attempts, learning_modes)
    if rows:
        connection.execute(outbox_table.insert(), rows)
    return len(rows)


def outbox_rows(
    attempts: Iterable[Mapping[str, Any] | Attempt], learning_modes: LearningModes | None = None
) -> list[dict[str, Any]]:
    """The outbox rows of attempts, every one validated first (SPEC 2;
    :class:`InvalidAttemptError` for the first invalid one): ``user_id``, ``lane``,
    ``attempt_id`` and ``payload``, the JSON the producer would send."""
    modes = learning_modes or _DEFAULT_MODES
    valid = [_validated(a, modes) for a in attempts]
    return [
        {
            "user_id": a.user_id,
            "lane": a.user_id % OUTBOX_LANES,
            "attempt_id": a.attempt_id,
            "payload": a.to_json().decode(),
        }
        for a in valid
    ]


def _validated(attempt: Mapping[str, Any] | Attempt, modes: LearningModes) -> Attempt:
    if isinstance(attempt, Attempt):
        return attempt_from_mapping(attempt.to_mapping(), modes)
    return attempt_from_mapping(attempt, modes)


def redacted_url(url: str | URL) -> str:
    """A database URL with its password hidden (for messages and logs)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparsable URL>"
