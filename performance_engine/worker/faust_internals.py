"""Everything the engine does with Faust's private consumer API, in one place.

Faust delivers records one event at a time through its stream machinery (one task hop
per event, the ceiling of a Faust agent). The engine keeps Faust for what it does well -
the process, the consumer group and its rebalances, the producer, the web server - and
takes each fetched batch of the attempts topic whole instead. That needs Faust's private
API: the consumer's drain loop and offsets, and the consumer thread's aiokafka consumer.
Those names can change in any Faust release, so

- this module is the only one that touches them (the rest of the worker uses
  :class:`BatchingApp`, :func:`next_offset` and :func:`aiokafka_producer`);
- ``pyproject.toml`` accepts only the Faust versions it was written against
  (:data:`SUPPORTED_FAUST`);
- :func:`require_faust_internals` checks, when the app is built and when its consumer is,
  that every name in :data:`RELIED_ON` is there, and fails with one line naming what is
  missing (a test runs it against the installed Faust).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib.metadata import version
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.transport.drivers.aiokafka import Producer as AIOKafkaFaustProducer
from faust.types import TP, ConsumerT

from performance_engine.errors import ConfigurationError

__all__ = [
    "RELIED_ON",
    "SUPPORTED_FAUST",
    "BatchingApp",
    "aiokafka_producer",
    "committed_offsets",
    "missing_internals",
    "next_offset",
    "require_faust_internals",
]

#: The faust-streaming versions this module was written and tested against.
SUPPORTED_FAUST = ">=0.11,<0.16"

#: Records in, True when they are durable (commit them), False when the batch was given up
#: (its records are delivered again).
BatchHandler = Callable[[Sequence[Any]], Awaitable[bool]]

#: The private names this module uses: on each class, and on each instance of it (set in
#: its ``__init__``, so only a built object can be checked).
RELIED_ON: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "faust App": (faust.App, ("_new_consumer",), ()),
    "faust aiokafka Consumer": (
        AIOKafkaFaustConsumer,
        ("_drain_messages", "_wait_next_records", "_commit_offsets", "_to_message"),
        ("_read_offset", "_buffered_partitions", "_stopped", "_thread"),
    ),
    "faust AIOKafkaConsumerThread": (
        AIOKafkaConsumerThread,
        ("_create_worker_consumer", "_ensure_consumer"),
        (),
    ),
    "faust aiokafka Producer": (AIOKafkaFaustProducer, ("_ensure_producer",), ()),
    "aiokafka AIOKafkaConsumer": (AIOKafkaConsumer, (), ("_fetch_max_wait_ms",)),
}


def missing_internals(
    relied_on: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]],
    built: Iterable[object] = (),
) -> list[str]:
    """The relied-on names that are not there: class attributes of each class, and
    instance attributes of each object in ``built`` that is an instance of it."""
    missing = []
    objects = list(built)
    for label, (owner, class_names, instance_names) in relied_on.items():
        missing += [f"{label}.{name}" for name in class_names if not hasattr(owner, name)]
        for obj in objects:
            if isinstance(obj, owner):
                missing += [f"{label}.{n}" for n in instance_names if not hasattr(obj, n)]
    return missing


def require_faust_internals(*built: object) -> None:
    """Raise ConfigurationError, naming what is missing, unless every relied-on private
    name is there (classes always; instance attributes of the objects given)."""
    missing = missing_internals(RELIED_ON, built)
    if missing:
        raise ConfigurationError(
            f"faust-streaming {version('faust-streaming')} lacks {', '.join(missing)}, which "
            f"the worker's batch consumer relies on; install faust-streaming{SUPPORTED_FAUST}"
        )


class _BatchConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with a fetch wait the engine chooses.

    Faust fixes aiokafka's ``fetch_max_wait_ms`` at 1.5 s; a broker that holds a fetch
    that long before answering adds as much to every attempt's latency at low rates.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        require_faust_internals(consumer)
        consumer._fetch_max_wait_ms = cast(BatchingApp, self.app).fetch_max_wait_ms
        return consumer


class _BatchConsumer(AIOKafkaFaustConsumer):
    """Faust's aiokafka consumer, delivering the app's batch topic a batch at a time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        require_faust_internals(self)

    def _new_consumer_thread(self) -> _BatchConsumerThread:
        return _BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        app = cast(BatchingApp, self.app)
        topic = app.batch_topic
        read_offset = self._read_offset
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        while not (consumer_stopped() or fetcher_stopped()):
            records, active = await self._wait_next_records(1.0)
            if not records or self.should_stop:
                continue
            batch: list[Any] = []
            ends: dict[TP, int] = {}
            for tp, fetched in records.items():
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    continue  # paused, e.g. while a rebalance is under way
                start = read_offset[tp]
                fresh = fetched if start is None else [r for r in fetched if r.offset >= start]
                if not fresh:
                    continue
                if tp.topic != topic:  # Faust's own topics take Faust's usual path
                    for record in fresh:
                        await self.callback(self._to_message(tp, record))
                    read_offset[tp] = fresh[-1].offset + 1
                    continue
                batch.extend(fresh)
                ends[tp] = fresh[-1].offset + 1
            if not batch:
                continue
            await app.batch_ready.wait()  # Faust starts services after the first assignment
            handler = app.batch_handler
            assert handler is not None
            if not await handler(batch):
                continue  # given up: read again from the same offsets
            for tp, end in ends.items():
                read_offset[tp] = end
            await self._commit_offsets(ends)


class BatchingApp(faust.App):
    """A Faust app whose consumer hands one topic (``batch_topic``) over a batch at a
    time to ``batch_handler``, once ``batch_ready`` is set, and commits a batch's offsets
    when the handler says it is durable. Other topics take Faust's usual path."""

    batch_topic: str
    fetch_max_wait_ms: int
    batch_handler: BatchHandler | None = None

    @property
    def batch_ready(self) -> asyncio.Event:
        event: asyncio.Event | None = self.__dict__.get("_batch_ready")
        if event is None:
            event = self.__dict__["_batch_ready"] = asyncio.Event()
        return event

    def _new_consumer(self) -> ConsumerT:
        return _BatchConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
        )


def next_offset(consumer: ConsumerT, tp: TP) -> int | None:
    """The next offset the batch consumer will hand over for ``tp`` (None: not known)."""
    offset: int | None = cast(_BatchConsumer, consumer)._read_offset.get(tp)
    return offset


async def committed_offsets(consumer: ConsumerT, tps: Iterable[TP]) -> dict[TP, int | None]:
    """The group's committed offset of each partition (None: none), asked of the broker by
    the consumer thread's aiokafka consumer."""
    thread = cast(_BatchConsumer, consumer)._thread
    wanted = list(tps)

    async def read() -> dict[TP, int | None]:
        aio = thread._ensure_consumer()
        return {tp: await aio.committed(TopicPartition(tp.topic, tp.partition)) for tp in wanted}

    found: dict[TP, int | None] = await thread.call_thread(read)
    return found


def aiokafka_producer(app: faust.App) -> Any:
    """The aiokafka producer under Faust's, started (the engine sends batches with it)."""
    return cast(Any, app.producer)._ensure_producer()
