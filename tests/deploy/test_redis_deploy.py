"""Redis as deployments run it: a three-master cluster, an ACL user, TLS.

Each Redis here is a server of the test's own (cluster nodes, an ACL-restricted server, a
TLS server with certificates the test makes with openssl), driven through the real CLI
and the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest
import redis

from performance_engine import PerformanceStats
from performance_engine.erasure import decode_erasure, started
from performance_engine.errors import ConfigurationError
from performance_engine.metrics.batch import compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey
from performance_engine.settings import Settings, load_settings, settings_env
from performance_engine.store.dashboard_index import DashboardIndex
from performance_engine.store.erasure import erase_call, finish_call
from performance_engine.store.ledger import Ledger
from performance_engine.store.stats_store import AsyncStatsStore, StatsStore
from performance_engine.tools.demo import free_port, redis_server_command
from performance_engine.tools.history_files import load_attempts
from performance_engine.tools.simulator import generate_attempts
from performance_engine.worker.erasures import ErasureLog
from performance_engine.worker.xapi_ingest import StatementsRefused, ingest
from performance_engine.xapi import XapiMapping
from tests.helpers import ROOT, dataset, oracle, plain_stats, results, wait_for_oracle
from tests.services import RedisClusterNodes, RedisServer, produce, wait_until
from tests.xapi_statements import as_statement, voiding

pytestmark = [pytest.mark.redis, pytest.mark.slow]  # servers of its own, per test


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "performance_engine.tools.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **settings_env(settings)},
        timeout=120,
        check=False,
    )


@pytest.fixture
def history(tmp_path: Path) -> Path:
    path = tmp_path / "history.csv"
    pd.DataFrame(generate_attempts(2000, users=60, sub_topics=3, seed=21)).to_csv(path, index=False)
    return path


def assert_backfill_and_reads_match_the_oracle(settings: Settings, history: Path) -> None:
    done = cli(settings, "backfill", str(history), "--quiet")
    assert done.returncode == 0, done.stderr
    calculator = MetricsCalculator()
    expected = compute_stats(load_attempts(history, calculator.learning_modes).frame, calculator)
    with StatsStore.from_settings(settings) as store:
        assert results({scope: store.stats(scope) for scope in expected}) == expected
    assert results(plain_stats(settings, sorted(expected))) == expected  # HGETALL, plain JSON
    scope = min(expected)
    reader = PerformanceStats.create_performance_stats(
        user_id=scope.user_id,
        sub_topic_id=scope.sub_topic_id,
        learning_mode=scope.learning_mode,
        settings=settings,
    )
    assert results(reader()) == expected[scope]
    shown = cli(settings, "stats", str(scope.user_id), str(scope.sub_topic_id), "--json")
    assert shown.returncode == 0, shown.stderr


# --- Redis Cluster --------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path / "cluster")
    nodes.start()
    yield nodes
    nodes.stop()


def test_cluster_backfill_and_reads(cluster: RedisClusterNodes, history: Path) -> None:
    settings = Settings(redis_url=cluster.url, redis_cluster=True, key_prefix="pe-cluster")
    assert_backfill_and_reads_match_the_oracle(settings, history)
    again = cli(settings, "backfill", str(history), "--quiet")  # idempotent on a cluster too
    assert "0 newly applied" in again.stdout
    assert_the_xapi_ingest_runs(settings)  # a key per statement, each in its own slot
    keys_per_node = [
        redis.Redis(port=port).dbsize() for port in cluster.ports
    ]  # the scopes really are spread over the three masters
    assert all(count > 0 for count in keys_per_node), keys_per_node


def test_cluster_without_the_cluster_setting_says_so(
    cluster: RedisClusterNodes, history: Path
) -> None:
    done = cli(Settings(redis_url=cluster.url), "backfill", str(history), "--quiet")
    assert done.returncode != 0
    assert "set PERF_ENGINE_REDIS_CLUSTER=true" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_on_a_cluster_is_exact(
    cluster: RedisClusterNodes, stream_settings: Settings, workers: Callable[..., Any]
) -> None:
    settings = replace(stream_settings, redis_url=cluster.url, redis_cluster=True)
    records, _malformed = dataset(5000, users=120, seed=22)
    expected = oracle(records)
    worker = workers(settings)
    produce(settings.kafka_bootstrap, settings.attempts_topic, records)
    wait_for_oracle(settings, expected)
    log = worker.log.read_text()
    assert "CROSSSLOT" not in log
    assert "retrying" not in log


# --- an ACL user restricted to the key prefix ------------------------------------------

#: The ACL line of docs/operations.md, with the test's password and prefix.
ACL_RULES = "on >{password} resetkeys ~{prefix}:* resetchannels -@all " + (
    "+get +mget +eval +getrange +set +append +ping +info "
    "+hgetall +hget +hmget +hset +hsetnx +scan +wait "
    "+sadd +smembers +zadd +zcard +zrange +zrevrange +exists "
    "+hkeys +hdel +del +scard +zrem +hexists +expire"
)


def test_the_documented_acl_line_is_the_one_tested() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    documented = ACL_RULES.format(password="CHANGE-ME", prefix="pe")
    assert f"ACL SETUSER perf-engine {documented}\n" in docs


def assert_the_worker_keeps_its_ledger(settings: Settings, scope: Any) -> None:
    """The commands of the positions ledger (a hash, SCAN, WAIT) and of the dashboard's
    index (sets and sorted sets) are within the ACL line."""

    async def keep() -> None:
        async with AsyncStatsStore.from_settings(settings) as store:
            ledger = Ledger(store, "attempts", wait_replicas=0)
            assert await ledger.has_state() is True  # the backfill's scopes
            await ledger.record({0: 5})
            assert await ledger.read() == {0: 5}
            assert await store.client.execute_command("WAIT", 0, 10) == 0
            index = DashboardIndex(store.client, store.keys)  # the dashboard's commands
            stats = await store.stats(scope)
            await index.add([stats])
            assert await index.cohorts()
            assert await index.page(
                stats.sub_topic_id, stats.learning_mode, "stuck", descending=True, offset=0, limit=5
            ) == (1, [stats.user_id])
            assert not await index.followed()
            await index.mark_followed()
            # an erasure's Redis side: its scripts, the dashboard, the list of erasures
            user = stats.user_id
            under_way = started(user, "", "test")
            fields = [f"{sub}:{mode}" for sub, mode in await store.learner_stats(user)]
            call = erase_call(store.keys, under_way, fields)
            reply = await store.client.eval(call.script, *call.eval_args())
            record = msgspec.structs.replace(decode_erasure(reply[1]), offsets={"0": 1})
            call = finish_call(store.keys, record)
            assert await store.client.eval(call.script, *call.eval_args()) == 1
            await index.forget(user)
            log = ErasureLog(settings)
            log.learn(record)
            assert await log.lost_some(store)  # not listed yet: the erase command lists it
            assert await log.reconcile(store) == 0  # the marker is there: only listed
            assert not await log.lost_some(store)
            await store.client.delete(store.keys.erased(user))
            assert await log.reconcile(store) == 1  # put back
            assert await store.read_stats([scope]) == [None]

    asyncio.run(keep())


def assert_the_xapi_ingest_runs(settings: Settings) -> None:
    """The xAPI ingest's commands and scripts (the ids checked and taken, remembered for
    some days; a void held, then one of a statement taken; the learners' identifiers) are
    within the ACL line."""
    statements = [as_statement(row) for row in generate_attempts(20, users=3, seed=5)]
    unsent = as_statement(generate_attempts(21, users=3, seed=5)[20])
    first = [*statements, voiding(statements[0]), voiding(unsent)]
    values = [json.dumps(item).encode() for item in first]

    changed = {**statements[3], "result": {"success": not statements[3]["result"]["success"]}}

    async def take() -> tuple[list[str], list[str], int]:
        async with AsyncStatsStore.from_settings(settings) as store:
            taken = await ingest(
                store, XapiMapping(), values, [0] * len(values), strict=True, keep_seconds=86_400
            )
            again = await ingest(
                store, XapiMapping(), values[:5], [0] * 5, strict=True, keep_seconds=86_400
            )
            with pytest.raises(StatementsRefused) as refused:
                await ingest(store, XapiMapping(), [json.dumps(changed).encode()], [0], strict=True)
            return taken.results, again.results, refused.value.status

    taken, again, status = asyncio.run(take())
    assert taken == ["counted"] * 20 + ["void", "void_held"]
    assert again == ["counted"] * 5  # resends: taken again, counted once by the engine
    assert status == 409  # a reused id with another body


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "acl")
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


def test_acl_user_limited_to_the_prefix_runs_the_engine(
    acl_server: RedisServer, history: Path
) -> None:
    admin: Any = redis.Redis(port=acl_server.port)
    admin.set("someone-else:key", b"theirs")
    rules = ACL_RULES.format(password="s3cret", prefix="pe-acl").split()
    admin.execute_command("ACL", "SETUSER", "perf-engine", *rules)
    url = f"redis://perf-engine:s3cret@127.0.0.1:{acl_server.port}/0"
    settings = Settings(redis_url=url, key_prefix="pe-acl")

    assert_backfill_and_reads_match_the_oracle(settings, history)
    assert_the_worker_keeps_its_ledger(settings, next(iter(oracle(history))))
    assert_the_xapi_ingest_runs(settings)
    checked = cli(settings, "check")
    # read through INFO, no CONFIG needed
    assert "maxmemory-policy is noeviction" in checked.stdout, checked.stdout

    engine = redis.Redis.from_url(url)
    for attempt in (
        lambda: engine.get("someone-else:key"),
        lambda: engine.set("someone-else:key", b"mine"),
        lambda: engine.delete("someone-else:key"),
        lambda: engine.eval("return redis.call('SET', KEYS[1], 'x')", 1, "someone-else:key"),
        engine.flushall,
        lambda: engine.config_get("*"),
        lambda: engine.keys("*"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert admin.get("someone-else:key") == b"theirs"
    assert all(key.startswith(b"pe-acl:") for key in admin.keys("*") if key != b"someone-else:key")


def test_a_read_only_user_reads_the_stats_and_nothing_else(
    acl_server: RedisServer, history: Path
) -> None:
    """The read-only user of docs/redis-layout.md: every learner's stats with the
    documented commands; no write, no state, no other key."""
    docs = (ROOT / "docs" / "redis-layout.md").read_text()
    line = next(x for x in docs.splitlines() if x.startswith("ACL SETUSER stats-reader"))
    rules = line.replace("CHANGE-ME", "r3ader").replace("~pe:", "~pe-ro:").split()[3:]
    admin: Any = redis.Redis(port=acl_server.port)
    admin.execute_command("ACL", "SETUSER", "stats-reader", *rules)
    settings = Settings(redis_url=f"redis://127.0.0.1:{acl_server.port}/0", key_prefix="pe-ro")
    done = cli(settings, "backfill", str(history), "--quiet")
    assert done.returncode == 0, done.stderr
    expected = compute_stats(
        load_attempts(history, MetricsCalculator().learning_modes).frame, MetricsCalculator()
    )
    reader: Any = redis.Redis(port=acl_server.port, username="stats-reader", password="r3ader")
    scope = min(expected)
    key, field = f"pe-ro:stats:{{u{scope.user_id}}}", f"{scope.sub_topic_id}:{scope.learning_mode}"
    one = reader.hget(key, field)
    assert results(PerformanceStatsData.from_json(one)) == expected[scope]
    assert reader.hmget(key, [field]) == [one]
    found = {
        ScopeKey(user, *map_field(f)): PerformanceStatsData.from_json(v)
        for user in {s.user_id for s in expected}
        for f, v in reader.hgetall(f"pe-ro:stats:{{u{user}}}").items()
    }
    assert results(found) == expected
    denied: tuple[Callable[[], object], ...] = (
        lambda: reader.hset(key, field, b"{}"),
        lambda: reader.get(f"pe-ro:{{u{scope.user_id}}}:{field}"),  # the state: not public
        lambda: reader.delete(key),
        lambda: reader.eval("return redis.call('HGET', KEYS[1], 'x')", 1, key),
        lambda: reader.keys("*"),
    )
    for attempt in denied:
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert admin.hget(key, field) == one


def map_field(field: bytes) -> tuple[int, str]:
    sub, mode = field.decode().split(":")
    return int(sub), mode


def test_a_missing_permission_is_named_in_one_line(acl_server: RedisServer, history: Path) -> None:
    admin: Any = redis.Redis(port=acl_server.port)
    rules = ["on", ">pw", "resetkeys", "~pe-ro:*", "-@all", "+get", "+mget", "+ping"]
    admin.execute_command("ACL", "SETUSER", "reader", *rules)
    settings = Settings(
        redis_url=f"redis://reader:pw@127.0.0.1:{acl_server.port}/0", key_prefix="pe-ro"
    )
    done = cli(settings, "backfill", str(history), "--quiet")
    assert done.returncode != 0
    assert "lacks a permission: see the ACL line in docs/operations.md" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# --- TLS to Redis ------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path, certificates: dict[str, Path]) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        redis_server_command(
            0,
            *("--tls-port", str(port), "--tls-auth-clients", "yes"),
            *("--tls-cert-file", str(certificates["server.crt"])),
            *("--tls-key-file", str(certificates["server.key"])),
            *("--tls-ca-cert-file", str(certificates["ca.crt"])),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        ssl=True,
        ssl_ca_certs=str(certificates["ca.crt"]),
        ssl_certfile=str(certificates["client.crt"]),
        ssl_keyfile=str(certificates["client.key"]),
        socket_timeout=2,
    )

    def up() -> bool:
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError, ssl.SSLError):
            return False

    try:
        wait_until(up, 20, "the TLS redis-server")
        yield port
    finally:  # also when it never came up: no server left behind
        client.close()
        process.terminate()
        process.wait(timeout=20)


def test_tls_with_a_client_certificate(
    tls_server: int, certificates: dict[str, Path], history: Path
) -> None:
    settings = load_settings(
        {
            "PERF_ENGINE_REDIS_URL": f"rediss://127.0.0.1:{tls_server}/0",
            "PERF_ENGINE_REDIS_TLS_CA_FILE": str(certificates["ca.crt"]),
            "PERF_ENGINE_REDIS_TLS_CERT_FILE": str(certificates["client.crt"]),
            "PERF_ENGINE_REDIS_TLS_KEY_FILE": str(certificates["client.key"]),
            "PERF_ENGINE_KEY_PREFIX": "pe-tls",
        }
    )
    assert_backfill_and_reads_match_the_oracle(settings, history)
    assert "maxmemory-policy is noeviction" in cli(settings, "check").stdout

    no_client_cert = replace(settings, redis_tls_cert_file=None, redis_tls_key_file=None)
    done = cli(no_client_cert, "stats", "1", "1")
    assert done.returncode != 0
    assert "Redis at rediss://" in done.stderr
    assert "Traceback" not in done.stderr


def test_tls_files_need_a_rediss_url() -> None:
    with pytest.raises(ConfigurationError, match="rediss://"):
        Settings(redis_url="redis://h:1/0", redis_tls_ca_file=Path("ca.crt"))
    with pytest.raises(ConfigurationError, match="go together"):
        Settings(redis_url="rediss://h:1/0", redis_tls_cert_file=Path("c.crt"))
