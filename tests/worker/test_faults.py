"""Faults real deployments meet, against real processes; every test ends exact.

Each test streams attempts (with redelivered duplicates and malformed records) through
`perf-engine worker` subprocesses while something goes wrong, then compares every scope
in Redis with the pandas oracle over the distinct valid attempts: nothing lost, nothing
counted twice. See docs/operations.md, Reliability, for what each one guarantees.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

from performance_engine.settings import Settings, settings_env
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import (
    Records,
    applied,
    assert_last_events_carry_final_versions,
    malformed_records,
    oracle,
    plain_stats,
    produce_slowly,
    wait_for_oracle,
)
from tests.services import (
    DelayProxy,
    RedisServer,
    attempt_records,
    committed,
    create_topics,
    late_arrivals,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(600)]


def storm_dataset(count: int, seed: int) -> Records:
    """``count`` attempts, 5% redelivered duplicates, 1% malformed records of every class."""
    rng = random.Random(seed)
    records: Records = attempt_records(generate_attempts(count, users=count // 50, seed=seed))
    records += rng.sample(records, count // 20)
    kinds = list(malformed_records().values())
    for i in range(count // 100):
        key, value = kinds[i % len(kinds)]
        assert value is not None
        records.append((key, value + b" " * (i // len(kinds))))  # each one distinct
    rng.shuffle(records)
    return records


def retries(log: Path) -> int:
    """The worker's "... failed (...); retrying in ..." lines so far."""
    return log.read_text().count("; retrying in ")


def wait_for_progress(settings: Settings, scopes: list[Any], more_than: int, what: str) -> int:
    wait_until(lambda: applied(settings, scopes) > more_than, 120, what)
    return applied(settings, scopes)


# 1. kill storm ------------------------------------------------------------------------------


def test_kill_storm(stream_settings: Settings, workers: Callable[..., Any]) -> None:
    """kill -9 at random moments, six times, while 100,000 attempts stream in, most of
    them out of learning order (the learning block is in the oracle's stats too).

    The attempts go in seven parts; each of the first six is killed into once the worker
    has applied some of it, and what Redis holds after each kill shows that the kill came
    before the part was all applied."""
    records = storm_dataset(100_000, seed=31)
    assert late_arrivals(records) > 50_000
    expected = oracle(records)
    scopes = sorted(expected)
    rng = random.Random(31)
    size = len(records) // 7 + 1
    parts = [records[start : start + size] for start in range(0, len(records), size)]
    worker = workers(stream_settings)
    for k, part in enumerate(parts[:6]):
        through_part = sum(s.version for s in oracle(records[: (k + 1) * size]).values())
        before = applied(stream_settings, scopes)
        # sent over 8 s: longer than a new worker takes to start (group join, the erasures
        # read), so that the part is still arriving when the kill comes
        producer = produce_slowly(stream_settings, part, chunks=20, pause=0.4)
        wait_for_progress(stream_settings, scopes, before + rng.randrange(200, 2000), "progress")
        time.sleep(rng.uniform(0, 0.5))  # somewhere in a batch: fetch, write, publish, commit
        worker.kill()
        at_kill = applied(stream_settings, scopes)  # a killed worker writes nothing more
        assert before < at_kill < through_part, "each kill must land inside its part"
        producer.join(timeout=120)
        worker = workers(stream_settings)
    producer = produce_slowly(stream_settings, parts[6], chunks=10, pause=0.2)
    producer.join(timeout=300)
    wait_for_oracle(stream_settings, expected, timeout=300)
    assert_last_events_carry_final_versions(stream_settings, expected)


