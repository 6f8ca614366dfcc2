"""How far Redis's state really reaches in the attempts topic: the position ledger.

Committed offsets live in Kafka, state in Redis. Redis can forget what it acknowledged
(a failover to a replica that lagged, a restored snapshot, ``FLUSHDB``, a restart without
persistence); the offsets would then point past attempts whose effect is gone. So after
each batch's state writes, and before its offsets are committed, the worker records in
Redis the next offset of every partition of the batch: the ledger, one hash,
``{prefix}:{stream}:positions`` (field ``<topic>:<partition>``, and ``created``, when the
ledger was first written). Written after the state on the same master, it reaches a
replica (or a snapshot) only behind the state it covers.

The worker compares the ledger with the committed offsets whenever it is assigned
partitions, with what it last wrote itself before every write (:meth:`Ledger.record`
refuses if the ledger changed underneath) and on a timer. :func:`judge` decides what a
difference means: resume a partition from where Redis's state ends (the per-attempt
dedupe makes the replay harmless), or, when the attempts needed are no longer in the
topic, refuse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from performance_engine.errors import DatabaseQueryError, PerformanceEngineError
from performance_engine.store.failures import REDIS_ERRORS, failure_hint
from performance_engine.store.stats_store import AsyncStatsStore

__all__ = ["Judgement", "Ledger", "ReplicasMissing", "StateLost", "judge", "parse_ledger"]

logger = logging.getLogger(__name__)

#: KEYS[1] the ledger; ARGV[1] the time it is created at, then (field, expected, new)
#: triples, '' for "none". Refuses (returns the field and what it holds) unless every field
#: holds what the worker expects, or already the new value (the same batch, retried).
RECORD = """
for i = 2, #ARGV, 3 do
  local current = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  if current ~= ARGV[i + 1] and current ~= ARGV[i + 2] then
    return {ARGV[i], current}
  end
end
for i = 2, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
end
redis.call('HSETNX', KEYS[1], 'created', ARGV[1])
return false
"""


class StateLost(PerformanceEngineError):
    """The ledger no longer holds what this worker wrote: Redis lost state."""

    def __init__(self, partition: int, expected: int | None, found: int | None) -> None:
        self.partition, self.expected, self.found = partition, expected, found
        super().__init__(
            f"Redis's position for partition {partition} is {_text(found)}, not the "
            f"{_text(expected)} this worker wrote: Redis lost state"
        )


class ReplicasMissing(DatabaseQueryError):
    """Fewer replicas than asked acknowledged a batch's writes in time."""


def _failed(what: str, exc: Exception) -> DatabaseQueryError:
    """A ledger call's Redis failure, with the advice a refused state write gives too."""
    return DatabaseQueryError(f"{what}: {exc}; {failure_hint(exc)}")


def _text(offset: int | None) -> str:
    return "missing" if offset is None else str(offset)


@dataclass(frozen=True, slots=True)
class Judgement:
    """What to do about the difference between Redis's positions and the committed ones."""

    #: Partitions whose state in Redis ends before their committed offset: where to resume.
    resume: dict[int, int] = field(default_factory=dict)
    #: Partitions where Redis lost attempts the topic no longer holds (its retention
    #: deleted them): the offsets from where Redis's state ends to the topic's earliest
    #: offset, as (first, last + 1).
    gaps: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: Where each partition with a gap resumes if the gap is accepted: the topic's
    #: earliest offset.
    past_gaps: dict[int, int] = field(default_factory=dict)
    #: The ledger is missing but the state is there: a Redis written by a release without
    #: a ledger; its state is taken to reach the committed offsets.
    adopted: bool = False


