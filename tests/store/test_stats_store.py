"""Backfill into the real Redis, read back through the API and the CLI, against the oracle."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

from performance_engine import (
    AsyncPerformanceStats,
    DatabaseQueryError,
    PerformanceEngineError,
    PerformanceStats,
    UserAttemptsNotFoundError,
)
from performance_engine.errors import InvalidScopeError
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.history import decode_entries
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey
from performance_engine.settings import Settings
from performance_engine.store.layout import legacy_stats, unpack_scope
from performance_engine.store.stats_store import AsyncStatsStore, ScopeWrite, StatsStore
from performance_engine.store.upgrade import upgrade_layout
from performance_engine.tools.backfill import backfill_file, backfill_frame
from performance_engine.tools.demo import free_port
from performance_engine.tools.history_files import load_attempts
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import ROOT, TESTS, oracle, results, results_json, run_cli, spec_rows

pytestmark = pytest.mark.redis


@pytest.fixture
def store(settings: Settings) -> Any:
    with StatsStore.from_settings(settings) as s:
        yield s


@pytest.fixture
def history(tmp_path: Path) -> Path:
    rows = generate_attempts(3000, users=40, sub_topics=3, seed=7)
    rows += rows[:150]  # redelivered duplicates
    path = tmp_path / "history.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def dump(client: redis.Redis, prefix: str) -> dict[Any, Any]:
    """Every key of the prefix and its value (a stats hash's fields)."""
    return {
        key: client.hgetall(key) if client.type(key) == b"hash" else client.get(key)
        for key in client.scan_iter(match=f"{prefix}:*")
    }


def test_backfill_then_read_every_scope(
    store: StatsStore, settings: Settings, history: Path
) -> None:
    expected = oracle(history)
    report = backfill_file(history, store, MetricsCalculator())
    assert (report.scopes, report.written, report.attempts_applied) == (
        len(expected),
        len(expected),
        3000,
    )
    read = {
        scope: PerformanceStats.create_performance_stats(
            user_id=scope.user_id,
            sub_topic_id=scope.sub_topic_id,
            learning_mode=scope.learning_mode,
            settings=settings,
        )()
        for scope in expected
    }
    assert results(read) == expected

    async def read_async() -> dict[ScopeKey, PerformanceStatsData]:
        async with AsyncStatsStore.from_settings(settings) as shared:
            return {
                scope: await AsyncPerformanceStats.create_performance_stats(
                    user_id=scope.user_id,
                    sub_topic_id=scope.sub_topic_id,
                    learning_mode=scope.learning_mode,
                    store=shared,
                )()
                for scope in expected
            }

    assert results(asyncio.run(read_async())) == expected


@pytest.mark.slow  # runs perf-engine in processes of its own
def test_cli_backfill_and_stats(settings: Settings, history: Path) -> None:
    expected = oracle(history)
    done = run_cli(settings, "backfill", str(history), "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"into {len(expected)} scopes" in done.stdout
    for scope in sorted(expected)[:3]:
        shown = run_cli(
            settings,
            "stats",
            str(scope.user_id),
            str(scope.sub_topic_id),
            "--mode",
            scope.learning_mode.upper(),
            "--json",
        )
        assert shown.returncode == 0, shown.stderr
        assert results_json(shown.stdout) == results_json(expected[scope].to_json())
    table = run_cli(
        settings,
        "stats",
        str(scope.user_id),
        str(scope.sub_topic_id),
        "--mode",
        scope.learning_mode,
    )
    assert table.returncode == 0
    assert f"version {expected[scope].version}" in table.stdout
    learning = expected[scope].learning
    assert learning is not None
    mastered = "mastered" if learning.mastered else "not mastered"
    line = f"mastery {learning.mastery_probability:.1%} ({mastered})"
    assert line in table.stdout
    assert f"next: {learning.recommended_difficulty.value}" in table.stdout


@pytest.mark.slow  # runs perf-engine in processes of its own
def test_cli_stats_of_a_first_release_scope_rebuilt_into_the_spec_example(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    history = tmp_path / "spec.csv"
    pd.DataFrame(spec_rows()).to_csv(history, index=False)
    redis_client.set(  # a-1 .. a-5 as the first release stored them
        f"{settings.key_prefix}:{{u123}}:456:standard",
        (TESTS / "data" / "state-format-1.bin").read_bytes(),
    )
    old = run_cli(settings, "stats", "123", "456")
    assert old.returncode == 0
    assert "learning: unknown, this scope's state predates its attempt history" in old.stdout
    assert json.loads(run_cli(settings, "stats", "123", "456", "--json").stdout)["version"] == 5
    # the whole history rebuilds it: exactly the SPEC's example
    assert run_cli(settings, "backfill", str(history), "--quiet").returncode == 0
    shown = run_cli(settings, "stats", "123", "456", "--json")
    spec = (ROOT / "docs" / "SPEC.md").read_text()
    printed = spec[spec.index("## 4.") :].split("```json\n")[1].split("```")[0]
    assert results_json(shown.stdout) == results_json(printed)
    assert json.loads(shown.stdout)["revision"] == 6  # the first release's 5 writes, then one
    table = run_cli(settings, "stats", "123", "456").stdout
    assert "mastery 71.6% (not mastered) · next: medium · recent accuracy 61.1%" in table


@pytest.mark.parametrize("fixture", ["state-format-1.bin", "state-format-2-long.bin"])
def test_upgrade_store_moves_an_earlier_layouts_stats_into_the_stats_hash(
    settings: Settings, redis_client: redis.Redis, store: StatsStore, fixture: str
) -> None:
    """Values written by earlier releases carry their stats JSON after the state: Python
    readers read it there; ``upgrade-store`` moves it to the hash other languages read,
    once, and leaves a value changed meanwhile alone."""
    value = (TESTS / "data" / fixture).read_bytes()
    stats = legacy_stats(value)
    assert json.loads(stats)["version"] >= 1  # a layout-1 value: the stats JSON after its state
    scope = ScopeKey(123, 456, "standard")
    other = ScopeKey(124, 456, "standard")
    redis_client.set(store.keys.for_scope(scope), value)
    redis_client.set(store.keys.for_scope(other), value)
    assert redis_client.hget(store.keys.stats(123), "456:standard") is None
    assert store.stats_json(scope) == stats  # read where layout 1 put it
    assert store.read_stats([scope, other, ScopeKey(9, 9, "standard")]) == [stats, stats, None]

    class Racing(StatsStore):  # the other scope is written between the read and the move
        def values(self, keys: list[str]) -> list[bytes | None]:
            found = super().values(keys)
            redis_client.set(store.keys.for_scope(other), value + b" ")
            return found

    racing = Racing(store.client, store.keys)
    report = upgrade_layout(racing)
    assert (report.scanned, report.moved, report.changed) == (2, 1, 1)
    assert redis_client.hget(store.keys.stats(123), "456:standard") == stats
    moved = redis_client.get(store.keys.for_scope(scope))
    assert moved == value[: len(value) - len(stats)]
    assert unpack_scope(moved) == unpack_scope(value)
    assert store.stats_json(scope) == stats
    again = run_cli(settings, "upgrade-store")
    assert again.returncode == 0, again.stderr
    assert "2 scopes scanned; 1 moved to the stats hashes" in again.stdout
    assert redis_client.hget(store.keys.stats(124), "456:standard") == stats + b" "
    assert run_cli(settings, "upgrade-store").stdout.startswith("2 scopes scanned; 0 moved")


def test_backfill_twice_changes_nothing(
    store: StatsStore, settings: Settings, redis_client: redis.Redis, history: Path
) -> None:
    backfill_file(history, store, MetricsCalculator())
    before = dump(redis_client, settings.key_prefix)
    again = backfill_file(history, store, MetricsCalculator())
    scopes = [k for k in before if b":stats:" not in k and not k.endswith(b":history")]
    assert len(before) > len(scopes)  # and the histories that outgrew their scope's value
    assert (again.written, again.attempts_applied, again.unchanged) == (0, 0, len(scopes))
    assert dump(redis_client, settings.key_prefix) == before


def test_backfill_merges_with_existing_state(store: StatsStore, tmp_path: Path) -> None:
    rows = generate_attempts(1200, users=10, sub_topics=2, seed=3)
    calculator = MetricsCalculator()
    first, second, everything = tmp_path / "1.jsonl", tmp_path / "2.csv", tmp_path / "all.csv"
    pd.DataFrame(rows[:800]).to_json(first, orient="records", lines=True)
    pd.DataFrame(rows[500:]).to_csv(second, index=False)  # overlaps 300 attempts
    pd.DataFrame(rows).to_csv(everything, index=False)
    backfill_file(first, store, calculator)
    report = backfill_file(second, store, calculator)
    assert report.attempts_applied == 400
    expected = oracle(everything)
    assert results({scope: store.stats(scope) for scope in expected}) == expected


def test_compare_and_set_refuses_a_stale_write(store: StatsStore, history: Path) -> None:
    calculator = MetricsCalculator()
    frame = load_attempts(history, calculator.learning_modes).frame
    backfill_frame(frame, store, calculator)
    scope = ScopeKey(int(frame.user_id[0]), int(frame.sub_topic_id[0]), str(frame.learning_mode[0]))
    (stored,) = store.read([scope])
    assert stored is not None
    stale = ScopeWrite(scope, stored.state.version - 1, calculator.new_state(), b"{}")
    assert store.write([stale]) == [stale]
    assert store.stats(scope) == PerformanceStatsData.from_json(stored.stats_json)


def test_a_backfill_merges_scopes_created_while_it_ran(
    store: StatsStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A scope the backfill found empty but that someone else (a live worker) created
    before the backfill wrote it: the new scopes' write refuses it, the backfill reads it
    again and merges, and every attempt of both counts once."""
    rows = generate_attempts(2000, users=30, sub_topics=2, seed=11)
    calculator = MetricsCalculator()
    late = rows[:40]  # what the live worker applied meanwhile; the file holds 20 of them too
    history = tmp_path / "history.csv"
    pd.DataFrame(rows[20:]).to_csv(history, index=False)
    everything = tmp_path / "everything.csv"
    pd.DataFrame(rows).to_csv(everything, index=False)
    live = tmp_path / "live.csv"
    pd.DataFrame(late).to_csv(live, index=False)
    created: list[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "reading state" and done == total and not created:
            created.append(backfill_file(live, store, calculator).written)

    with caplog.at_level(logging.INFO, logger="performance_engine.tools.backfill"):
        report = backfill_file(history, store, calculator, progress=progress)
    assert created[0] > 0  # the scopes were created between the read and the write
    assert "changed during the backfill; merging them again" in caplog.text
    assert report.attempts_applied == len(rows) - 40  # the 20 shared ones count once
    expected = oracle(everything)
    assert results({scope: store.stats(scope) for scope in expected}) == expected


@pytest.mark.parametrize("use_async", [False, True])
def test_creating_a_scope_someone_else_created_is_refused_alone(
    settings: Settings, use_async: bool
) -> None:
    """The compare-and-set script refuses to create a scope that someone else created, and
    just that one (sync and asyncio stores alike); its stats stay the first writer's."""
    calculator = MetricsCalculator()
    state = calculator.new_state()
    scopes = [ScopeKey(u, 1, "practice") for u in range(1, 601)]  # three script calls
    taken = scopes[300]
    with StatsStore.from_settings(settings) as store:
        first = ScopeWrite(taken, 0, state, b'{"first": true}')
        assert store.write([first]) == []
    writes = [ScopeWrite(s, 0, state, f'{{"u": {s.user_id}}}'.encode()) for s in scopes]

    async def write_async() -> list[ScopeWrite]:
        async with AsyncStatsStore.from_settings(settings) as store:
            return await store.write(writes)

    if use_async:
        refused = asyncio.run(write_async())
    else:
        with StatsStore.from_settings(settings) as store:
            refused = store.write(writes)
    assert [w.scope for w in refused] == [taken]
    with StatsStore.from_settings(settings) as store:
        stored = store.read(scopes)
    assert stored[300] is not None
    assert stored[300].stats_json == b'{"first": true}'
    assert [s.stats_json if s else None for s in stored[:300] + stored[301:]] == [
        f'{{"u": {s.user_id}}}'.encode() for s in scopes[:300] + scopes[301:]
    ]


def test_keys_live_under_the_prefix_with_a_user_hash_tag(
    store: StatsStore, settings: Settings, redis_client: redis.Redis, history: Path
) -> None:
    report = backfill_file(history, store, MetricsCalculator())
    keys = {k.decode() for k in redis_client.scan_iter(match=f"{settings.key_prefix}:*")}
    stats_keys = {k.decode() for k in redis_client.scan_iter(match=store.keys.stats_pattern())}
    scope_keys = {key for key in keys - stats_keys if not key.endswith(":history")}
    assert len(scope_keys) == report.scopes
    assert keys - scope_keys - stats_keys <= {f"{key}:history" for key in scope_keys}
    assert all(redis_client.type(key) == b"hash" for key in stats_keys)
    spilled = 0
    for key in scope_keys:
        value = redis_client.get(key)
        assert isinstance(value, bytes)
        state = unpack_scope(value)
        prefix, tag, sub, mode = key.split(":")
        stats_json = redis_client.hget(f"{prefix}:stats:{tag}", f"{sub}:{mode}")
        assert isinstance(stats_json, bytes)
        assert value[:8] == state.revision.to_bytes(8, "big") == (1).to_bytes(8, "big")
        assert json.loads(stats_json)["version"] == state.version
        assert json.loads(stats_json)["revision"] == 1  # written once
        prefix, tag, sub, mode = key.split(":")
        assert prefix == settings.key_prefix
        assert (tag[:2], tag[-1], tag[2:-1].isdigit()) == ("{u", "}", True)
        assert sub.isdigit()
        assert mode in {"standard", "practice", "mastery"}
        stored_history = redis_client.get(f"{key}:history")
        assert (stored_history is not None) == state.spilled
        if state.spilled:
            spilled += 1
            assert isinstance(stored_history, bytes)
            entries = decode_entries(stored_history, state.history)
        else:
            entries = state.inline_entries()
        assert len(entries) == state.version
    assert 0 < spilled < len(scope_keys)  # some histories outgrew the value, some did not


def test_unknown_scope_raises_not_found(settings: Settings) -> None:
    with pytest.raises(UserAttemptsNotFoundError, match="no stats for user 5"):
        PerformanceStats.create_performance_stats(
            user_id=5, sub_topic_id=6, learning_mode="standard", settings=settings
        )()
    with pytest.raises(UserAttemptsNotFoundError):
        asyncio.run(
            AsyncPerformanceStats.create_performance_stats(
                user_id=5, sub_topic_id=6, learning_mode="standard", settings=settings
            )()
        )
    shown = run_cli(settings, "stats", "5", "6")
    assert shown.returncode == 1
    assert shown.stderr.strip().splitlines() == [
        "perf-engine stats: error: no stats for user 5, sub-topic 6, learning mode 'standard': "
        "no attempt of that scope has been processed (check the ids and the mode, or backfill "
        "the history)"
    ]


def test_unreachable_redis_raises_database_query_error(tmp_path: Path) -> None:
    down = Settings(redis_url=f"redis://:secret@127.0.0.1:{free_port()}/0", key_prefix="x")
    with pytest.raises(DatabaseQueryError) as info:
        PerformanceStats.create_performance_stats(
            user_id=1, sub_topic_id=2, learning_mode="standard", settings=down
        )()
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    assert isinstance(info.value, PerformanceEngineError)
    assert "secret" not in str(info.value)
    with pytest.raises(DatabaseQueryError) as async_info:
        asyncio.run(
            AsyncPerformanceStats.create_performance_stats(
                user_id=1, sub_topic_id=2, learning_mode="standard", settings=down
            )()
        )
    assert isinstance(async_info.value.__cause__, redis.ConnectionError)
    shown = run_cli(down, "stats", "1", "2")
    assert shown.returncode == 1
    assert len(shown.stderr.strip().splitlines()) == 1
    assert "Redis at redis://:***@127.0.0.1" in shown.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_id": 0}, "user_id"),
        ({"user_id": True}, "user_id"),
        ({"sub_topic_id": "7"}, "sub_topic_id"),
        ({"learning_mode": "std:*"}, "learning_mode"),
        ({"learning_mode": "{u1}"}, "learning_mode"),
    ],
)
def test_malformed_scope_is_refused_before_redis(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"user_id": 1, "sub_topic_id": 2, "learning_mode": "standard"}
    with pytest.raises(InvalidScopeError, match=message):
        PerformanceStats.create_performance_stats(**(args | kwargs), settings=Settings())


@pytest.mark.slow  # runs perf-engine in processes of its own
def test_cli_backfill_errors(settings: Settings, tmp_path: Path) -> None:
    missing = run_cli(settings, "backfill", str(tmp_path / "absent.csv"), "--quiet")
    assert (missing.returncode, missing.stderr.strip().splitlines()[-1]) == (
        1,
        f"perf-engine backfill: error: {tmp_path / 'absent.csv'}: no such file; "
        "give the path of a CSV, JSONL or Parquet file",
    )
    rows = generate_attempts(20, users=3, seed=1)
    rows[6]["difficulty"] = "impossible"
    path = tmp_path / "bad.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    bad = run_cli(settings, "backfill", str(path), "--quiet")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"perf-engine backfill: error: {path}: row 7: difficulty 'impossible' is not one of "
        "easy, medium, hard; fix it or pass --skip-invalid"
    ]
    skipped = run_cli(settings, "backfill", str(path), "--quiet", "--skip-invalid")
    assert skipped.returncode == 0, skipped.stderr
    assert "1 invalid rows skipped" in skipped.stdout
    assert "skipped row 7: difficulty 'impossible'" in skipped.stderr
    down = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", key_prefix="x")
    unreachable = run_cli(down, "backfill", str(path), "--quiet")
    assert unreachable.returncode == 1
    assert "Connection refused" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1


def test_a_backfill_with_custom_metrics_says_once_which_path_they_turn_off(
    store: StatsStore, history: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from performance_engine.tools import backfill as backfill_module
    from tests.example_metrics import TimeSpent

    backfill_module._WARNED.clear()
    calculator = MetricsCalculator()
    calculator.register_metrics([TimeSpent()])
    with caplog.at_level(logging.WARNING, logger="performance_engine.tools.backfill"):
        backfill_file(history, store, calculator)
        backfill_file(history, store, calculator)  # nothing new: no second warning anyway
        keys = type(store.keys)(store.keys.prefix + "-again")
        other = StatsStore(store.client, keys)  # the same client: not closed here
        backfill_file(history, other, calculator)  # new scopes again: warned already
    warnings = [r.getMessage() for r in caplog.records if "custom metrics" in r.getMessage()]
    assert len(warnings) == 1
    assert "time_spent" in warnings[0]
    assert "docs/metrics.md" in warnings[0]
    stats = store.stats(next(iter(oracle(history))))
    assert "time_spent" in stats.custom_metrics
    for key in store.client.scan_iter(match=f"{keys.prefix}:*"):
        store.client.delete(key)
