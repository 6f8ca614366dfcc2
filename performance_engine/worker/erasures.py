"""The worker's knowledge of erased learners: the erasures topic, followed, and the
erasure markers in Redis (see :mod:`performance_engine.erasure`).

At start the worker reads the erasures topic to its end before its first batch, and puts
back every marker Redis lost (a ``FLUSHDB``, a restored older snapshot, a failover to a
replica that lagged): :meth:`ErasureLog.reconcile`. Afterwards it reads the topic's new
records before a batch at most every :data:`FOLLOW_SECONDS` and on its state-check timer
(``PERF_ENGINE_STATE_CHECK_SECONDS``), when it also puts back the erasures Redis no longer
lists; and again whenever Redis lost state (before the replay). Between two reads an
erasure can happen; the compare-and-set then refuses to create a scope of the learner,
and :meth:`ErasureLog.check_markers` reads the learner's marker: the processor learns the
erasure there, at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from performance_engine.connections import aiokafka_options
from performance_engine.erasure import (
    EPOCH_LENGTH,
    Erasure,
    decode_erasure,
    decode_marker,
)
from performance_engine.settings import Settings
from performance_engine.store.dashboard_index import forget_commands
from performance_engine.store.erasure import restore_call
from performance_engine.store.failures import REDIS_ERRORS, failure
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.stats_store import AsyncStatsStore

__all__ = ["FOLLOW_SECONDS", "ErasureLog"]

logger = logging.getLogger(__name__)

#: Longest a worker goes between two reads of the erasures topic while batches run.
FOLLOW_SECONDS = 2.0
#: Rounds of putting markers back before a learner whose marker keeps moving is left
#: for the next reconciliation.
RESTORE_ROUNDS = 5


class ErasureLog:
    """Every erased learner's last erasure, as this worker knows it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: user id -> their last erasure (complete, or under way if learnt from a marker).
        self.known: dict[int, Erasure] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._read_at = 0.0
        #: Erasures read from the topic that the processor has not taken yet.
        self._fresh: list[Erasure] = []

    # -- the topic ---------------------------------------------------------------------

    async def start(self) -> None:
        """Read the erasures topic from its start to its end."""
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=500,  # a fetch waits this long on a quiet topic: little CPU
            **aiokafka_options(settings),
        )
        await consumer.start()
        self._consumer = consumer
        topic = settings.erasures_topic
        partitions = consumer.partitions_for_topic(topic)
        waited = 0
        while not partitions:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                if waited % 50 == 49:  # every 10 s
                    logger.warning(
                        "waiting for the erasures topic %s to exist (PERF_ENGINE_ERASURES_TOPIC; "
                        "the worker creates it when it may create topics)",
                        topic,
                    )
                waited += 1
                await asyncio.sleep(0.2)  # the topic is being created (create_missing_topics)
        self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        await self.read()
        self._fresh.clear()  # nothing of them is cached or published yet: nothing to announce
        logger.info("%d erased learners known (%s)", len(self.known), topic)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def read(self) -> list[Erasure]:
        """Read the topic to its end now; returns the erasures new to this worker (kept
        for :meth:`due` too).

        The end is the high watermark of the consumer's fetches (some Kafka-protocol
        brokers answer a ListOffsets request with the start of the last record batch)."""
        consumer = self._consumer
        if consumer is None:
            return []
        learnt: list[Erasure] = []
        wait = 0  # what the consumer fetched meanwhile first; then wait for the rest
        while True:
            batches = await consumer.getmany(*self._partitions, timeout_ms=wait)
            wait = 100
            for records in batches.values():
                for record in records:
                    erasure = _decode(record.value)
                    if erasure is not None and self.learn(erasure):
                        learnt.append(erasure)
            if not batches and await self._caught_up():
                break
        self._read_at = time.monotonic()
        self._fresh += learnt
        return learnt

    async def _caught_up(self) -> bool:
        assert self._consumer is not None
        for tp in self._partitions:
            high = self._consumer.highwater(tp)
            if high is None or await self._consumer.position(tp) < high:
                return False
        return True

    async def due(self) -> list[Erasure]:
        """Before a batch: :meth:`read`, if the last one is more than
        :data:`FOLLOW_SECONDS` old; returns the erasures read since the last call (also
        by the worker's timer, between batches)."""
        if time.monotonic() - self._read_at >= FOLLOW_SECONDS:
            await self.read()
        return self.take()

    def take(self) -> list[Erasure]:
        """The erasures read since the last call (of this or :meth:`due`)."""
        fresh, self._fresh = self._fresh, []
        return fresh

    def learn(self, erasure: Erasure) -> bool:
        """Take an erasure in; True if it is one this worker did not know (not merely the
        completion of one under way)."""
        known = self.known.get(erasure.user)
        if known is not None and known.epoch == erasure.epoch:
            if erasure.complete and not known.complete:
                self.known[erasure.user] = erasure
            return False
        if known is not None and known.erased_at_ms > erasure.erased_at_ms:
            return False  # an older one (a restored snapshot's marker): the newer stands
        self.known[erasure.user] = erasure
        return True

    # -- Redis's markers ---------------------------------------------------------------

    async def check_markers(self, store: AsyncStatsStore, users: Iterable[int]) -> list[Erasure]:
        """Read the markers of these learners (a creation of one of their scopes was
        refused): learn the erasures found there, put back those Redis lost. Returns the
        erasures new to this worker."""
        learnt: list[Erasure] = []
        for _ in range(RESTORE_ROUNDS):
            wanted = sorted(set(users))
            values = await _markers(store, wanted)
            restores: list[tuple[Erasure, str]] = []
            for user, value in zip(wanted, values, strict=True):
                marker = _marker(user, value)
                if marker is not None and self.learn(marker):
                    learnt.append(marker)
                    continue
                known = self.known.get(user)
                if known is None or (marker is not None and marker.epoch == known.epoch):
                    continue
                if known.complete:
                    restores.append((known, "" if marker is None else marker.epoch))
                else:  # under way, and Redis lost it: nothing durable says so
                    logger.error(
                        "user %d's erasure under way was lost with Redis's data before it "
                        "was recorded; erase them again (perf-engine erase)",
                        user,
                    )
                    del self.known[user]
            if not restores:
                return learnt
            await self._restore(store, restores)
            users = [erasure.user for erasure, _ in restores]
        return learnt

    async def lost_some(self, store: AsyncStatsStore) -> bool:
        """Whether Redis lists fewer erased learners than this worker knows erasures of (a
        restored snapshot from before an erasure, which the positions may not show)."""
        complete = sum(1 for erasure in self.known.values() if erasure.complete)
        if not complete:
            return False
        try:
            listed = int(await store.client.scard(store.keys.erasures()))
        except REDIS_ERRORS as exc:
            raise failure(store.url, exc) from exc
        return listed < complete

    async def reconcile(self, store: AsyncStatsStore) -> int:
        """Put back every recorded erasure Redis lost (at start, and after Redis lost
        state): the marker, the older scopes deleted again, the learner out of the
        dashboard's index. Returns how many were put back."""
        restored = 0
        erasures = [e for e in self.known.values() if e.complete]
        for start in range(0, len(erasures), 1000):
            chunk = erasures[start : start + 1000]
            values = await _markers(store, [e.user for e in chunk])
            restores = []
            for erasure, value in zip(chunk, values, strict=True):
                marker = _marker(erasure.user, value)
                if marker is not None and marker.epoch == erasure.epoch:
                    continue
                if marker is not None and marker.erased_at_ms > erasure.erased_at_ms:
                    self.learn(marker)  # erased again meanwhile, that erasure under way
                    continue
                restores.append((erasure, "" if marker is None else marker.epoch))
            await self._restore(store, restores)
            await _listed(store, [e.user for e in chunk])
            restored += len(restores)
        if restored:
            logger.warning(
                "Redis had lost %d learners' erasures; put back from %s (their older scopes "
                "deleted again)",
                restored,
                self.settings.erasures_topic,
            )
        return restored

    @staticmethod
    async def _restore(store: AsyncStatsStore, restores: list[tuple[Erasure, str]]) -> None:
        if not restores:
            return
        try:
            async with store.client.pipeline(transaction=False) as pipe:
                for erasure, marker_epoch in restores:
                    call = restore_call(store.keys, erasure, marker_epoch)
                    pipe.eval(call.script, *call.eval_args())
                    cohorts = filter(None, map(KeySpace.parse_stats_field, erasure.revisions))
                    for command in forget_commands(store.keys, erasure.user, cohorts):
                        pipe.execute_command(*command)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise failure(store.url, exc) from exc


