"""The statements topic (``PERF_ENGINE_XAPI_TOPIC``): xAPI statements sent through Kafka
instead of ``POST /xAPI/statements``.

Every worker reads it in a consumer group of its own (``<app id>-xapi``), so its
partitions are shared among the workers. A fetched batch goes through the same ingest as
HTTP (:func:`~performance_engine.worker.xapi_ingest.ingest`); the statements that are
refused become dead letters (``xapi_*`` error classes) and the rest are taken. Its
offsets are committed only once the attempts and the dead letters are acknowledged by the
broker: a worker killed in between reads the batch again, and the statements, already
taken, are resends (the engine counts an attempt id once). A statement's time of receipt
is its record's timestamp, so a redelivery gives the same attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from performance_engine.connections import aiokafka_options
from performance_engine.events import dead_letter
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.settings import Settings
from performance_engine.store.stats_store import AsyncStatsStore
from performance_engine.worker.instrumentation import EngineMetrics
from performance_engine.worker.processor import Publisher, Record
from performance_engine.worker.publisher import OutRecord
from performance_engine.worker.xapi_ingest import fitted_classes, ingest
from performance_engine.xapi import xapi_mapping

__all__ = ["StatementsReader"]

logger = logging.getLogger(__name__)

#: Statements per fetched batch.
MAX_RECORDS = 500


class StatementsReader:
    """Reads the statements topic into the attempts topic (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        calculator: MetricsCalculator,
        store: AsyncStatsStore,
        publish: Publisher,
        metrics: EngineMetrics,
        *,
        max_backoff: float = 5.0,
    ) -> None:
        assert settings.xapi_topic, "no statements topic is set"
        self.settings = settings
        self.calculator = calculator
        self.store = store
        self.publish = publish
        self.metrics = metrics
        self.max_backoff = max_backoff

    async def run(self, should_stop: Callable[[], bool]) -> None:
        """Read, take and commit until told to stop."""
        settings = self.settings
        consumer = AIOKafkaConsumer(
            settings.xapi_topic,
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            group_id=f"{settings.app_id}-xapi",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=500,
            # as the attempts' consumer: a worker gone has its partitions given away after
            # PERF_ENGINE_SESSION_TIMEOUT
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=int(settings.heartbeat_seconds * 1000),
            **aiokafka_options(settings),
        )
        await consumer.start()
        try:
            while not should_stop():
                batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
                records = [record for found in batches.values() for record in found]
                if not records:
                    continue
                await self._take(records, should_stop)
                await consumer.commit()
        finally:
            await consumer.stop()

    async def _take(self, records: list[Record], should_stop: Callable[[], bool]) -> None:
        """Ingest one batch and send what it gives; retried until the broker has it all."""
        settings = self.settings
        delay = 0.05
        values = [record.value or b"" for record in records]
        received = [record.timestamp for record in records]
        while not should_stop():
            try:
                done = await ingest(
                    self.store,
                    xapi_mapping(settings),
                    values,
                    received,
                    strict=False,
                    fitted=fitted_classes(self.calculator.parameters),
                    keep_seconds=settings.xapi_statement_seconds,
                )
                dead: list[OutRecord] = [
                    dead_letter(
                        records[i].key,
                        records[i].value,
                        error.error_class,
                        error.reason,
                        records[i].topic,
                        records[i].partition,
                        records[i].offset,
                    )
                    for i, error in done.refused
                ]
                await asyncio.gather(
                    self.publish(settings.attempts_topic, done.records),
                    self.publish(settings.dlq_topic, dead),
                )
            except Exception as exc:  # Redis or the broker: the batch is taken again
                logger.warning("taking xAPI statements failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            self.metrics.count_statements(done.results)
            return
