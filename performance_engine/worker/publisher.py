"""Publishing a batch of records with aiokafka's batch API (one append per record).

The per-record ``send`` of a producer costs a future and a task hop per record; here the
records of a batch are grouped by partition, packed into as few record batches as their
size allows, and sent with ``send_batch``. Partitions are chosen by the XXH3 hash of the
key (deterministic, so a scope's events keep their order in one partition).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from performance_engine.events import partition_index

__all__ = ["BatchPublisher", "OutRecord"]

#: (key, value, headers) of one record to publish.
OutRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


class BatchPublisher:
    """Sends records through an (already started) ``AIOKafkaProducer``."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._next = 0

    async def _partitions_of(self, topic: str) -> list[int]:
        found = self._partitions.get(topic)
        if found is None:
            found = self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        return found

    async def publish(self, topic: str, records: Sequence[OutRecord]) -> None:
        """Send every record and wait until the broker acknowledged all of them."""
        if not records:
            return
        partitions = await self._partitions_of(topic)
        count = len(partitions)
        grouped: dict[int, list[OutRecord]] = {}
        for record in records:
            key = record[0]
            if key is None:
                self._next += 1
                index = self._next % count
            else:
                index = partition_index(key, count)
            grouped.setdefault(partitions[index], []).append(record)
        producer = self.producer
        pending = []
        for partition, items in grouped.items():
            batch = producer.create_batch()
            for key, value, headers in items:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise ValueError(
                            f"a record of {len(value or b'')} bytes exceeds the "
                            "producer's batch size"
                        )
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
