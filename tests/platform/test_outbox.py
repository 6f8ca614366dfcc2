"""The transactional outbox and its relay, on the real PostgreSQL, MariaDB and SQLite, with
the real broker and a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, select, text

from performance_engine.errors import InvalidAttemptError
from performance_engine.outbox import (
    OUTBOX_TABLE,
    create_outbox,
    outbox_ddl,
    outbox_engine,
    record_attempt,
    record_attempts,
)
from performance_engine.platform.outbox import OUTBOX_LANES, lanes_table, outbox_table
from performance_engine.settings import Settings
from performance_engine.tools.relay import Relay, RelayOptions, relay_engine
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import oracle, wait_for_oracle
from tests.services import Worker, create_topics, read_topic, wait_until, worker_env

#: The platform's own table, written in the same transaction as the outbox row.
platform_metadata = MetaData()
answers = Table(
    "answers",
    platform_metadata,
    Column("id", Integer, primary_key=True),
    Column("attempt_id", String(128), nullable=False),
)


def pending(engine: Any) -> int:
    with engine.connect() as connection:
        count = connection.scalar(
            select(func.count()).select_from(outbox_table).where(outbox_table.c.sent_at.is_(None))
        )
    return int(count or 0)


@pytest.fixture
def platform_db(database_url: str) -> Iterator[Any]:
    engine = outbox_engine(database_url)
    assert create_outbox(engine) is True
    assert create_outbox(engine) is False  # idempotent
    platform_metadata.create_all(engine)
    yield engine
    engine.dispose()


class RunningRelay:
    """A relay in a thread of this process, stopped (and joined) by ``stop()``."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.relay = Relay(relay_engine(url), settings, RelayOptions(batch_size=200))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.relay.run, args=(self._stop.is_set,))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.relay.close()


@pytest.fixture
def relays(database_url: str) -> Iterator[Callable[[Settings], RunningRelay]]:
    started: list[RunningRelay] = []

    def start(settings: Settings) -> RunningRelay:
        started.append(RunningRelay(database_url, settings))
        return started[-1]

    yield start
    for relay in started:
        relay.stop()


def test_the_ddl_for_migration_tools_creates_a_working_outbox(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with engine.begin() as connection:
        for statement in outbox_ddl("sqlite"):
            connection.execute(text(statement))
        record_attempt(connection, generate_attempts(1, users=1, seed=1)[0])
    assert pending(engine) == 1
    for dialect in ("postgresql", "mysql", "mariadb"):
        assert any(OUTBOX_TABLE in s for s in outbox_ddl(dialect))


def test_an_invalid_attempt_writes_nothing(platform_db: Any) -> None:
    good, bad = generate_attempts(2, users=1, seed=2)
    bad["difficulty"] = "impossible"
    with platform_db.begin() as connection, pytest.raises(InvalidAttemptError, match="difficulty"):
        record_attempts(connection, [good, bad])  # validated first: the good one stays out
    assert pending(platform_db) == 0


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_committed_attempts_reach_the_stats_and_rolled_back_ones_never_do(
    platform_db: Any,
    database_url: str,
    stream_settings: Settings,
    workers: Callable[..., Any],
    relays: Callable[[Settings], RunningRelay],
) -> None:
    rows = generate_attempts(600, users=20, seed=3)
    committed: list[dict[str, Any]] = []
    for n, row in enumerate(rows):
        rolled_back = n % 7 == 3

        class Rollback(Exception):
            pass

        try:
            with platform_db.begin() as connection:  # the platform's own transaction
                connection.execute(answers.insert().values(attempt_id=row["attempt_id"]))
                record_attempt(connection, row)
                if rolled_back:
                    raise Rollback  # e.g. the platform's next write failed
        except Rollback:
            continue
        committed.append(row)
    workers(stream_settings)
    relays(stream_settings)
    wait_for_oracle(stream_settings, oracle(committed))
    wait_until(lambda: pending(platform_db) == 0, 30, "every outbox row marked sent")
    messages = read_topic(stream_settings.kafka_bootstrap, stream_settings.attempts_topic)
    sent = sorted(json.loads(m.value)["attempt_id"] for m in messages)
    assert sent == sorted(row["attempt_id"] for row in committed)  # each once: no relay died
    with platform_db.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(answers)) == len(committed)