def test_plain_reads_stay_whole_through_a_kill_and_a_racing_backfill(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    """A reader in another thread reads every learner's stats hash as a platform in
    another language would (``HGETALL``, plain JSON; ``plain_stats``), over and over, while
    the worker is killed with -9 mid-stream and a backfill of the same history races the
    stream (their compare-and-sets refuse each other's stale writes): every read parses,
    names its scope and is never ahead of the state beside it; the last ones are exact."""
    rows = generate_attempts(12_000, users=120, seed=43)
    records = attempt_records(rows)
    expected = oracle(records)
    scopes = sorted(expected)
    history = tmp_path / "history.csv"
    pd.DataFrame(rows[::2]).to_csv(history, index=False)  # half of it, interleaved
    reads, failures = [0], []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                plain_stats(stream_settings, scopes)
                reads[0] += 1
            except Exception as exc:
                failures.append(exc)
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        worker = workers(stream_settings)
        producer = produce_slowly(stream_settings, records, chunks=12, pause=0.4)
        wait_for_progress(stream_settings, scopes, 2000, "the worker to apply some attempts")
        worker.kill()
        backfill = subprocess.Popen(
            [sys.executable, "-m", "performance_engine.tools.cli", "backfill", str(history)],
            env={**os.environ, **settings_env(stream_settings)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        workers(stream_settings)
        _, err = backfill.communicate(timeout=300)
        assert backfill.returncode == 0, err
        producer.join(timeout=300)
        wait_for_oracle(stream_settings, expected, timeout=300)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not failures, failures[0]
    assert reads[0] >= 5, "the reader must have read while the stream ran"


# 2. Redis restart ---------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop, restart or starve."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_restart_acks_nothing_while_down(
    stream_settings: Settings, workers: Callable[..., Any], own_redis: RedisServer
) -> None:
    settings = replace(stream_settings, redis_url=own_redis.url)
    records = storm_dataset(20_000, seed=32)
    expected = oracle(records)
    scopes = sorted(expected)
    worker = workers(settings)
    producer = produce_slowly(settings, records, chunks=40, pause=0.5)
    wait_for_progress(settings, scopes, 2000, "the worker to start applying")
    own_redis.stop()
    # The batch being written fails now: wait until the worker says so, then until it has
    # retried a few more times, and nothing may have been committed meanwhile.
    wait_until(lambda: retries(worker.log) >= 1, 60, "the worker to find Redis gone")
    offsets, seen = committed(settings), retries(worker.log)
    wait_until(lambda: retries(worker.log) >= seen + 3, 60, "the worker to retry")
    assert committed(settings) == offsets  # no record acked while Redis was down
    assert worker.alive()
    own_redis.start()
    producer.join(timeout=120)
    wait_for_oracle(settings, expected)
    assert worker.alive()
    assert "retrying" in worker.log.read_text()


# 3. broker pause ----------------------------------------------------------------------------


def test_broker_paused_for_20_seconds(
    own_broker: tuple[subprocess.Popen[bytes], str],  # first: stopped after the workers
    stream_settings: Settings,
    workers: Callable[..., Any],
) -> None:
    broker, bootstrap = own_broker
    settings = replace(stream_settings, kafka_bootstrap=bootstrap)
    create_topics(
        settings.kafka_bootstrap,
        [settings.attempts_topic, settings.stats_topic, settings.dlq_topic],
        settings.partitions,
    )
    records = storm_dataset(20_000, seed=33)
    expected = oracle(records)
    scopes = sorted(expected)
    head, tail = records[: len(records) // 2], records[len(records) // 2 :]
    worker = workers(settings)
    produce_slowly(settings, head, chunks=5, pause=0.2).join(timeout=120)
    wait_for_progress(settings, scopes, 1000, "the worker to start applying")
    os.kill(broker.pid, signal.SIGSTOP)
    time.sleep(20)
    os.kill(broker.pid, signal.SIGCONT)
    assert worker.alive()
    produce_slowly(settings, tail, chunks=5, pause=0.2).join(timeout=180)
    wait_for_oracle(settings, expected, timeout=240)
    assert worker.alive()  # recovered by itself: the same process, never restarted
    assert_last_events_carry_final_versions(settings, expected)


# 4. rebalance during load -------------------------------------------------------------------


def test_a_second_worker_joins_then_leaves_mid_stream(
    stream_settings: Settings, workers: Callable[..., Any]
) -> None:
    records = storm_dataset(40_000, seed=34)
    expected = oracle(records)
    scopes = sorted(expected)
    total = sum(s.version for s in expected.values())
    producer = produce_slowly(stream_settings, records, chunks=60, pause=0.5)
    first = workers(stream_settings)
    wait_for_progress(stream_settings, scopes, total // 10, "the first worker to apply")
    second = workers(stream_settings)
    wait_for_progress(stream_settings, scopes, total // 2, "both workers to apply")
    assert second.stop() == 0  # leaves the group cleanly, mid-stream
    producer.join(timeout=180)
    wait_for_oracle(stream_settings, expected, timeout=240)
    assert first.alive()
    for worker in (first, second):  # both held partitions of the attempts topic
        log = worker.log.read_text()
        assert re.search(rf"assigned partitions of {stream_settings.attempts_topic}: \d", log)


# 5. slow Redis ------------------------------------------------------------------------------


def test_every_redis_call_slow(
    stream_settings: Settings, workers: Callable[..., Any], redis_url: str
) -> None:
    """40 ms or more per Redis call (a proxy holds each chunk 20 ms each way)."""
    target = int(redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    with DelayProxy(target, 0.02) as proxy:
        settings = replace(stream_settings, redis_url=f"redis://127.0.0.1:{proxy.port}/0")
        records = storm_dataset(10_000, seed=35)
        expected = oracle(records)
        worker = workers(settings)
        produce_slowly(settings, records, chunks=10, pause=0.2).join(timeout=120)
        wait_for_oracle(settings, expected, timeout=240)
        assert worker.alive()
        log = worker.log.read_text()
        assert "Traceback" not in log
        assert "retrying" not in log  # slow is not failing: no timeouts, no retries


# 6. Redis out of memory ---------------------------------------------------------------------


def test_redis_out_of_memory_pauses_then_resumes(
    stream_settings: Settings, workers: Callable[..., Any], own_redis: RedisServer
) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    settings = replace(stream_settings, redis_url=own_redis.url)
    records = storm_dataset(20_000, seed=36)
    expected = oracle(records)
    scopes = sorted(expected)
    worker = workers(settings)
    log = worker.log
    # Half the attempts before the limit, half after: a worker that has caught up with the
    # first half still has writes to make once Redis is full.
    half = len(records) // 2
    produce_slowly(settings, records[:half], chunks=5, pause=0.2).join(timeout=120)
    wait_for_progress(settings, scopes, 500, "the worker to apply some attempts")
    # Below what Redis uses already: every write is refused (a limit just above it would
    # let writes through whenever freed client buffers dip the usage under it).
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) // 2)
    producer = produce_slowly(settings, records[half:], chunks=5, pause=0.2)

    def out_of_memory() -> bool:
        text = log.read_text()
        return "out of memory (maxmemory with noeviction): raise maxmemory" in text

    wait_until(out_of_memory, 120, "the worker to hit maxmemory and retry")
    stuck = applied(settings, scopes)
    offsets, seen = committed(settings), retries(log)
    wait_until(lambda: retries(log) >= seen + 3, 60, "the worker to retry the write")
    assert committed(settings) == offsets  # nothing acked that was not written
    assert applied(settings, scopes) == stuck
    assert worker.alive()
    admin.config_set("maxmemory", 0)
    producer.join(timeout=120)
    wait_for_oracle(settings, expected)
    assert worker.alive()
    admin.close()
