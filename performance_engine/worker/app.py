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
from collections.abc import Sequence
from typing import Any, cast

from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from mode import Service

from performance_engine.connections import faust_credentials
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.plugins import build_calculator
from performance_engine.settings import Settings
from performance_engine.topics import create_missing_topics
from performance_engine.worker.faust_internals import (
    BatchingApp,
    aiokafka_producer,
    next_offset,
    require_faust_internals,
)
from performance_engine.worker.instrumentation import EngineMetrics
from performance_engine.worker.processor import (
    BatchAbandoned,
    BatchProcessor,
    Counters,
    Record,
)
from performance_engine.worker.publisher import BatchPublisher
from performance_engine.worker.store import AsyncStatsStore
from performance_engine.worker.web import install_views

__all__ = ["EngineApp", "EngineService", "create_app"]

logger = logging.getLogger(__name__)

#: How long a rebalance lets the batch in flight finish before telling it to give up.
REVOKE_GRACE_SECONDS = 10.0


class EngineApp(BatchingApp):
    """The worker's Faust app: its consumer hands the attempts topic over a batch at a
    time (see :mod:`.faust_internals`)."""

    settings: Settings

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
        self._in_flight = asyncio.Lock()
        self.metrics = EngineMetrics(self._counters, self.lag)

    def _counters(self) -> Counters | None:
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
        publisher = BatchPublisher(aiokafka_producer(app))
        self.processor = BatchProcessor(
            settings,
            self.calculator,
            self.store,
            publisher.publish,
            on_batch=self.metrics.observe_batch,
        )
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
        if self.store is not None:
            await self.store.close()

    async def handle_batch(self, records: Sequence[Record]) -> bool:
        """Process a batch; False when it was given up (its records come again)."""
        assert self.processor is not None
        async with self._in_flight:
            try:
                await self.processor.process(records)
            except BatchAbandoned as exc:
                logger.warning("batch abandoned, its records will be delivered again: %s", exc)
                return False
        return True

    async def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
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

    async def _wait_idle(self) -> None:
        async with self._in_flight:
            return


def create_app(settings: Settings, calculator: MetricsCalculator | None = None) -> EngineApp:
    """The worker's Faust app for these settings (builds, connects to nothing)."""
    require_faust_internals()
    if calculator is None:
        calculator = build_calculator(settings)
    brokers = [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")]
    app = EngineApp(
        settings.app_id,
        broker=brokers,
        autodiscover=False,
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_allow_declare=True,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        broker_max_poll_records=settings.batch_size,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_batch_size=1_000_000,
        broker_credentials=faust_credentials(settings),
    )
    app.settings = settings
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
    install_views(app, service)
    return app
