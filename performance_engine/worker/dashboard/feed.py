"""The dashboard's own consumer of the ``stats-updated`` topic.

Off the worker's hot path: an aiokafka consumer without a group (every worker's dashboard
sees every update), started with the worker. For each batch of events it

- updates the index in Redis (:mod:`performance_engine.store.dashboard_index`;
  idempotent, so several workers may); a tombstone (an erased learner's scope) takes the
  learner out of it, and out of what the feed keeps in memory;
- keeps the recent points (time, mastery, accuracy) of the scopes it saw most recently,
  for the learner page's chart (a bounded LRU in memory);
- hands the updates to the live streams of the browsers watching (bounded queues: a slow
  browser loses updates, never the worker's memory), and an :class:`Erased` notice when a
  learner's tombstones arrive (never lost: it takes the place of an older update).

The first time (the index has never followed the topic) it reads the topic from its start
so that the index holds every learner with stats; afterwards from the end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer

from performance_engine.connections import aiokafka_options
from performance_engine.errors import DatabaseQueryError
from performance_engine.events import parse_scope
from performance_engine.metrics.types import ScopeKey
from performance_engine.settings import Settings
from performance_engine.store.dashboard_index import DashboardIndex

__all__ = ["Point", "StatsFeed", "Summary", "Update"]

logger = logging.getLogger(__name__)

#: Scopes whose recent points are kept, and points per scope.
HISTORY_SCOPES = 10_000
HISTORY_POINTS = 60
_FIELDS = 4  # of a Point
#: Updates a browser's live stream may have waiting before it misses some.
STREAM_BACKLOG = 500
#: Stats updates the feed takes per second at most: while the worker keeps up, and while it
#: is behind (then the feed yields: a fortieth of the worker's rate costs it about 2% of
#: a core; it falls behind meanwhile and catches up when the load eases).
PACE = 10_000
PACE_WHILE_BUSY = 500


class Point(msgspec.Struct, array_like=True, frozen=True):
    """One update of a scope on its chart: epoch seconds, mastery (or None), accuracy."""

    at: float
    mastery: float | None
    accuracy: float | None
    version: int


class Update(msgspec.Struct, frozen=True):
    """What the live stream and the overview show of one stats update."""

    user_id: int
    sub_topic_id: int
    learning_mode: str
    version: int
    total_attempts: int
    passed: list[str]
    mastery: float | None
    accuracy: float | None
    updated_at: str
    attempt_id: str


class _Learning(msgspec.Struct):
    mastery_probability: float


class Summary(msgspec.Struct):
    """What the dashboard reads of a stats event's stats (the rest of the JSON is skipped
    while decoding: a full :class:`PerformanceStatsData` costs several times more)."""

    user_id: int
    sub_topic_id: int
    learning_mode: str
    version: int
    total_attempts: int
    total_correct_attempts: int
    attempts: dict[str, int]
    passed_difficulties: list[str]
    learning: _Learning | None = None
    revision: int = 0

    @property
    def scope_key(self) -> ScopeKey:
        return ScopeKey(self.user_id, self.sub_topic_id, self.learning_mode)


class _Source(msgspec.Struct):
    attempt_id: str


class _Event(msgspec.Struct):
    stats: Summary
    updated_at: str
    source: _Source


_decode_event = msgspec.json.Decoder(_Event).decode


def update_of(event: _Event) -> Update:
    stats = event.stats
    total = stats.total_attempts
    return Update(
        stats.user_id,
        stats.sub_topic_id,
        stats.learning_mode,
        stats.version,
        total,
        stats.passed_difficulties,
        stats.learning.mastery_probability if stats.learning is not None else None,
        round(stats.total_correct_attempts / total, 4) if total else None,
        event.updated_at,
        event.source.attempt_id,
    )


@dataclass(frozen=True)
class Erased:
    """A learner was erased: the tombstones of these scopes of theirs arrived."""

    user_id: int
    scopes: tuple[ScopeKey, ...]


Notice = Update | Erased


@dataclass
class _Listener:
    queue: asyncio.Queue[Notice]
    user_id: int | None


class StatsFeed:
    """Follows the stats topic for the dashboard (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        index: DashboardIndex,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        """``busy()`` says whether the worker is behind (the feed then slows down)."""
        self.settings = settings
        self.index = index
        self.busy = busy
        self.recent: deque[Update] = deque(maxlen=50)
        # Per scope its points flattened into doubles (time, mastery, accuracy, version;
        # NaN for None): a third of the memory of Point objects in a deque.
        self._history: OrderedDict[ScopeKey, array[float]] = OrderedDict()
        self._listeners: list[_Listener] = []
        self._seen: deque[tuple[float, int]] = deque(maxlen=120)
        self.updates = 0
        self.ready = asyncio.Event()

    # -- what the views read ---------------------------------------------------------

    def history(self, scope: ScopeKey) -> list[Point]:
        flat = self._history.get(scope, array("d"))
        return [
            Point(at, _number(mastery), _number(accuracy), int(version))
            for at, mastery, accuracy, version in zip(*(iter(flat),) * _FIELDS, strict=True)
        ]

    def listen(self, user_id: int | None = None) -> asyncio.Queue[Notice]:
        """A queue of the updates (of one learner, or of all) and erasures to stream."""
        queue: asyncio.Queue[Notice] = asyncio.Queue(STREAM_BACKLOG)
        self._listeners.append(_Listener(queue, user_id))
        return queue

    def stop_listening(self, queue: asyncio.Queue[Notice]) -> None:
        self._listeners = [each for each in self._listeners if each.queue is not queue]

    def updates_per_second(self, window: float = 5.0) -> float:
        """Stats updates read per second over the last ``window`` seconds."""
        now = time.monotonic()
        recent = [(t, n) for t, n in self._seen if now - t <= window]
        if len(recent) < 2:
            return 0.0
        (t0, n0), (t1, n1) = recent[0], recent[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    # -- following the topic ---------------------------------------------------------

    async def run(self, stopped: Callable[[], bool]) -> None:
        """Follow the topic until ``stopped()``; Kafka and Redis trouble is waited out."""
        settings = self.settings
        consumer = AIOKafkaConsumer(
            settings.stats_topic,
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            max_partition_fetch_bytes=1 << 18,
            fetch_max_bytes=1 << 20,
            fetch_max_wait_ms=100,
            **aiokafka_options(settings),
        )
        await consumer.start()
        try:
            catching_up = not await self._followed()
            if catching_up:
                while not consumer.assignment():
                    await consumer.getmany(timeout_ms=100)
                await consumer.seek_to_beginning()
            self.ready.set()
            while not stopped():
                pace = PACE_WHILE_BUSY if self.busy() else PACE
                began = time.monotonic()
                batches = await consumer.getmany(timeout_ms=500, max_records=max(pace // 10, 1))
                records = [record for found in batches.values() for record in found]
                erased = [parse_scope(r.key) for r in records if r.value is None]
                if erased:
                    await self._forget([scope for scope in erased if scope is not None])
                events = [_decode_event(r.value) for r in records if r.value is not None]
                await self._take(events)
                rest = len(events) / pace - (time.monotonic() - began)
                if rest > 0:
                    await asyncio.sleep(rest)
                if catching_up and await self._at_end(consumer):
                    await self._retry(self.index.mark_followed)
                    catching_up = False
        finally:
            await consumer.stop()

    async def _followed(self) -> bool:
        result: bool = await self._retry(self.index.followed)
        return result

    @staticmethod
    async def _at_end(consumer: AIOKafkaConsumer) -> bool:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None or await consumer.position(tp) < high:
                return False
        return True

    async def _take(self, events: list[_Event]) -> None:
        now = time.time()
        if events:
            latest: dict[ScopeKey, Summary] = {}
            for event in events:  # a scope's newest only
                known = latest.get(event.stats.scope_key)
                if known is None or known.revision < event.stats.revision:
                    latest[event.stats.scope_key] = event.stats
            await self._retry(lambda: self.index.add(list(latest.values())))
        for event in events:
            update = update_of(event)
            self.recent.append(update)
            self._remember(
                event.stats.scope_key, Point(now, update.mastery, update.accuracy, update.version)
            )
            for listener in self._watching(update.user_id):
                if listener.queue.full():
                    continue  # this browser is behind: it misses this update
                listener.queue.put_nowait(update)
        self.updates += len(events)
        self._seen.append((time.monotonic(), self.updates))

    async def _forget(self, scopes: list[ScopeKey]) -> None:
        """Tombstones: the learners were erased; forget their scopes everywhere, and tell
        the browsers watching them."""
        by_user: dict[int, list[ScopeKey]] = {}
        for scope in scopes:
            by_user.setdefault(scope.user_id, []).append(scope)
            self._history.pop(scope, None)
        kept = [update for update in self.recent if update.user_id not in by_user]
        self.recent.clear()
        self.recent.extend(kept)
        for user, erased in by_user.items():
            cohorts = [(scope.sub_topic_id, scope.learning_mode) for scope in erased]
            await self._retry(partial(self.index.forget, user, cohorts))
            notice = Erased(user, tuple(erased))
            for listener in self._watching(user):
                if listener.queue.full():
                    listener.queue.get_nowait()  # an older update makes room
                listener.queue.put_nowait(notice)

    def _watching(self, user_id: int) -> Iterator[_Listener]:
        """The listeners of this learner's updates: theirs, and every learner's."""
        return (each for each in self._listeners if each.user_id in (None, user_id))

    def _remember(self, scope: ScopeKey, point: Point) -> None:
        flat = self._history.get(scope)
        if flat is None:
            flat = self._history[scope] = array("d")
            while len(self._history) > HISTORY_SCOPES:
                self._history.popitem(last=False)
        else:
            self._history.move_to_end(scope)
        if flat and flat[-1] > point.version:
            return  # older than what the chart shows
        if flat and flat[-1] == point.version:
            del flat[-_FIELDS:]  # the same attempts, stats of a newer revision (a refold)
        flat.extend((point.at, _nan_if_none(point.mastery), _nan_if_none(point.accuracy)))
        flat.append(point.version)
        if len(flat) > HISTORY_POINTS * _FIELDS:
            del flat[:_FIELDS]

    @staticmethod
    async def _retry(action: Callable[[], Any]) -> Any:
        delay = 0.5
        while True:
            try:
                return await action()
            except DatabaseQueryError as exc:
                logger.warning("the dashboard's index: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value