async def _listed(store: AsyncStatsStore, users: list[int]) -> None:
    """List these learners among the erased ones (``{prefix}:erasures``)."""
    try:
        await store.client.sadd(store.keys.erasures(), *users)
    except REDIS_ERRORS as exc:
        raise failure(store.url, exc) from exc


async def _markers(store: AsyncStatsStore, users: list[int]) -> list[bytes | None]:
    return await store.values([store.keys.erased(user) for user in users])


def _marker(user: int, value: bytes | None) -> Erasure | None:
    """The erasure a learner's marker holds; one under way, with no revisions, for a
    marker that cannot be read (its epoch is what the compare-and-set compares)."""
    if not value:
        return None
    found = decode_marker(value)
    if found is not None:
        return found
    logger.error(
        "the erasure marker of user %d cannot be read; holding back the learner's attempts "
        "until they are erased again (perf-engine erase)",
        user,
    )
    epoch = value[:EPOCH_LENGTH].decode("ascii", "replace")
    return Erasure(user_id=str(user), epoch=epoch, erased_at="", erased_at_ms=0)


def _decode(value: bytes | None) -> Erasure | None:
    if value is None:
        return None
    try:
        return decode_erasure(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        logger.error("an unreadable erasure record, skipped: %s", exc)
        return None