@pytest.mark.kafka
@pytest.mark.slow
def test_two_relays_lose_nothing_and_keep_each_learners_order(
    platform_db: Any,
    database_url: str,
    stream_settings: Settings,
    relays: Callable[[Settings], RunningRelay],
) -> None:
    rows = generate_attempts(3000, users=40, seed=4)
    first, second = relays(stream_settings), relays(stream_settings)
    for start in range(0, len(rows), 100):  # written while both relays run
        with platform_db.begin() as connection:
            record_attempts(connection, rows[start : start + 100])
    wait_until(lambda: pending(platform_db) == 0, 120, "both relays to send everything")

    # A relay counts a batch after its transaction commits, so the rows can read as sent
    # a moment before the relay's thread has counted them.
    def published() -> int:
        return first.relay.published + second.relay.published

    wait_until(lambda: published() >= len(rows), 30, "both relays to count what they sent")
    assert published() == len(rows)
    by_user: dict[int, list[str]] = {}
    for message in read_topic(stream_settings.kafka_bootstrap, stream_settings.attempts_topic):
        attempt = json.loads(message.value)
        assert message.key == str(attempt["user_id"]).encode()
        by_user.setdefault(attempt["user_id"], []).append(attempt["attempt_id"])
    expected: dict[int, list[str]] = {}
    for row in rows:
        expected.setdefault(row["user_id"], []).append(row["attempt_id"])
    assert by_user == expected  # every attempt once, each learner's in the order written


def sent_rows(engine: Any) -> int:
    with engine.connect() as connection:
        count = connection.scalar(
            select(func.count())
            .select_from(outbox_table)
            .where(outbox_table.c.sent_at.is_not(None))
        )
    return int(count or 0)


class Writer:
    """The platform: commits attempts into the outbox, ``size`` per transaction with a
    pause between, every eighth transaction rolled back, in a thread of its own."""

    def __init__(self, engine: Any, rows: list[dict[str, Any]], size: int, pause: float) -> None:
        self.engine, self.rows, self.size, self.pause = engine, rows, size, pause
        self.committed: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for n, start in enumerate(range(0, len(self.rows), self.size)):
            part = self.rows[start : start + self.size]
            with self.engine.connect() as connection:
                transaction = connection.begin()
                connection.execute(
                    answers.insert(), [{"attempt_id": r["attempt_id"]} for r in part]
                )
                record_attempts(connection, part)
                if n % 8 == 5:
                    transaction.rollback()
                else:
                    transaction.commit()
                    self.committed += part
            time.sleep(self.pause)


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_relay_killed_three_times_and_a_broker_pause_count_every_committed_attempt_once(
    own_broker: tuple[subprocess.Popen[bytes], str],  # first: stopped after the workers
    postgresql_url: str,
    stream_settings: Settings,
    workers: Callable[..., Any],
    tmp_path: Path,
) -> None:
    broker, bootstrap = own_broker
    settings = replace(stream_settings, kafka_bootstrap=bootstrap)
    topics = [settings.attempts_topic, settings.stats_topic, settings.dlq_topic]
    create_topics(bootstrap, topics, settings.partitions)
    engine = outbox_engine(postgresql_url)
    create_outbox(engine)
    platform_metadata.create_all(engine)
    workers(settings)
    env = {**worker_env(settings, tmp_path / "relay"), "PERF_ENGINE_OUTBOX_URL": postgresql_url}
    command = ("relay", "--batch-size", "300", "--poll", "0.05")
    relays: list[Worker] = []

    def start_relay() -> Worker:
        relays.append(Worker(env, tmp_path / f"relay{len(relays)}.log", command).start())
        return relays[-1]

    writer = Writer(engine, generate_attempts(16_000, users=60, seed=6), size=40, pause=0.05)
    try:
        relay = start_relay()
        for _ in range(3):  # kill -9 mid-stream: after it has sent some, with rows pending
            floor = sent_rows(engine) + 500

            def busy(floor: int = floor) -> bool:
                return sent_rows(engine) > floor and pending(engine) > 0

            wait_until(busy, 60, "the relay to send while rows are pending", every=0.05)
            relay.kill()
            assert writer.thread.is_alive()
            relay = start_relay()
        before = sent_rows(engine)
        wait_until(lambda: sent_rows(engine) > before + 500, 60, "the relay to send again")
        os.kill(broker.pid, signal.SIGSTOP)  # the broker stops answering for 15 s
        time.sleep(1.0)
        sent_while_paused = sent_rows(engine)
        time.sleep(14.0)
        assert sent_rows(engine) == sent_while_paused  # no ack, nothing marked sent
        queued = pending(engine)
        os.kill(broker.pid, signal.SIGCONT)
        assert queued > 1000, "the writer went on committing while the broker was paused"
        writer.thread.join(timeout=120)
        assert not writer.thread.is_alive()
        wait_until(lambda: pending(engine) == 0, 120, "the relay to catch up after the pause")
        assert relay.alive()  # the same relay recovered by itself
        wait_for_oracle(settings, oracle(writer.committed), timeout=180)
        messages = read_topic(bootstrap, settings.attempts_topic)
        sent = {json.loads(m.value)["attempt_id"] for m in messages}
        assert sent == {row["attempt_id"] for row in writer.committed}  # no rolled-back one
    finally:
        for process in relays:
            process.stop()
        engine.dispose()


