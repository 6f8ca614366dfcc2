"""The Faust app: built by :func:`create_app` from the settings, nothing at import time.

Faust runs the worker: the process and its signals, the consumer group and its
rebalances (partition assignment, pausing, seeking to committed offsets), the producer,
the web server and the CLI. The attempts topic is subscribed through Faust's consumer,
but its records skip Faust's per-event stream machinery: each fetched batch of raw records
goes whole to the :class:`~performance_engine.worker.processor.BatchProcessor`, and its
offsets are committed through Faust once the batch is durable (how, and what of Faust's
private API that takes, is in :mod:`~performance_engine.worker.faust_internals`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from mode import Service

from performance_engine.connections import faust_credentials
from performance_engine.errors import ConfigurationError, DatabaseQueryError
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.plugins import build_calculator
from performance_engine.settings import Settings, is_loopback
from performance_engine.store.dashboard_index import DashboardIndex
from performance_engine.store.ledger import Ledger, StateLost, judge
from performance_engine.store.params import ParamsFollower
from performance_engine.store.stats_store import AsyncStatsStore
from performance_engine.tokens import read_tokens
from performance_engine.topics import create_missing_topics
from performance_engine.worker.auth import Guard
from performance_engine.worker.dashboard.feed import StatsFeed
from performance_engine.worker.erasures import ErasureLog
from performance_engine.worker.faust_internals import (
    BatchingApp,
    aiokafka_producer,
    committed_offsets,
    next_offset,
    require_faust_internals,
)
from performance_engine.worker.instrumentation import EngineMetrics
from performance_engine.worker.middleware import middlewares
from performance_engine.worker.processor import (
    BatchAbandoned,
    BatchProcessor,
    Counters,
    Publisher,
    Record,
)
from performance_engine.worker.publisher import BatchPublisher
from performance_engine.worker.status import attach_status
from performance_engine.worker.web import install_views
from performance_engine.worker.xapi_topic import StatementsReader
from performance_engine.xapi import xapi_mapping

__all__ = ["EngineApp", "EngineService", "create_app"]

logger = logging.getLogger(__name__)

#: How long a rebalance lets the batch in flight finish before telling it to give up.
REVOKE_GRACE_SECONDS = 10.0


class EngineApp(BatchingApp):
    """The worker's Faust app: its consumer hands the attempts topic over a batch at a
    time (see :mod:`.faust_internals`)."""

    settings: Settings
    #: The tokens' check (None: no tokens file, the server is open on loopback).
    guard: Guard | None

    async def on_start(self) -> None:
        """Create missing topics before the consumer subscribes (so it sees them)."""
        created = await asyncio.to_thread(create_missing_topics, self.settings)
        if created:
            logger.info("created topics %s", ", ".join(created))
        await super().on_start()


#: Allocations between young-generation collections in the worker (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def _tune_collector() -> None:
    """Fewer, cheaper cyclic collections for the worker's allocation pattern.

    A batch allocates a few objects per record and per scope, almost none in a cycle, and
    the state cache keeps tens of thousands of long-lived containers: with CPython's
    defaults the collector ran every 700 allocations and regularly walked the whole cache
    (measured: the stats of a 5,000-scope batch took twice as long). Everything allocated
    at start-up is frozen out of collections, and the young generation is collected every
    ``GC_YOUNG_THRESHOLD`` allocations; cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class EngineService(Service):
    """Owns the Redis store and the batch processor for the app's lifetime."""

    def __init__(self, app: EngineApp, calculator: MetricsCalculator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.calculator = calculator
        self.store: AsyncStatsStore | None = None
        self.processor: BatchProcessor | None = None
        self.ledger: Ledger | None = None
        self.erasures: ErasureLog | None = None
        #: Sends records through the worker's producer (the xAPI statements' attempts).
        self.publish: Publisher | None = None
        self.dashboard_index: DashboardIndex | None = None
        self.feed: StatsFeed | None = None
        self._in_flight = asyncio.Lock()
        #: Redis's positions were compared with the committed offsets since the assignment.
        self._verified = False
        #: The positions ledger changed under this worker: Redis lost state.
        self._lost = False
        #: Why the worker refuses to go on (Redis lost state that Kafka no longer holds).
        self.refusal: str | None = None
        self.metrics = EngineMetrics(self.counters, self.lag, lambda: self.refusal is not None)

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def store_or_fail(self) -> AsyncStatsStore:
        assert self.store is not None
        return self.store

    def counters(self) -> Counters | None:
        return self.processor.counters if self.processor is not None else None

    def _assignment(self) -> set[TP]:
        try:
            return set(self.app.consumer.assignment())
        except ConsumerNotStarted:
            return set()

    def assigned_partitions(self) -> set[int]:
        topic = self.app.settings.attempts_topic
        return {tp.partition for tp in self._assignment() if tp.topic == topic}

    def lag(self) -> dict[int, int]:
        """Per assigned partition: the high watermark minus the next offset to read."""
        consumer = self.app.consumer
        topic = self.app.settings.attempts_topic
        lags: dict[int, int] = {}
        for tp in self._assignment():
            if tp.topic != topic:
                continue
            high = consumer.highwater(tp)
            position = next_offset(consumer, tp)
            if high is not None and position is not None:
                lags[tp.partition] = max(high - position, 0)
        return lags

    async def on_start(self) -> None:
        app, settings = self.app, self.app.settings
        self.store = AsyncStatsStore.from_settings(settings)
        self.ledger = Ledger(
            self.store,
            settings.attempts_topic,
            settings.redis_wait_replicas,
            settings.redis_wait_timeout_ms,
        )
        publisher = BatchPublisher(aiokafka_producer(app))
        self.publish = publisher.publish
        params = ParamsFollower(self.calculator, self.store.keys, self.calculator.parameters)
        await params.refresh(self.store)
        self.erasures = ErasureLog(settings)
        await self.erasures.start()
        await self.erasures.reconcile(self.store)
        self.processor = BatchProcessor(
            settings,
            self.calculator,
            self.store,
            publisher.publish,
            on_batch=self.metrics.observe_batch,
            ledger=self.ledger,
            params=params,
            erasures=self.erasures,
        )
        if settings.xapi_topic:
            reader = StatementsReader(
                settings, self.calculator, self.store, publisher.publish, self.metrics
            )
            self.add_future(self._follow(reader.run, "the xAPI statements topic's reader"))
        if settings.dashboard:
            self.dashboard_index = DashboardIndex(self.store.client, self.store.keys)
            self.feed = StatsFeed(settings, self.dashboard_index, busy=self._behind)
            self.add_future(self._follow(self.feed.run, "the dashboard's stats feed"))
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.batch_handler = self.handle_batch
        _tune_collector()
        app.batch_ready.set()
        self._log_assignment()
        logger.info("engine ready: %s -> Redis %s", settings.attempts_topic, self.store.url)

    async def on_stop(self) -> None:
        self.app.batch_ready.clear()
        self.app.batch_handler = None
        if self.erasures is not None:
            await self.erasures.stop()
        if self.store is not None:
            await self.store.close()

    async def handle_batch(self, records: Sequence[Record]) -> bool:
        """Process a batch; False when it was given up (its records come again)."""
        assert self.processor is not None
        async with self._in_flight:
            if self.refusal is not None:
                return False  # the partitions are paused; a batch fetched before
            try:
                if not self._verified and not await self._verify():
                    return False  # seeking back: the batch comes again, after older ones
                await self.processor.process(records)
            except BatchAbandoned as exc:
                logger.warning("batch abandoned, its records will be delivered again: %s", exc)
                return False
            except StateLost as exc:
                logger.error("%s; finding where its state ends", exc)
                self._lost, self._verified = True, False
                self.processor.forget()
                await self._verify()
                return False
        return True

    # -- does Redis still hold the state the committed offsets stand for? ---------------

    async def _verify(self) -> bool:
        """Compare the positions ledger with the committed offsets of the assigned
        partitions; seek back those whose state in Redis ends earlier, or refuse when the
        attempts needed are gone. True when the batch at hand may be processed."""
        assert self.processor is not None
        assert self.ledger is not None
        consumer, settings = self.app.consumer, self.app.settings
        tps = [tp for tp in self._assignment() if tp.topic == settings.attempts_topic]
        if not tps:
            return True
        ledger = self.ledger
        try:
            positions = await ledger.read()
            committed = await committed_offsets(consumer, tps)
            earliest = await consumer.earliest_offsets(*tps)
            has_state = (
                positions is None
                and any(v is not None for v in committed.values())
                and await ledger.has_state()
            )
        except DatabaseQueryError as exc:
            logger.warning("checking Redis's positions failed (%s); trying again", exc)
            await asyncio.sleep(1.0)
            return False
        verdict = judge(
            positions,
            {tp.partition: committed.get(tp) for tp in tps},
            {tp.partition: int(earliest.get(tp, 0)) for tp in tps},
            has_state=has_state,
            lost=self._lost,
        )
        if verdict.gaps and not settings.accept_state_gap:
            self._refuse(verdict.gaps, tps)
            return False
        resume = dict(verdict.resume)
        for partition, (first, after) in verdict.gaps.items():
            start = verdict.past_gaps[partition]
            logger.warning(
                "partition %d: offsets %d to %d are lost to Redis and no longer in the topic; "
                "resuming from %d as PERF_ENGINE_ACCEPT_STATE_GAP allows (those attempts "
                "count only if the platform's history was backfilled)",
                partition,
                first,
                after - 1,
                start,
            )
            resume[partition] = start
        ledger.known = {tp.partition: (positions or {}).get(tp.partition) for tp in tps}
        if verdict.adopted:
            logger.info(
                "no positions ledger in Redis yet, but state: taking it to reach the committed "
                "offsets (a Redis written by an earlier release)"
            )
        if resume and self.erasures is not None:
            # Redis lost state, and with it perhaps erasures: put them back before the
            # replay (which holds back the erased learners' attempts)
            try:
                await self.erasures.read()
                await self.erasures.reconcile(self.store_or_fail())
            except Exception as exc:
                logger.warning("re-applying the erasures failed (%s); trying again", exc)
                await asyncio.sleep(1.0)
                return False
        if resume:
            self.processor.forget()
            for partition, offset in sorted(resume.items()):
                behind = committed.get(TP(settings.attempts_topic, partition))
                logger.error(
                    "Redis lost state: partition %d's state ends at offset %d, the committed "
                    "offset is %s; replaying from %d (attempts already applied count once)",
                    partition,
                    offset,
                    behind,
                    offset,
                )
                await consumer.seek(TP(settings.attempts_topic, partition), offset)
            self.processor.counters.state_recoveries += 1
        self._verified, self._lost = True, False
        return not resume

    def _refuse(self, gaps: dict[int, tuple[int, int]], tps: list[TP]) -> None:
        parts = ", ".join(
            f"partition {p}: offsets {first} to {after - 1}"
            for p, (first, after) in sorted(gaps.items())
        )
        self.refusal = (
            f"Redis lost state the attempts topic no longer holds ({parts}); backfill the "
            "platform's history (perf-engine backfill), then start the worker with "
            "--accept-state-gap"
        )
        logger.critical("refusing to go on: %s", self.refusal)
        self.app.consumer.pause_partitions(tps)

    def _behind(self) -> bool:
        """Whether the worker has more than a batch of records waiting (the dashboard's
        feed then yields to it)."""
        return sum(self.lag().values()) > self.app.settings.batch_size

    async def _follow(
        self, run: Callable[[Callable[[], bool]], Awaitable[None]], what: str
    ) -> None:
        """A consumer beside the attempts' (``run`` until told to stop), restarted after a
        failure."""
        while not self.should_stop:
            try:
                await run(lambda: self.should_stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s failed; restarting it in 5 s", what)
                await self.sleep(5.0)

    @Service.task
    async def _check_state(self) -> None:
        """Every ``state_check_seconds``: does Redis still hold the positions this worker
        wrote? (A batch finds out too, but a quiet partition would not.)"""
        interval = self.app.settings.state_check_seconds
        while not self.should_stop:
            await self.sleep(interval)
            if self.refusal is not None or self.ledger is None or not self._recovered():
                continue
            async with self._in_flight:
                await self._check_erasures()
                if not self._verified:
                    await self._verify()
                    continue
                try:
                    positions = await self.ledger.read()
                except DatabaseQueryError:
                    continue  # Redis is down: the batches wait and retry meanwhile
                changed = sorted(
                    p for p, known in self.ledger.known.items() if (positions or {}).get(p) != known
                )
                if changed:
                    logger.error(
                        "Redis's positions ledger changed under the worker (partitions %s): "
                        "Redis lost state; finding where it ends",
                        ", ".join(map(str, changed)),
                    )
                    assert self.processor is not None
                    self._lost, self._verified = True, False
                    self.processor.forget()
                    await self._verify()

    async def _check_erasures(self) -> None:
        """Follow the erasures topic while no batch comes (and apply what it says at once),
        and put back the erasures Redis lost without the positions showing it (a snapshot
        restored from between the last batch and an erasure)."""
        erasures, store = self.erasures, self.store
        if erasures is None or store is None or self.should_stop:
            return
        try:
            await erasures.read()
            if self.processor is not None:  # forget their cache, their tombstones again
                await self.processor.learn_erasures()
            if await erasures.lost_some(store):
                await erasures.reconcile(store)
        except Exception as exc:  # the broker or Redis: the next check, or a batch, retries
            logger.warning("following the erasures failed (%s); trying again", exc)

    def _recovered(self) -> bool:
        """Faust has sought the assigned partitions to their committed offsets."""
        return bool(cast(Any, self.app.tables).recovery.completed.is_set())

    async def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self._verified = False  # the first batch (or the timer) compares the positions
        self._log_assignment()

    def _log_assignment(self) -> None:
        """One line per assignment: which partitions of the attempts topic this worker has
        (the first assignment comes before this service starts, hence also at start)."""
        partitions = sorted(self.assigned_partitions())
        logger.info(
            "assigned partitions of %s: %s",
            self.app.settings.attempts_topic,
            ", ".join(map(str, partitions)) or "none",
        )

    async def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Let the batch in flight finish (or give up), then forget cached state."""
        processor = self.processor
        if processor is None:
            return
        try:
            await asyncio.wait_for(self._wait_idle(), timeout=REVOKE_GRACE_SECONDS)
        except TimeoutError:
            logger.warning(
                "batch still waiting after %ss of rebalance; abandoning it", REVOKE_GRACE_SECONDS
            )
            processor.abandon()
            await self._wait_idle()
        processor.forget()
        if self.ledger is not None:
            self.ledger.known.clear()

    async def _wait_idle(self) -> None:
        async with self._in_flight:
            return


def _guard(settings: Settings) -> Guard | None:
    """The tokens' check, if a tokens file is set; a one-line refusal to serve learners'
    data beyond loopback without one (unless ``insecure_open_http``)."""
    if settings.web_tokens_file is None:
        if not is_loopback(settings.web_host) and not settings.insecure_open_http:
            raise ConfigurationError(
                f"PERF_ENGINE_WEB_HOST={settings.web_host} serves every learner's stats "
                "beyond this machine: set PERF_ENGINE_WEB_TOKENS_FILE (perf-engine token "
                "add), or pass --insecure-open-http if a proxy in front authenticates"
            )
        return None
    read_tokens(settings.web_tokens_file)  # a file that is missing or wrong: one line, now
    return Guard(settings.web_tokens_file)


def create_app(settings: Settings, calculator: MetricsCalculator | None = None) -> EngineApp:
    """The worker's Faust app for these settings (builds, connects to nothing)."""
    require_faust_internals()
    guard = _guard(settings)
    xapi_mapping(settings)  # a mapping file that is wrong: one line, now
    if calculator is None:
        calculator = build_calculator(settings)
    brokers = [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")]
    app = EngineApp(
        settings.app_id,
        broker=brokers,
        autodiscover=False,
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_application_options={
            "middlewares": middlewares(
                settings.cors_origins, None if guard is None else guard.middleware()
            )
        },
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_allow_declare=True,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_seconds,
        broker_max_poll_records=settings.batch_size,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_batch_size=1_000_000,
        broker_credentials=faust_credentials(settings),
    )
    app.settings = settings
    app.guard = guard
    app.batch_topic = settings.attempts_topic
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    attempts = app.topic(
        settings.attempts_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    app.topics.add(attempts)

    service = EngineService(app, calculator, beacon=app.beacon)
    app.service(cast(Any, service))
    attach_status(app, service)
    install_views(app)
    if settings.dashboard:
        from performance_engine.worker.dashboard.views import install_dashboard

        install_dashboard(app)
    return app
