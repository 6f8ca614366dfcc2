"""A file's backfill shared out over processes: the single backfill's result, exactly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

from performance_engine.errors import DatabaseQueryError, InputFileError
from performance_engine.metrics.batch import compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.loader import load_attempts
from performance_engine.settings import Settings
from performance_engine.tools.backfill import backfill_file
from performance_engine.tools.backfill_parallel import (
    BYTES_PER_PROCESS,
    backfill_file_in_processes,
    processes_for,
    share_of,
)
from performance_engine.tools.demo import free_port
from performance_engine.tools.simulator import generate_attempts
from performance_engine.worker.store import StatsStore
from tests.helpers import run_cli


def stored(client: redis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every key of a prefix (the prefix cut off) and its value."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    return {
        key[len(prefix) :]: value for key, value in zip(keys, client.mget(keys), strict=True)
    }


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """Attempts with redelivered duplicates, out of order, and three bad rows."""
    rows = generate_attempts(6000, users=300, sub_topics=3, seed=11)
    rows += [dict(row) for row in rows[:400]]
    rows.reverse()
    rows[5]["difficulty"] = "impossible"
    rows[700]["user_id"] = 0
    rows[4000]["question_id"] = "seven"
    path = tmp_path / "history.parquet"
    pd.DataFrame(rows).astype({"question_id": str}).to_parquet(path)
    return path


def test_processes_write_what_one_process_writes(
    settings: Settings, redis_client: redis.Redis, history: Path
) -> None:
    single = replace(settings, key_prefix=f"{settings.key_prefix}-single")
    calculator = MetricsCalculator()
    with StatsStore.from_settings(single) as store:
        alone = backfill_file(history, store, calculator, skip_invalid=True)
    seen: list[tuple[str, int, int]] = []
    shared = backfill_file_in_processes(
        history,
        settings,
        3,
        skip_invalid=True,
        progress=lambda phase, done, total: seen.append((phase, done, total)),
    )
    try:
        assert shared == alone
        assert [(e.row, e.error_class) for e in shared.rejected] == [
            (6, "unknown_difficulty"),
            (701, "invalid_field"),
            (4001, "invalid_field"),
        ]
        assert stored(redis_client, settings.key_prefix) == stored(redis_client, single.key_prefix)
        frame = load_attempts(history, calculator.learning_modes, skip_invalid=True).frame
        expected = compute_stats(frame, calculator)
        with StatsStore.from_settings(settings) as store:
            assert {scope: store.stats(scope) for scope in expected} == expected
        # Every process reported; the sums reached the totals.
        assert ("reading", 3, 3) in seen
        assert ("writing", alone.scopes, alone.scopes) in seen
        again = backfill_file_in_processes(history, settings, 3, skip_invalid=True)
        assert (again.written, again.attempts_applied, again.unchanged) == (0, 0, alone.scopes)
    finally:
        for key in redis_client.scan_iter(match=f"{single.key_prefix}:*", count=1000):
            redis_client.delete(key)


def test_a_scope_belongs_to_one_process(history: Path) -> None:
    frame = load_attempts(history, MetricsCalculator().learning_modes, skip_invalid=True).frame
    shares = pd.Series(share_of(frame, 3), index=frame.index)
    per_scope = shares.groupby([frame["user_id"], frame["sub_topic_id"]]).nunique()
    assert (per_scope == 1).all()
    assert set(shares) == {0, 1, 2}
    assert shares.value_counts().min() > len(frame) / 6  # no process left nearly idle


def test_a_bad_row_stops_every_process_and_is_named_once(
    settings: Settings, redis_client: redis.Redis, history: Path
) -> None:
    with pytest.raises(InputFileError, match="row 6: difficulty 'impossible'"):
        backfill_file_in_processes(history, settings, 2)
    assert stored(redis_client, settings.key_prefix) == {}


def test_redis_unreachable_is_one_clear_error(history: Path) -> None:
    down = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", key_prefix="x")
    with pytest.raises(DatabaseQueryError, match=r"Redis at redis://127\.0\.0\.1"):
        backfill_file_in_processes(history, down, 2, skip_invalid=True)


def test_default_processes_follow_the_file_size() -> None:
    assert processes_for(0, cpus=8) == 1
    assert processes_for(BYTES_PER_PROCESS - 1, cpus=8) == 1
    assert processes_for(2 * BYTES_PER_PROCESS, cpus=8) == 2
    assert processes_for(100 * BYTES_PER_PROCESS, cpus=2) == 2
    assert processes_for(100 * BYTES_PER_PROCESS, cpus=64) == 4


def test_cli_processes(settings: Settings, redis_client: redis.Redis, history: Path) -> None:
    done = run_cli(settings, "backfill", str(history), "--processes", "2", "--skip-invalid")
    assert done.returncode == 0, done.stderr
    assert "3 invalid rows skipped" in done.stdout
    assert "writing" in done.stderr  # the progress bar, summed over the processes
    assert stored(redis_client, settings.key_prefix)
    wrong = run_cli(settings, "backfill", "sqlite:///x.db", "--table", "t", "--processes", "2")
    assert wrong.returncode == 1
    assert "--processes shares out a file's backfill" in wrong.stderr
