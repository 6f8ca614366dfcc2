"""History from the platform's database: attempts read with SQL, in chunks, for the backfill.

The rows come from a query (``SELECT id AS attempt_id, learner_id AS user_id, ...``) or a
table whose columns carry the SPEC 2 names, through pandas and SQLAlchemy in chunks (a
server-side cursor where the driver has one), and are validated exactly like a file's
rows (:func:`performance_engine.metrics.frame.load_row_chunks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
from sqlalchemy import Engine, MetaData, Table, func, select, text
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
from sqlalchemy.sql import Select, TextClause

from performance_engine.errors import ConfigurationError, DatabaseQueryError, InputFileError
from performance_engine.metrics.frame import COLUMNS, REQUIRED_COLUMNS, LoadResult, load_row_chunks
from performance_engine.metrics.modes import LearningModes

__all__ = ["CHUNK_ROWS", "load_sql_attempts"]

#: Rows read from the database at a time.
CHUNK_ROWS = 100_000

Progress = Callable[[str, int, int], None]


def load_sql_attempts(
    engine: Engine,
    modes: LearningModes,
    *,
    query: str | None = None,
    table: str | None = None,
    skip_invalid: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress = lambda phase, done, total: None,
) -> LoadResult:
    """Read and validate the attempts of ``query`` or of ``table`` (one of them).

    A bad row raises :class:`InputFileError` naming its position in the results and its
    ``attempt_id``, unless ``skip_invalid``; a query the database refuses raises
    :class:`DatabaseQueryError` with the database's message.
    """
    if (query is None) == (table is None):
        raise ConfigurationError("give either a query (--query) or a table (--table)")
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            statement = _statement(connection, query, table)
            source = f"query on {where}" if query is not None else f"table {table} on {where}"
            total = _count(connection, statement)
            progress("reading", 0, total)
            streaming = connection.execution_options(stream_results=True, max_row_buffer=chunk_rows)
            with streaming.execute(statement) as result:
                return load_row_chunks(
                    _frames(result, chunk_rows, source),
                    modes,
                    skip_invalid=skip_invalid,
                    source=source,
                    progress=lambda rows: progress("reading", rows, max(total, rows)),
                )
    except SQLAlchemyError as exc:
        raise DatabaseQueryError(
            f"reading attempts from {where} failed: {_first_line(exc)}"
        ) from exc


def _statement(
    connection: Connection, query: str | None, table: str | None
) -> Select[Any] | TextClause:
    if query is not None:
        return text(query.strip().rstrip(";"))
    assert table is not None
    schema, _, name = table.rpartition(".")
    try:
        reflected = Table(name, MetaData(), autoload_with=connection, schema=schema or None)
    except NoSuchTableError:
        raise InputFileError(
            f"no table {table!r} in the database; give its name (schema.table)"
        ) from None
    columns = [reflected.c[c] for c in COLUMNS if c in reflected.c]
    _require_columns([c.name for c in columns], f"table {table}")
    return select(*columns)


def _count(connection: Connection, statement: Select[Any] | TextClause) -> int:
    """How many rows the statement gives (for the progress bar)."""
    if isinstance(statement, TextClause):
        rows = statement.columns().subquery("counted")
    else:
        rows = statement.subquery("counted")
    return int(connection.scalar(select(func.count()).select_from(rows)) or 0)


def _frames(result: CursorResult[Any], chunk_rows: int, source: str) -> Iterator[pd.DataFrame]:
    """The result's rows as DataFrames of ``chunk_rows`` rows (pandas infers each column's
    type from the driver's values)."""
    columns = list(result.keys())
    _require_columns(columns, source)
    for rows in result.partitions(chunk_rows):
        yield pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)


def _require_columns(names: list[str], source: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InputFileError(
            f"{source}: missing column(s) {', '.join(missing)}; the attempts need "
            f"{', '.join(REQUIRED_COLUMNS)} (alias other names in the query: "
            "SELECT learner_id AS user_id, ...)"
        )


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
