"""Erasing a learner, against the real broker, real Redis servers and real workers: while
attempts stream in, after the worker is killed, after Redis loses everything, through a
backfill, and with the erase command itself killed half-way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from performance_engine import StatsSubscriber
from performance_engine.erasure import decode_marker
from performance_engine.metrics.types import ScopeKey
from performance_engine.platform.erase import erase_learner, read_erasures
from performance_engine.platform.outbox import (
    create_outbox,
    outbox_engine,
    outbox_table,
    record_attempts,
)
from performance_engine.settings import Settings, settings_env
from performance_engine.store.dashboard_index import ORDERS
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.stats_store import StatsStore, revision_in
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import (
    Records,
    assert_conforms,
    http_call,
    oracle,
    produce_slowly,
    results,
    run_cli,
    wait_for_oracle,
)
from tests.services import (
    HoldingProxy,
    RedisServer,
    Worker,
    attempt_records,
    produce,
    read_topic,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(400)]


def send(settings: Settings, records: Records) -> None:
    produce(settings.kafka_bootstrap, settings.attempts_topic, records)


def of_user(records: Records, user: int) -> Records:
    return [r for r in records if r[0] == str(user).encode()]


def not_of_user(records: Records, user: int) -> Records:
    return [r for r in records if r[0] != str(user).encode()]


def learner_keys(client: redis.Redis, prefix: str, user: int) -> set[str]:
    """Every key of the prefix that names the learner (SCAN of the whole key space)."""
    found = set()
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        text = key.decode()
        if f"{{u{user}}}" in text or text.endswith(f":learner:{user}"):
            found.add(text)
    return found


def in_dashboard(client: redis.Redis, keys: KeySpace, user: int) -> bool:
    members: Any = client.smembers(keys.dashboard("cohorts"))
    cohorts = [m.decode() for m in members]
    ranked = any(
        client.zscore(keys.dashboard("cohort", *cohort.split(":"), order), str(user)) is not None
        for cohort in cohorts
        for order in ORDERS
    )
    return ranked or bool(client.exists(keys.dashboard("learner", user)))


def assert_erased(settings: Settings, user: int) -> None:
    """Nothing of the learner in Redis but their erasure marker, complete."""
    client = redis.Redis.from_url(settings.redis_url)
    keys = KeySpace(settings.key_prefix)
    try:
        assert learner_keys(client, settings.key_prefix, user) == {keys.erased(user)}
        raw: Any = client.get(keys.erased(user))
        marker = decode_marker(raw)
        assert marker is not None
        assert marker.complete
        assert not in_dashboard(client, keys, user)
    finally:
        client.close()


def held_back(worker: Worker) -> float:
    """The worker's count of erased learners' attempts it held back."""
    port = worker.env["PERF_ENGINE_WEB_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith('perf_engine_attempts_processed_total{result="erased"}'):
                return float(line.split()[1])
    raise AssertionError("no count of erased attempts among the worker's metrics")


def stats_records(settings: Settings) -> dict[bytes, list[bytes | None]]:
    """The stats topic's values per key, in order."""
    found: dict[bytes, list[bytes | None]] = {}
    for record in read_topic(settings.kafka_bootstrap, settings.stats_topic):
        found.setdefault(record.key, []).append(record.value)
    return found


