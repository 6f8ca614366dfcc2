"""The worker end to end: real tansu broker, real Redis, `perf-engine worker` subprocesses.

Every test compares the stats in Redis with the pandas batch oracle over the distinct
valid attempts that reached the topic: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from performance_engine.plugins import build_calculator
from performance_engine.settings import Settings
from performance_engine.store.stats_store import StatsStore
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import (
    assert_dead_letters,
    assert_last_events_carry_final_versions,
    dataset,
    oracle,
    results,
    stored,
    wait_for_oracle,
)
from tests.services import (
    attempt_records,
    produce,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


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


def test_two_workers_in_one_group(stream_settings: Settings, workers: Callable[..., Any]) -> None:
    records, malformed = dataset(6000, users=150, seed=14)
    expected = oracle(records)
    first = workers(stream_settings)
    second = workers(stream_settings)
    produce(stream_settings.kafka_bootstrap, stream_settings.attempts_topic, records)
    wait_for_oracle(stream_settings, expected)
    assert_dead_letters(stream_settings, malformed)
    for worker in (first, second):  # both took a share of the partitions
        log = worker.log.read_text()
        assert re.search(rf"assigned partitions of {stream_settings.attempts_topic}: \d", log)


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
        assert results({s: store.stats(s) for s in scopes}) == expected
