"""The outbox relay: committed outbox rows to the attempts topic, none lost.

One round (:meth:`Relay.relay_once`), in one database transaction:

1. lock a few lanes (in turn) that have pending rows and that no other relay holds
   (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL and MariaDB/MySQL 8; SQLite has
   no row locks, so there each round takes the database's write lock with
   ``BEGIN IMMEDIATE`` and relays take turns);
2. read those lanes' pending rows in insertion order;
3. send them, keyed by ``user_id`` like the producer, and wait until the broker has
   acknowledged every one (``acks=all``);
4. mark them sent and commit.

A relay that dies anywhere in a round has committed nothing of it: its rows are pending
again and the next round sends them once more, which the engine's per-attempt dedupe makes
harmless. A broker that is down fails step 3: the round rolls back and is retried with a
growing pause; nothing is dropped. A learner's rows share a lane, and a lane is relayed by
one relay at a time, in order: several relays keep each learner's order.

Sent rows are deleted once older than the retention (``--retention``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from sqlalchemy import Engine, event, func, select
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError

from performance_engine.broker import broker_failed, require_broker
from performance_engine.connections import kafka_python_options
from performance_engine.errors import BrokerUnavailableError, DatabaseQueryError
from performance_engine.platform.outbox import (
    OUTBOX_LANES,
    lanes_table,
    outbox_engine,
    outbox_table,
    utc_now,
)
from performance_engine.settings import Settings

__all__ = ["Relay", "RelayOptions", "relay_engine", "serve"]

logger = logging.getLogger(__name__)

#: Lanes one round locks: a few, so that other relays find lanes free; taken in turn.
LANES_PER_ROUND = 4


@dataclass(frozen=True, slots=True)
class RelayOptions:
    #: Most rows one round sends (one transaction, one wait for the broker's acks).
    batch_size: int = 1000
    #: Pause between rounds that found nothing to send.
    poll_seconds: float = 0.2
    #: Sent rows are deleted when older than this (seconds).
    retention_seconds: float = 86_400.0
    #: Longest pause between retries while the broker or the database fails.
    max_backoff: float = 10.0
    #: Seconds between progress lines in the log.
    report_every: float = 10.0


def relay_engine(url: str | URL) -> Engine:
    """The relay's engine for a database URL.

    READ COMMITTED where the database has it: after taking a lane's lock a round must see
    what the relay that held it before committed (PostgreSQL's default; InnoDB's
    REPEATABLE READ would show an older snapshot, and it would also keep locks on every row
    a small table's scan touched). On SQLite each transaction takes the write lock at its
    start (``BEGIN IMMEDIATE``), which serialises relays there."""
    engine = outbox_engine(url, pool_pre_ping=True)
    if engine.dialect.name != "sqlite":
        return engine.execution_options(isolation_level="READ COMMITTED")

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Relay:
    """Publishes an outbox's committed rows to the settings' attempts topic."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        options: RelayOptions | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.options = options or RelayOptions()
        self._producer = self._make_producer()
        self._locks = engine.dialect.name != "sqlite"
        self._next_lane = 0
        self.published = 0
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        self._published_total = Counter(
            "perf_engine_outbox_published",
            "Outbox rows sent and acknowledged by the broker",
            registry=registry,
        )
        self._pending = Gauge(
            "perf_engine_outbox_pending", "Outbox rows not yet sent", registry=registry
        )
        self._lag = Gauge(
            "perf_engine_outbox_lag_seconds",
            "Age of the oldest outbox row not yet sent (0 when none)",
            registry=registry,
        )

    def _make_producer(self) -> KafkaProducer:
        try:
            return KafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap.split(","),
                acks="all",
                linger_ms=5,
                retries=5,
                **kafka_python_options(self.settings),
            )
        except KafkaError as exc:
            raise broker_failed(self.settings, exc) from exc

    def close(self) -> None:
        self._producer.close()
        self.engine.dispose()

    # -- one round ----------------------------------------------------------------------

    def relay_once(self) -> int:
        """Send one batch of pending rows and mark it sent; returns how many."""
        table = outbox_table
        with self.engine.begin() as connection:
            # Which lanes have work (read without locking), in turn from the last round's
            # end; then lock a few of them, skipping those other relays hold. The lock is
            # taken by primary key, so that InnoDB locks only the rows it returns.
            waiting = set(
                connection.scalars(select(table.c.lane).where(table.c.sent_at.is_(None)).distinct())
            )
            if not waiting:
                return 0
            turn = sorted(waiting, key=lambda n: (n - self._next_lane) % OUTBOX_LANES)
            lanes = self._lock_lanes(connection, turn)
            if not lanes:
                return 0
            self._next_lane = (lanes[-1] + 1) % OUTBOX_LANES
            rows = connection.execute(
                select(table.c.id, table.c.user_id, table.c.payload)
                .where(table.c.lane.in_(lanes), table.c.sent_at.is_(None))
                .order_by(table.c.id)
                .limit(self.options.batch_size)
            ).all()
            if not rows:
                return 0
            self._send([(row.user_id, row.payload) for row in rows])
            ids = [row.id for row in rows]
            connection.execute(table.update().where(table.c.id.in_(ids)).values(sent_at=utc_now()))
        self.published += len(rows)
        self._published_total.inc(len(rows))
        return len(rows)

    def _lock_lanes(self, connection: Connection, turn: list[int]) -> list[int]:
        """Lock up to LANES_PER_ROUND of the waiting lanes, in turn, skipping those other
        relays hold. One lane per statement, by primary key: a statement locking several
        would take them in index order (starving the higher lanes while the lower ones
        keep getting rows), and InnoDB would lock every row its scan touched."""
        if not self._locks:  # SQLite: the round holds the database's write lock already
            return turn[:LANES_PER_ROUND]
        locked: list[int] = []
        for lane in turn:
            query = (
                select(lanes_table.c.lane)
                .where(lanes_table.c.lane == lane)
                .with_for_update(skip_locked=True)
            )
            if connection.scalar(query) is not None:
                locked.append(lane)
                if len(locked) == LANES_PER_ROUND:
                    break
        return locked

    def _send(self, rows: list[tuple[int, str]]) -> None:
        """Send every row and wait for the broker to acknowledge all of them."""
        topic = self.settings.attempts_topic
        try:
            futures = [
                self._producer.send(topic, key=str(user).encode(), value=payload.encode())
                for user, payload in rows
            ]
            self._producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=0)  # raises the record's error, if it failed
        except KafkaError as exc:
            raise broker_failed(self.settings, exc) from exc

    def prune(self) -> int:
        """Delete sent rows older than the retention; returns how many."""
        cutoff = utc_now() - timedelta(seconds=self.options.retention_seconds)
        table = outbox_table
        with self.engine.begin() as connection:
            done = connection.execute(
                table.delete().where(table.c.sent_at.is_not(None), table.c.sent_at < cutoff)
            )
        return int(done.rowcount or 0)

    def measure(self) -> tuple[int, float]:
        """Pending rows, and the age in seconds of the oldest of them (0 when none)."""
        table = outbox_table
        with self.engine.connect() as connection:
            count, oldest = connection.execute(
                select(func.count(), func.min(table.c.created_at)).where(table.c.sent_at.is_(None))
            ).one()
        lag = 0.0 if oldest is None else max((utc_now() - oldest).total_seconds(), 0.0)
        self._pending.set(count)
        self._lag.set(lag)
        return int(count), lag

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: Callable[[], bool] = lambda: False, *, until_empty: bool = False) -> None:
        """Relay until ``stop()`` (or, with ``until_empty``, until nothing is pending);
        failures of the broker or the database are retried, with a growing pause."""
        options = self.options
        delay = 0.1
        last_report = last_prune = 0.0
        sent_since = 0
        while not stop():
            try:
                sent = self.relay_once()
                delay = 0.1
            except (BrokerUnavailableError, SQLAlchemyError, DatabaseQueryError) as exc:
                logger.warning("relaying failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, options.max_backoff)
                continue
            sent_since += sent
            now = time.monotonic()
            if now - last_prune >= 60:
                self._quietly(self.prune)
                last_prune = now
            if now - last_report >= options.report_every:
                measured = self._quietly(self.measure)
                if measured is not None:
                    pending, lag = measured
                    logger.info(
                        "relayed %d attempts (%d in all); %d pending, the oldest %.1fs old",
                        sent_since,
                        self.published,
                        pending,
                        lag,
                    )
                sent_since, last_report = 0, now
            if sent == 0:
                if until_empty and self._quietly(self.measure) == (0, 0.0):
                    return
                time.sleep(options.poll_seconds)

    @staticmethod
    def _quietly(action: Callable[[], Any]) -> Any:
        try:
            return action()
        except SQLAlchemyError as exc:
            logger.warning("outbox housekeeping failed (%s); it is tried again later", exc)
            return None


def serve(
    engine: Engine,
    settings: Settings,
    options: RelayOptions,
    *,
    metrics_port: int = 0,
    drain: bool = False,
) -> int:
    """Run a relay the way the command line does: checks the broker first, serves
    Prometheus metrics on ``metrics_port`` (when not 0), stops on SIGTERM after its round
    (or, with ``drain``, once nothing is pending); returns how many attempts it sent."""
    require_broker(settings)
    relay = Relay(engine, settings, options)
    if metrics_port:
        start_http_server(metrics_port, registry=relay.registry)
    logger.info("relaying %s to %s", engine.url.render_as_string(), settings.attempts_topic)
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        # the round finishes (or rolls back) first; dying mid-round would be safe too,
        # but would send the round again
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        relay.run(stop=stopping.is_set, until_empty=drain)
    finally:
        relay.close()
    logger.info("relay stopped after sending %d attempts", relay.published)
    return relay.published
