"""The backfill from the platform's database (PostgreSQL, MariaDB, SQLite, for real): the
same state and stats as the file backfill of the same rows, bad rows named."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
)
from sqlalchemy.dialects import mysql

from performance_engine.errors import DatabaseQueryError, InputFileError
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.outbox import outbox_engine
from performance_engine.settings import Settings
from performance_engine.store.stats_store import StatsStore
from performance_engine.tools.backfill import backfill_file, backfill_sql
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import oracle, run_cli, stored

pytestmark = pytest.mark.redis

metadata = MetaData()
#: How a platform might keep its attempts: native types, its own row id, NULLs allowed.
history = Table(
    "attempt_history",
    metadata,
    Column("row_id", Integer, primary_key=True, autoincrement=True),
    Column("attempt_id", String(128)),
    Column("user_id", BigInteger),
    Column("sub_topic_id", BigInteger),
    Column("learning_mode", String(32)),
    Column("question_id", BigInteger),
    Column("difficulty", String(16)),
    Column("is_correct", Boolean),  # MariaDB: TINYINT(1)
    # PostgreSQL: timestamptz; MariaDB: DATETIME(3), UTC without a zone; SQLite: text
    Column(
        "occurred_at",
        DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb"),
    ),
    Column("attempt_number", Integer, nullable=True),
    Column("time_spent_ms", Integer, nullable=True),
)


def history_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Attempts with redelivered duplicates, arriving out of learning order, some
    optional values NULL."""
    rng = random.Random(seed)
    rows = generate_attempts(count, users=30, seed=seed)
    for row in rng.sample(rows, count // 10):
        row["attempt_number"] = None
        row["time_spent_ms"] = None
    rows += [dict(row) for row in rng.sample(rows, count // 20)]
    rng.shuffle(rows)
    return rows


def insert(engine: Any, rows: list[dict[str, Any]]) -> None:
    aware = engine.dialect.name == "postgresql"
    metadata.create_all(engine)

    def when(ms: int) -> datetime:
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
        return moment if aware else moment.replace(tzinfo=None)

    with engine.begin() as connection:
        connection.execute(
            history.insert(), [{**r, "occurred_at": when(r["occurred_at"])} for r in rows]
        )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w") as out:
        for row in rows:
            out.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    return path


def test_sql_backfill_equals_the_file_backfill_of_the_same_rows(
    database_url: str, settings: Settings, tmp_path: Path
) -> None:
    rows = history_rows(3000, seed=11)
    engine = outbox_engine(database_url)
    insert(engine, rows)
    expected = oracle(rows)
    scopes = sorted(expected)
    from_file = settings
    from_sql = Settings(redis_url=settings.redis_url, key_prefix=f"{settings.key_prefix}:sql")
    calculator = MetricsCalculator()
    phases: set[str] = set()
    with StatsStore.from_settings(from_file) as store:
        backfill_file(write_jsonl(tmp_path / "history.jsonl", rows), store, calculator)
    with StatsStore.from_settings(from_sql) as store:
        report = backfill_sql(
            engine,
            store,
            calculator,
            table="attempt_history",
            progress=lambda phase, done, total: phases.add(phase),
        )
        assert (report.rows, report.scopes, report.rejected) == (len(rows), len(expected), [])
        assert {"reading", "writing"} <= phases
        again = backfill_sql(engine, store, calculator, table="attempt_history")
        assert (again.written, again.attempts_applied) == (0, 0)  # a second run changes nothing
    assert stored(from_sql, scopes) == stored(from_file, scopes) == expected
    with StatsStore.from_settings(from_sql) as sql, StatsStore.from_settings(from_file) as file:
        assert [sql.stats(s) for s in scopes] == [file.stats(s) for s in scopes]
    engine.dispose()


def test_a_query_aliases_other_column_names_and_bad_rows_are_named(
    database_url: str, settings: Settings
) -> None:
    rows = history_rows(400, seed=12)
    bad = rows[117] = {**rows[117], "difficulty": "impossible"}
    engine = outbox_engine(database_url)
    insert(engine, rows)
    query = """
        SELECT row_id AS platform_row, attempt_id, user_id AS user_id, sub_topic_id,
               learning_mode, question_id, difficulty, is_correct, occurred_at,
               attempt_number, time_spent_ms
        FROM attempt_history ORDER BY row_id;
    """
    calculator = MetricsCalculator()
    with StatsStore.from_settings(settings) as store:
        with pytest.raises(InputFileError) as refused:
            backfill_sql(engine, store, calculator, query=query)
        assert str(refused.value).endswith(
            f"row 118 (attempt_id {bad['attempt_id']!r}): difficulty 'impossible' is not one "
            "of easy, medium, hard; fix it or pass --skip-invalid"
        )
        assert store.read(sorted(oracle(rows))) == [None] * len(oracle(rows))  # nothing written
        report = backfill_sql(engine, store, calculator, query=query, skip_invalid=True)
    assert [(e.row, e.attempt_id, e.error_class) for e in report.rejected] == [
        (118, bad["attempt_id"], "unknown_difficulty")
    ]
    good = [row for row in rows if row is not bad]
    expected = oracle(good)
    assert stored(settings, sorted(expected)) == expected
    engine.dispose()


@pytest.mark.slow  # runs perf-engine in processes of its own
def test_sql_backfill_errors_are_one_clear_line(settings: Settings, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    engine = outbox_engine(url)
    insert(engine, history_rows(50, seed=13))
    calculator = MetricsCalculator()
    with StatsStore.from_settings(settings) as store:
        with pytest.raises(InputFileError, match=r"missing column\(s\) user_id; .* AS user_id"):
            backfill_sql(
                engine,
                store,
                calculator,
                query="SELECT attempt_id, sub_topic_id, learning_mode, question_id, "
                "difficulty, is_correct, occurred_at FROM attempt_history",
            )
        with pytest.raises(InputFileError, match="no table 'answers'"):
            backfill_sql(engine, store, calculator, table="answers")
        with pytest.raises(DatabaseQueryError, match="no such column: nope"):
            backfill_sql(engine, store, calculator, query="SELECT nope FROM attempt_history")
    engine.dispose()
    asked_for_what = run_cli(settings, "backfill", url, "--quiet")
    assert asked_for_what.returncode == 1
    assert asked_for_what.stderr.strip().splitlines() == [
        f"perf-engine backfill: error: {url} is a database: say what to read with --query "
        "'SELECT ...' or --table NAME"
    ]
    not_a_database = run_cli(settings, "backfill", "history.csv", "--table", "t", "--quiet")
    assert not_a_database.returncode == 1
    assert "give its SQLAlchemy URL" in not_a_database.stderr


@pytest.mark.slow  # runs perf-engine in processes of its own
def test_cli_backfill_from_a_table_with_its_progress_bar(
    settings: Settings, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    rows = history_rows(300, seed=14)
    engine = outbox_engine(url)
    insert(engine, rows)
    engine.dispose()
    done = run_cli(settings, "backfill", url, "--table", "attempt_history")
    assert done.returncode == 0, done.stderr
    expected = oracle(rows)
    assert f"backfilled {len(rows)} attempts into {len(expected)} scopes" in done.stdout
    assert "reading" in done.stderr
    assert "writing" in done.stderr
    assert stored(settings, sorted(expected)) == expected