def test_an_erased_learner_stays_erased_while_streaming_after_kill_and_flushdb(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis")
    own.start()
    try:
        outbox = f"sqlite:///{tmp_path / 'outbox.db'}"
        settings = replace(
            stream_settings, redis_url=own.url, state_check_seconds=1.0, outbox_url=outbox
        )
        records = attempt_records(generate_attempts(6000, users=150, seed=61))
        victim = int(Counter(key for key, _ in records).most_common(1)[0][0] or b"0")
        head, tail = records[:3000], records[3000:]
        others_tail = not_of_user(tail, victim)
        engine = outbox_engine(outbox)
        create_outbox(engine)
        with engine.begin() as connection:  # the platform's outbox: sent rows and pending
            record_attempts(connection, [json.loads(v or b"") for _, v in records[:400]])
        engine.dispose()

        worker = workers(settings, PERF_ENGINE_DASHBOARD="true")
        send(settings, head)
        wait_for_oracle(settings, oracle(head))
        KeySpace(settings.key_prefix)
        with StatsStore.from_settings(settings) as store:
            revisions = {
                f"{sub}:{mode}": revision_in(stats)
                for (sub, mode), stats in store.learner_stats(victim).items()
            }
        assert revisions
        base = f"http://127.0.0.1:{worker.env['PERF_ENGINE_WEB_PORT']}"
        wait_until(
            lambda: http_call(f"{base}/dashboard/api/learners/{victim}")[0] == 200,
            30,
            "the dashboard to know the learner",
        )

        # The learner's latest attempts are in the topic, perhaps in a batch in flight,
        # while everyone else's stream in; then they are erased.
        send(settings, of_user(tail, victim))
        streaming = produce_slowly(settings, others_tail, chunks=6, pause=0.3)
        report = erase_learner(victim, "a parent's request", settings=settings)
        streaming.join()
        record = report.record
        assert record.complete
        assert record.reason == "a parent's request"
        assert record.revisions.keys() == revisions.keys()
        assert all(record.revisions[f] >= revisions[f] for f in revisions)
        assert report.outbox_rows == sum(1 for k, _ in records[:400] if k == str(victim).encode())

        expected = oracle(not_of_user(records, victim))
        wait_for_oracle(settings, expected)
        assert_erased(settings, victim)
        engine = outbox_engine(outbox)
        with engine.connect() as connection:
            left = connection.execute(
                select(func.count()).where(outbox_table.c.user_id == victim)
            ).scalar()
            others = connection.execute(select(func.count()).select_from(outbox_table)).scalar()
        engine.dispose()
        assert left == 0
        assert others == 400 - report.outbox_rows
        # The stats topic: each erased scope's last record is a tombstone.
        published = stats_records(settings)
        for field in record.revisions:
            assert published[f"{victim}:{field}".encode()][-1] is None
        assert read_erasures(settings)[victim].epoch == record.epoch
        for message in read_topic(settings.kafka_bootstrap, settings.erasures_topic):
            assert message.key == str(victim).encode()
            assert_conforms("erasure", json.loads(message.value))
        wait_until(lambda: "learnt of 1 erasures" in worker.log.read_text(), 30, "the log")
        # A platform following the stats drops the learner's scopes at their tombstones.
        latest: dict[ScopeKey, Any] = {}
        gone: list[ScopeKey] = []

        def erased(scope: ScopeKey) -> None:
            gone.append(scope)
            latest.pop(scope, None)

        with StatsSubscriber(settings, start="earliest", on_erased=erased) as subscriber:
            for event in subscriber.events(timeout=3):
                latest[event.stats.scope_key] = event.stats
        assert {f"{s.sub_topic_id}:{s.learning_mode}" for s in gone} == set(record.revisions)
        assert all(s.user_id == victim for s in gone)
        assert results(latest) == expected
        # The dashboard's memory too: the learner is unknown, not among the recent updates.
        wait_until(
            lambda: http_call(f"{base}/dashboard/api/learners/{victim}")[0] == 404,
            30,
            "the dashboard to forget the learner",
        )
        overview = json.loads(http_call(f"{base}/dashboard/api/overview")[2])
        assert all(update["user_id"] != victim for update in overview["recent"])

        # kill -9, and a new worker: it reads the erasures at start.
        worker.kill()
        again = attempt_records(generate_attempts(600, users=150, seed=62))
        again = not_of_user(again, victim)
        resent = of_user(records, victim)  # their history sent again: it occurred before
        send(settings, again + resent)
        worker = workers(settings)
        expected = oracle(not_of_user(records, victim) + again)
        wait_for_oracle(settings, expected)
        assert_erased(settings, victim)

        # Redis loses everything: the state recovery replays the whole topic, and the
        # learner's attempts in it stay erased.
        own.client().flushdb()
        wait_until(lambda: "Redis lost state" in worker.log.read_text(), 30, "the worker to notice")
        wait_for_oracle(settings, expected)
        assert_erased(settings, victim)
        # this worker held back the copies sent again, then, replaying the whole topic,
        # the originals and the copies
        assert held_back(worker) == 3 * len(resent)

        # The learner comes back: their new attempts count from zero, above the erased
        # revisions.
        now = int(time.time() * 1000)
        rows = generate_attempts(400, users=150, seed=63, start_ms=now)
        back = of_user(attempt_records(rows), victim)
        assert back
        send(settings, back)
        expected = oracle(not_of_user(records, victim) + again + back)
        wait_for_oracle(settings, expected)
        with StatsStore.from_settings(settings) as store:
            for (sub, mode), stats in store.learner_stats(victim).items():
                assert revision_in(stats) > record.revisions.get(f"{sub}:{mode}", 0)
        assert worker.alive()
    finally:
        own.stop()


def test_a_backfill_skips_an_erased_learners_history(
    stream_settings: Settings, tmp_path: Path
) -> None:
    records = attempt_records(generate_attempts(2000, users=50, seed=64))
    victim = int(records[0][0] or b"0")
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(v or b"" for _, v in records) + b"\n")
    assert run_cli(stream_settings, "backfill", str(history)).returncode == 0
    erase_learner(victim, settings=stream_settings)

    done = run_cli(stream_settings, "backfill", str(history))
    assert done.returncode == 0, done.stderr
    skipped = len(of_user(records, victim))
    assert f"{skipped} attempts of 1 erased learners skipped" in done.stdout
    assert_erased(stream_settings, victim)
    expected = oracle(not_of_user(records, victim))
    with StatsStore.from_settings(stream_settings) as store:
        found = store.read_stats(sorted(expected))
    assert all(found)

    # fit and evaluate skip them too, and say so; --include-erased keeps them
    params = tmp_path / "params.json"
    fitted = run_cli(stream_settings, "fit", str(history), "--out", str(params), "--quiet")
    assert fitted.returncode == 0, fitted.stderr
    assert f"{skipped} attempts of 1 erased learners skipped" in fitted.stderr
    scored = run_cli(stream_settings, "evaluate", str(history), "--json", "--quiet")
    assert scored.returncode == 0, scored.stderr
    assert f"{skipped} attempts of 1 erased learners skipped" in scored.stderr
    everyone = run_cli(stream_settings, "evaluate", str(history), "--json", "--include-erased")
    assert everyone.returncode == 0, everyone.stderr
    assert "erased" not in everyone.stderr
    answers = [json.loads(r.stdout.splitlines()[-1])["count"] for r in (scored, everyone)]
    assert answers == [len(records) - skipped, len(records)]

    told = run_cli(stream_settings, "backfill", str(history), "--include-erased")
    assert told.returncode == 0, told.stderr
    with StatsStore.from_settings(stream_settings) as store:
        assert store.learner_stats(victim)