def test_a_relay_skips_the_lanes_another_relay_holds(
    platform_db: Any, database_url: str, stream_settings: Settings
) -> None:
    """How relays share an outbox: a round locks its lanes with SKIP LOCKED, so while one
    relay holds lanes 0-3 another sends only the other lanes' rows."""
    if platform_db.dialect.name == "sqlite":
        pytest.skip("SQLite has no row locks: there relays take turns on the write lock")
    rows = generate_attempts(400, users=32, seed=5)  # users 1..32: every lane has rows
    with platform_db.begin() as connection:
        record_attempts(connection, rows)
    relay = Relay(relay_engine(database_url), stream_settings, RelayOptions(batch_size=10_000))
    holder_engine = relay_engine(database_url)  # as another relay would hold them
    try:
        with holder_engine.connect() as holder, holder.begin():
            held = (
                holder.execute(
                    select(lanes_table.c.lane)
                    .where(lanes_table.c.lane.in_([0, 1, 2, 3]))  # by key: InnoDB locks no gap
                    .with_for_update()
                )
                .scalars()
                .all()
            )
            assert held == [0, 1, 2, 3]
            sent = 0
            while (n := relay.relay_once()) > 0:
                sent += n
            with platform_db.connect() as reader:
                unsent_lanes = set(
                    reader.scalars(
                        select(outbox_table.c.lane).where(outbox_table.c.sent_at.is_(None))
                    )
                )
        assert unsent_lanes == {0, 1, 2, 3}  # exactly the held lanes wait
        assert sent == sum(1 for row in rows if row["user_id"] % OUTBOX_LANES >= 4)
        assert relay.relay_once() > 0  # released: the rest goes
    finally:
        relay.close()
        holder_engine.dispose()


def test_outbox_init_from_the_command_line(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {k: v for k, v in os.environ.items() if k != "PERF_ENGINE_OUTBOX_URL"}

    def init(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "performance_engine.tools.cli", "outbox", "init"]
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, env=env, check=False, timeout=60
        )

    first, again = init(url), init(url)
    assert (first.returncode, again.returncode) == (0, 0)
    assert first.stdout.startswith(f"created tables {OUTBOX_TABLE} and ")
    assert "already exists" in again.stdout
    missing = init()
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "PERF_ENGINE_OUTBOX_URL" in missing.stderr
    bad = init("nosuch://x")
    assert (bad.returncode, bad.stderr.count("\n")) == (1, 1)
    assert "Traceback" not in bad.stderr


@pytest.mark.kafka
def test_the_relay_reports_progress_and_lag_and_prunes_after_the_retention(
    stream_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    engine = outbox_engine(url)
    create_outbox(engine)
    with engine.begin() as connection:
        record_attempts(connection, generate_attempts(30, users=5, seed=7))
    relay = Relay(relay_engine(url), stream_settings, RelayOptions(report_every=0.0))
    pruner = Relay(relay_engine(url), stream_settings, RelayOptions(retention_seconds=0.0))
    try:
        count, lag = relay.measure()
        assert count == 30
        assert lag > 0
        gauge = relay.registry.get_sample_value
        assert gauge("perf_engine_outbox_pending") == 30
        assert gauge("perf_engine_outbox_lag_seconds") == lag
        with caplog.at_level("INFO", logger="performance_engine.tools.relay"):
            relay.run(until_empty=True)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("relayed")]
        assert lines[0].startswith("relayed ")
        assert "(30 in all); 0 pending, the oldest 0.0s old" in lines[-1]
        assert gauge("perf_engine_outbox_published_total") == 30
        assert (gauge("perf_engine_outbox_pending"), gauge("perf_engine_outbox_lag_seconds")) == (
            0,
            0,
        )
        assert relay.prune() == 0  # a day's retention keeps them
        assert sent_rows(engine) == 30
        assert pruner.prune() == 30  # no retention: every sent row goes
        assert sent_rows(engine) == 0
    finally:
        pruner.close()
        relay.close()
        engine.dispose()
