"""When Redis forgets what it acknowledged, against real redis-server processes (a
Sentinel and a replica among them), the real broker and real workers: every scope ends
exact, or the worker refuses with the reason when the topic cannot give the attempts back.

Each test prints how long the engine took from the fault to exact stats (pytest -s).
"""

from __future__ import annotations

import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from performance_engine.settings import Settings
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import Records, applied, oracle, results_json, run_cli, wait_for_oracle
from tests.services import (
    HoldingProxy,
    RedisSentinel,
    RedisServer,
    Worker,
    attempt_records,
    committed,
    produce,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(400)]

#: A Redis that keeps only what is saved on purpose (SAVE): the snapshot test's.
SNAPSHOTS_ONLY = ("--appendonly", "no", "--save", "")


def stream(count: int, seed: int) -> Records:
    """Attempts over a few hundred learners, with every 20th redelivered."""
    records = attempt_records(generate_attempts(count, users=count // 40, seed=seed))
    return records + records[::20]


def send(settings: Settings, records: Records) -> None:
    produce(settings.kafka_bootstrap, settings.attempts_topic, records)


def lost_state_lines(worker: Worker) -> int:
    return worker.log.read_text().count("Redis lost state")


def metric(worker: Worker, name: str) -> float:
    port = worker.env["PERF_ENGINE_WEB_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} is not among the worker's metrics")


def recovered(what: str, since: float) -> None:
    print(f"{what}: exact {time.monotonic() - since:.1f} s after the fault")


def test_flushdb_mid_stream_is_noticed_and_replayed(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis")
    own.start()
    try:
        settings = replace(stream_settings, redis_url=own.url, state_check_seconds=1.0)
        records = stream(8000, seed=41)
        head, tail = records[:5000], records[5000:]
        worker = workers(settings)
        send(settings, head)
        wait_for_oracle(settings, oracle(head))
        own.client().flushdb()  # the wrong database, by hand
        fault = time.monotonic()
        wait_until(lambda: lost_state_lines(worker) >= 1, 30, "the worker to notice")
        send(settings, tail)
        wait_for_oracle(settings, oracle(records))
        recovered("FLUSHDB", fault)
        assert metric(worker, "perf_engine_state_recoveries_total") >= 1
        assert worker.alive()
    finally:
        own.stop()


def test_an_older_snapshot_restored_is_replayed_to_exact(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis", options=SNAPSHOTS_ONLY)
    own.start()
    try:
        settings = replace(stream_settings, redis_url=own.url)
        records = stream(9000, seed=42)
        first, second, third = records[:3000], records[3000:6000], records[6000:]
        worker = workers(settings)
        send(settings, first)
        wait_for_oracle(settings, oracle(first))
        own.client().save()  # last night's snapshot
        snapshot = tmp_path / "snapshot.rdb"
        shutil.copy(own.directory / "dump.rdb", snapshot)
        send(settings, second)
        wait_for_oracle(settings, oracle(first + second))
        own.stop()  # the operator restores the snapshot and restarts Redis
        shutil.copy(snapshot, own.directory / "dump.rdb")
        own.start()
        fault = time.monotonic()
        scopes = sorted(oracle(records))
        assert applied(settings, scopes) == sum(s.version for s in oracle(first).values())
        send(settings, third)
        wait_for_oracle(settings, oracle(records))
        recovered("snapshot restored", fault)
        assert lost_state_lines(worker) >= 1
        assert worker.alive()
    finally:
        own.stop()


def test_a_sentinel_failover_to_a_lagging_replica_is_followed_and_replayed(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    master = RedisServer(tmp_path / "master", options=SNAPSHOTS_ONLY)
    master.start()
    with HoldingProxy(master.port) as link:
        replica = RedisServer(
            tmp_path / "replica",
            options=(*SNAPSHOTS_ONLY, "--replicaof", "127.0.0.1", str(link.port)),
        )
        replica.start()
        sentinel = RedisSentinel(tmp_path / "sentinel", master.port)
        try:
            wait_until(
                lambda: replica.client().info("replication").get("master_link_status") == "up",
                30,
                "the replica to sync",
            )
            sentinel.start()
            wait_until(lambda: sentinel.replicas() == 1, 30, "the sentinel to see the replica")
            settings = replace(
                stream_settings,
                redis_url="redis://127.0.0.1/0",
                redis_sentinels=(f"127.0.0.1:{sentinel.port}",),
            )
            records = stream(9000, seed=43)
            first, second, third = records[:3000], records[3000:6000], records[6000:]
            worker = workers(settings)
            send(settings, first)
            wait_for_oracle(settings, oracle(first))
            link.hold()  # the replica stops receiving: it lags
            send(settings, second)
            wait_for_oracle(settings, oracle(first + second))  # on the master only
            master.kill()
            link.cut()
            fault = time.monotonic()
            wait_until(
                lambda: sentinel.master() == ("127.0.0.1", replica.port),
                60,
                "the sentinel to promote the replica",
            )
            send(settings, third)
            expected = oracle(records)
            wait_for_oracle(settings, expected, timeout=180)  # read through the Sentinel
            recovered("failover to a lagging replica", fault)
            scope = sorted(expected)[0]
            shown = run_cli(
                settings, "stats", str(scope.user_id), str(scope.sub_topic_id),
                "--mode", scope.learning_mode, "--json",
            )  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            assert results_json(shown.stdout) == results_json(expected[scope].to_json())
            assert lost_state_lines(worker) >= 1
            assert worker.alive()
        finally:
            sentinel.stop()
            replica.stop()
            master.stop()


def test_wait_for_a_replica_holds_the_commits_while_it_is_gone(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    master = RedisServer(tmp_path / "master", options=SNAPSHOTS_ONLY)
    master.start()
    replica = RedisServer(
        tmp_path / "replica",
        options=(*SNAPSHOTS_ONLY, "--replicaof", "127.0.0.1", str(master.port)),
    )
    replica.start()
    try:
        wait_until(
            lambda: master.client().info("replication").get("connected_slaves") == 1,
            30,
            "the replica to connect",
        )
        settings = replace(
            stream_settings, redis_url=master.url, redis_wait_replicas=1, redis_wait_timeout_ms=300
        )
        records = stream(6000, seed=44)
        first, second = records[:3000], records[3000:]
        worker = workers(settings)
        send(settings, first)
        wait_for_oracle(settings, oracle(first))
        assert replica.process is not None
        replica.process.send_signal(signal.SIGSTOP)  # the replica stops answering
        send(settings, second)
        waiting = "0 of 1 Redis replicas acknowledged"
        wait_until(lambda: worker.log.read_text().count(waiting) >= 1, 60, "the WAIT to fail")
        offsets = committed(settings)
        wait_until(lambda: worker.log.read_text().count(waiting) >= 4, 60, "more WAITs")
        assert committed(settings) == offsets  # no offset committed without the replica
        replica.process.send_signal(signal.SIGCONT)
        wait_for_oracle(settings, oracle(records))
        replica_stats = RedisServer(replica.directory, port=replica.port)
        assert applied(
            replace(settings, redis_url=replica_stats.url), sorted(oracle(records))
        ) == sum(s.version for s in oracle(records).values())  # the replica has it all
        assert worker.alive()
    finally:
        replica.stop()
        master.stop()


def test_a_redis_that_restarts_empty_is_refilled_from_the_topic(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    """A Redis without persistence restarts empty while no worker runs: ``check`` says so,
    and the next worker replays every partition from the start of the topic."""
    own = RedisServer(tmp_path / "redis", options=SNAPSHOTS_ONLY)
    own.start()
    try:
        settings = replace(stream_settings, redis_url=own.url)
        records = stream(4000, seed=45)
        first = workers(settings)
        send(settings, records)
        wait_for_oracle(settings, oracle(records))
        assert run_cli(settings, "check").stdout.splitlines()[-1] == (
            "ok    state    Redis's state reaches the committed offsets"
        )
        first.stop()
        own.stop()
        own.start()  # nothing on disk: empty
        fault = time.monotonic()
        checked = run_cli(settings, "check")
        assert checked.returncode == 0, checked.stdout  # a warning: the worker replays it
        assert checked.stdout.splitlines()[-1].startswith(
            "warn  state    Redis lost state; the worker replays it from the topic (partition 0 "
            "from 0, partition 1 from 0"
        )
        second = workers(settings)
        wait_for_oracle(settings, oracle(records))
        recovered("restart without persistence", fault)
        assert lost_state_lines(second) >= 1
    finally:
        own.stop()