def judge(
    ledger: Mapping[int, int] | None,
    committed: Mapping[int, int | None],
    earliest: Mapping[int, int],
    *,
    has_state: bool,
    lost: bool = False,
) -> Judgement:
    """Compare the ledger (None: there is none) with the committed offsets, given the
    earliest offset the topic still holds in each partition.

    A partition without a committed offset has nothing to compare (a new group reads from
    the topic's start). One missing from an existing ledger, or every partition when
    there is no ledger and no state, has state reaching offset 0. ``lost`` (the worker
    saw the ledger change under it) rules out taking a missing ledger for an old release's
    Redis.
    """
    if ledger is None and has_state and not lost:
        return Judgement(adopted=True)
    positions = ledger or {}
    resume: dict[int, int] = {}
    gaps: dict[int, tuple[int, int]] = {}
    past_gaps: dict[int, int] = {}
    for partition, offset in committed.items():
        if offset is None:
            continue
        reach = positions.get(partition, 0)
        if reach >= offset:
            continue
        start = earliest.get(partition, 0)
        if reach < start:
            gaps[partition] = (reach, start)
            past_gaps[partition] = start
        else:
            resume[partition] = reach
    return Judgement(resume, gaps, past_gaps)


def parse_ledger(raw: Mapping[bytes, bytes], topic: str) -> dict[int, int] | None:
    """A ledger hash as read (HGETALL) to the positions of ``topic``; None if empty."""
    if not raw:
        return None
    prefix = f"{topic}:".encode()
    return {
        int(name[len(prefix) :]): int(value)
        for name, value in raw.items()
        if name.startswith(prefix) and name[len(prefix) :].isdigit()
    }


class Ledger:
    """The positions ledger of one attempts topic, as this worker knows it."""

    def __init__(
        self,
        store: AsyncStatsStore,
        topic: str,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.client = store.client
        self.url = store.url
        self.key = store.keys.positions()
        self.scope_pattern = store.keys.scope_pattern()
        self.topic = topic
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        #: Per partition, the position this worker last read or wrote (None: none).
        self.known: dict[int, int | None] = {}

    def _field(self, partition: int) -> str:
        return f"{self.topic}:{partition}"

    async def read(self) -> dict[int, int] | None:
        """The ledger's positions for this topic; None when there is no ledger at all."""
        try:
            raw: dict[bytes, bytes] = await self.client.hgetall(self.key)
        except REDIS_ERRORS as exc:
            raise _failed("reading the positions ledger failed", exc) from exc
        return parse_ledger(raw, self.topic)

    async def has_state(self) -> bool:
        """Whether Redis holds any scope of this key prefix."""
        try:
            async for _ in self.client.scan_iter(match=self.scope_pattern, count=1000):
                return True
        except REDIS_ERRORS as exc:
            raise _failed("looking for stored state failed", exc) from exc
        return False

    async def record(self, ends: Mapping[int, int]) -> None:
        """Record the next offset of each partition, after the batch's state writes; raises
        :class:`StateLost` if the ledger does not hold what this worker last wrote, and
        :class:`ReplicasMissing` if replicas were asked for and did not all acknowledge."""
        known = self.known
        argv: list[Any] = [datetime.now(UTC).isoformat(timespec="seconds")]
        for partition, end in ends.items():
            expected = known.get(partition)
            argv += [self._field(partition), "" if expected is None else str(expected), str(end)]
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.eval(RECORD, 1, self.key, *argv)
                if self.wait_replicas:
                    pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise _failed("recording the batch's positions failed", exc) from exc
        refused = replies[0]
        if refused:
            name, found = refused
            partition = int(name.decode().rsplit(":", 1)[1])
            raise StateLost(partition, known.get(partition), int(found) if found else None)
        known.update(ends)
        if self.wait_replicas and int(replies[1]) < self.wait_replicas:
            raise ReplicasMissing(
                f"{int(replies[1])} of {self.wait_replicas} Redis replicas acknowledged the "
                f"batch within {self.wait_timeout_ms} ms (PERF_ENGINE_REDIS_WAIT_REPLICAS); "
                "its offsets wait until they do"
            )