def test_an_erase_killed_half_way_holds_the_learner_back_and_finishes_when_run_again(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis")
    own.start()
    try:
        settings = replace(stream_settings, redis_url=own.url)
        records = attempt_records(generate_attempts(2000, users=40, seed=65))
        victim = int(records[0][0] or b"0")
        workers(settings)
        send(settings, records)
        wait_for_oracle(settings, oracle(records))
        keys = KeySpace(settings.key_prefix)
        direct = own.client()
        with HoldingProxy(own.port) as link:
            through = replace(settings, redis_url=f"redis://127.0.0.1:{link.port}/0")
            erase = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "performance_engine.tools.cli",
                    "erase",
                    "--user",
                    str(victim),
                ],
                env={**os.environ, **settings_env(through)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while not direct.exists(keys.erased(victim)):  # the keys are gone: hold Redis
                assert time.monotonic() < deadline
                assert erase.poll() is None
            link.hold()
            erase.kill()
            erase.wait(timeout=10)
        raw: Any = direct.get(keys.erased(victim))
        marker = decode_marker(raw)
        assert marker is not None
        assert not marker.complete
        assert_conforms("erasure", json.loads(raw[16:]))  # the marker: epoch, then JSON
        checked = run_cli(settings, "check").stdout
        assert f"warn  erasure  1 erasures left half-way (users {victim})" in checked, checked

        # Meanwhile the worker holds back every attempt of the learner.
        later = [(str(victim).encode(), v) for k, v in records[:50] if k == records[0][0]]
        send(settings, later + not_of_user(records[:200], victim))
        wait_for_oracle(settings, oracle(not_of_user(records, victim)))
        assert not direct.exists(keys.stats(victim))

        done = run_cli(settings, "erase", "--user", str(victim), "--reason", "again")
        assert done.returncode == 0, done.stderr
        assert_erased(settings, victim)
        assert (
            "ok    erasure  1 learners erased, none half-way" in run_cli(settings, "check").stdout
        )
        record = read_erasures(settings)[victim]
        assert record.reason == "again"
        assert record.revisions == marker.revisions  # kept from the run that died
        published = stats_records(settings)
        for field in record.revisions:
            assert published[f"{victim}:{field}".encode()][-1] is None
    finally:
        own.stop()


def test_a_restored_snapshot_from_before_the_erasure_is_erased_again(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis", options=("--appendonly", "no", "--save", ""))
    own.start()
    try:
        settings = replace(stream_settings, redis_url=own.url, state_check_seconds=1.0)
        records = attempt_records(generate_attempts(3000, users=60, seed=66))
        victim = int(records[0][0] or b"0")
        worker = workers(settings)
        send(settings, records)
        wait_for_oracle(settings, oracle(records))
        own.client().save()  # last night's snapshot: the learner is in it
        snapshot = tmp_path / "snapshot.rdb"
        shutil.copy(own.directory / "dump.rdb", snapshot)
        erase_learner(victim, settings=settings)
        assert_erased(settings, victim)
        own.stop()  # the operator restores the snapshot and restarts Redis
        shutil.copy(snapshot, own.directory / "dump.rdb")
        own.start()
        assert learner_keys(own.client(), settings.key_prefix, victim)  # back, for now
        more = not_of_user(attempt_records(generate_attempts(600, users=60, seed=67)), victim)
        send(settings, more)
        wait_until(lambda: "put back from" in worker.log.read_text(), 60, "the worker to notice")
        wait_for_oracle(settings, oracle(not_of_user(records, victim) + more))
        assert_erased(settings, victim)
    finally:
        own.stop()
