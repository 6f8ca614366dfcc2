"""The worker end to end: real tansu broker, real Redis, `perf-engine worker` subprocesses.

Every test compares the stats in Redis with the pandas batch oracle over the distinct
valid attempts that reached the topic: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from performance_engine.errors import InvalidAttemptError
from performance_engine.events import DLQ_HEADERS, decode_stats_event, event_id
from performance_engine.metrics.attempt import MAX_VALUE_BYTES, Attempt, decode_attempt
from performance_engine.metrics.batch import compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.loader import attempts_to_frame
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey
from performance_engine.plugins import build_calculator
from performance_engine.settings import Settings
from performance_engine.tools.simulator import generate_attempts
from performance_engine.worker.store import StatsStore
from tests.services import attempt_records, produce, read_topic, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

Records = list[tuple[bytes | None, bytes | None]]


def malformed_records() -> dict[str, tuple[bytes | None, bytes | None]]:
    good = generate_attempts(1, users=1, seed=99)[0]

    def variant(**changes: Any) -> bytes:
        row = {**good, **changes}
        return json.dumps({k: v for k, v in row.items() if v is not ...}).encode()

    return {
        "oversized": (b"1", b'{"pad": "' + b"x" * MAX_VALUE_BYTES + b'"}'),
        "invalid_utf8": (b"1", b'{"attempt_id": "\xff\xfe"}'),
        "invalid_json": (b"1", b'{"attempt_id": '),
        "missing_field": (b"1", variant(question_id=...)),
        "invalid_field": (b"1", variant(is_correct="yes")),
        "unknown_learning_mode": (b"1", variant(learning_mode="cram")),
        "unknown_difficulty": (b"1", variant(difficulty="legendary")),
    }


def dataset(count: int, users: int, seed: int) -> tuple[Records, dict[str, Any]]:
    """Valid attempts, redelivered duplicates and one malformed record of each class."""
    rng = random.Random(seed)
    records: Records = list(attempt_records(generate_attempts(count, users=users, seed=seed)))
    records += rng.sample(records, count // 20)  # the same attempt again, at a later offset
    for key, value in rng.sample(records, 10):  # same attempt_id, other content: first wins
        assert value is not None
        changed = {**json.loads(value), "is_correct": True, "question_id": 1}
        records.append((key, json.dumps(changed).encode()))
    rng.shuffle(records)
    malformed = malformed_records()
    for item in malformed.values():
        records.insert(rng.randrange(len(records)), item)
    return records, malformed


def oracle(
    records: Records, calculator: MetricsCalculator | None = None
) -> dict[ScopeKey, PerformanceStatsData]:
    calculator = calculator or MetricsCalculator()
    attempts: list[Attempt] = []
    for _key, value in records:
        try:
            attempts.append(decode_attempt(value, calculator.learning_modes))
        except InvalidAttemptError:
            continue
    return compute_stats(attempts_to_frame(attempts), calculator)


def stored(settings: Settings, scopes: list[ScopeKey]) -> dict[ScopeKey, Any]:
    """The stats recomputed from each scope's stored state (and history, for frame-based
    metrics), or None where there is none."""
    with StatsStore.from_settings(settings) as store:
        found = store.read(scopes)
        calculator = build_calculator(settings)
        histories: list[Any] = [None] * len(scopes)  # None: kept in the state
        if calculator.frame_metrics:
            spilled = [i for i, item in enumerate(found) if item is not None and item.state.spilled]
            wanted = [(scopes[i], found[i].state.history) for i in spilled]  # type: ignore[union-attr]
            for i, history in zip(spilled, store.read_histories(wanted), strict=True):
                histories[i] = history
        return {
            scope: None if item is None else calculator.stats(scope, item.state, history)
            for scope, item, history in zip(scopes, found, histories, strict=True)
        }


def wait_for_oracle(
    settings: Settings, expected: dict[ScopeKey, PerformanceStatsData], timeout: float = 120
) -> None:
    scopes = sorted(expected)
    last: dict[ScopeKey, Any] = {}

    def done() -> bool:
        nonlocal last
        last = stored(settings, scopes)
        return all(last[s] is not None and last[s].version >= expected[s].version for s in scopes)

    try:
        wait_until(done, timeout, "the worker to apply every attempt", every=0.5)
    finally:
        behind = [s for s in scopes if last.get(s) is None or last[s].version < expected[s].version]
        print(f"{len(behind)} of {len(scopes)} scopes behind")
    time.sleep(1.0)  # nothing more may arrive: versions must not overshoot
    assert stored(settings, scopes) == expected
    with StatsStore.from_settings(settings) as store:
        assert {s: store.stats(s) for s in scopes} == expected  # the stored stats JSON too


def assert_last_events_carry_final_versions(
    settings: Settings, expected: dict[ScopeKey, PerformanceStatsData]
) -> None:
    def last_versions() -> dict[str, int]:
        last: dict[str, int] = {}
        for message in read_topic(settings.kafka_bootstrap, settings.stats_topic):
            event = decode_stats_event(message.value)
            assert event.event_id == event_id(event.stats.scope, event.stats.version)
            assert message.key.decode() == str(event.stats.scope)
            last[message.key.decode()] = event.stats.version
        return last

    want = {str(scope): stats.version for scope, stats in expected.items()}
    wait_until(lambda: last_versions() == want, 60, "the final stats events", every=1.0)


def assert_dead_letters(settings: Settings, malformed: dict[str, Any]) -> None:
    letters = read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    by_class = {}
    for message in letters:
        headers = dict(message.headers)
        assert [name for name, _ in message.headers] == list(DLQ_HEADERS)
        assert headers["pe-source-topic"].decode() == settings.attempts_topic
        assert int(headers["pe-source-offset"]) >= 0
        assert headers["pe-error-reason"]
        by_class[headers["pe-error-class"].decode()] = (message.key, message.value)
    assert len(letters) == len(malformed)
    assert by_class == malformed


def test_end_to_end_exact_with_duplicates_and_dead_letters(
    stream_settings: Settings, workers: Callable[..., Any]
) -> None:
    records, malformed = dataset(3000, users=60, seed=11)
    expected = oracle(records)
    workers(stream_settings)
    produce(stream_settings.kafka_bootstrap, stream_settings.attempts_topic, records)
    wait_for_oracle(stream_settings, expected)
    assert_dead_letters(stream_settings, malformed)
    assert_last_events_carry_final_versions(stream_settings, expected)


def produce_slowly(
    settings: Settings, records: Records, chunks: int, pause: float = 0.5
) -> threading.Thread:
    def run() -> None:
        size = len(records) // chunks + 1
        for start in range(0, len(records), size):
            produce(
                settings.kafka_bootstrap, settings.attempts_topic, records[start : start + size]
            )
            time.sleep(pause)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def applied(settings: Settings, scopes: list[ScopeKey]) -> int:
    return sum(s.version for s in stored(settings, scopes).values() if s is not None)


def test_two_workers_in_one_group(stream_settings: Settings, workers: Callable[..., Any]) -> None:
    records, malformed = dataset(6000, users=150, seed=14)
    expected = oracle(records)
    first = workers(stream_settings)
    second = workers(stream_settings)
    produce(stream_settings.kafka_bootstrap, stream_settings.attempts_topic, records)
    wait_for_oracle(stream_settings, expected)
    assert_dead_letters(stream_settings, malformed)
    for worker in (first, second):  # both took a share of the partitions
        assert re.search(rf"\| {stream_settings.attempts_topic} +\| {{\d", worker.log.read_text())


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in Settings.__dataclass_fields__}


def test_runs_under_faust_own_cli(stream_settings: Settings, tmp_path: Path) -> None:
    """`faust -A performance_engine.worker.main worker` runs the same engine."""
    import os
    import signal
    import subprocess
    import sys

    from tests.services import worker_env

    rows = generate_attempts(300, users=5, seed=15)
    expected = oracle(attempt_records(rows))
    env = worker_env(stream_settings, tmp_path / "data")
    faust = Path(sys.executable).parent / "faust"
    with (tmp_path / "faust.log").open("ab") as log:
        process = subprocess.Popen(
            [str(faust), "-A", "performance_engine.worker.main", "worker", "-l", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        produce(
            stream_settings.kafka_bootstrap, stream_settings.attempts_topic, attempt_records(rows)
        )
        wait_for_oracle(stream_settings, expected)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_custom_metrics_in_the_stream(
    stream_settings: Settings, workers: Callable[..., Any]
) -> None:
    metrics = ("tests.example_metrics:TimeSpent", "tests.example_metrics:MostTriedQuestion")
    settings = Settings(**{**_fields(stream_settings), "metrics": metrics})
    records = attempt_records(generate_attempts(1500, users=20, seed=16))
    expected = oracle(records, build_calculator(settings))
    assert all(s.custom_metrics["time_spent"]["reported"] for s in expected.values())
    workers(settings, PERF_ENGINE_METRICS=",".join(metrics))
    produce(settings.kafka_bootstrap, settings.attempts_topic, records)
    wait_for_oracle(settings, expected)


def test_a_sequential_metric_in_the_stream_then_older_history_by_backfill(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    """A custom SequentialMetric from PERF_ENGINE_METRICS in a real worker (attempts
    arriving shuffled) and in a backfill of the older history afterwards: the learning
    block and the metric equal the in-order fold over everything."""
    import os
    import subprocess
    import sys

    from performance_engine.settings import settings_env

    metrics = ("tests.example_metrics:WrongInARow",)
    settings = Settings(**{**_fields(stream_settings), "metrics": metrics})
    calculator = build_calculator(settings)
    rows = generate_attempts(3000, users=25, seed=23)  # occurred_at ascends with the row
    older, newer = rows[:1200], rows[1200:]
    live = attempt_records(newer)
    random.Random(23).shuffle(live)
    expected = oracle(attempt_records(rows), calculator)
    assert sum(s.custom_metrics["wrong_in_a_row"] > 1 for s in expected.values()) > 20
    workers(settings)
    produce(settings.kafka_bootstrap, settings.attempts_topic, live)
    wait_for_oracle(settings, oracle(live, calculator))
    history = tmp_path / "older.jsonl"
    history.write_text("".join(json.dumps(row) + "\n" for row in reversed(older)))
    done = subprocess.run(
        [sys.executable, "-m", "performance_engine.tools.cli", "backfill", str(history), "--quiet"],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    scopes = sorted(expected)
    assert stored(settings, scopes) == expected
    with StatsStore.from_settings(settings) as store:
        assert {s: store.stats(s) for s in scopes} == expected
