"""The platform's subscriber: ``stats-updated`` events as they happen (kafka-python).

::

    from performance_engine import StatsSubscriber

    with StatsSubscriber(group_id="dashboard", start="latest") as updates:
        for stats in updates:                       # PerformanceStatsData, forever
            print(stats.user_id, stats.passed_difficulties)

``events()`` yields the whole event (``event_id``, ``updated_at``, ``source``) and can stop
after a timeout. An erased learner's scopes end with a tombstone (key = the scope, value
null): the subscriber calls ``on_erased(scope)`` for each, so that the platform drops
what it kept of them, and yields nothing for it. With ``drop_duplicates`` (the default) an
``event_id`` seen before is skipped (the engine may publish a revision again after a
redelivery); with ``skip_stale`` an event older than the newest revision already seen for
its scope is skipped too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Literal

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from performance_engine.broker import broker_failed, require_broker
from performance_engine.connections import kafka_python_options
from performance_engine.events import StatsUpdated, decode_stats_event, parse_scope
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey
from performance_engine.settings import Settings, load_settings

__all__ = ["StatsSubscriber"]

#: Event ids remembered for duplicate detection (the oldest are forgotten first).
SEEN_IDS = 100_000


class StatsSubscriber:
    """Iterates the ``stats-updated`` topic."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        group_id: str | None = None,
        start: Literal["earliest", "latest"] = "latest",
        drop_duplicates: bool = True,
        skip_stale: bool = False,
        poll_timeout: float = 0.5,
        on_erased: Callable[[ScopeKey], None] | None = None,
        **kafka_options: Any,
    ) -> None:
        self.settings = settings or load_settings()
        self.on_erased = on_erased
        #: Tombstones seen (scopes of erased learners).
        self.erased = 0
        self.drop_duplicates = drop_duplicates
        self.skip_stale = skip_stale
        self.poll_timeout = poll_timeout
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._revisions: dict[ScopeKey, int] = {}
        options: dict[str, Any] = {
            "bootstrap_servers": self.settings.kafka_bootstrap.split(","),
            "group_id": group_id,
            "auto_offset_reset": start,
            "enable_auto_commit": group_id is not None,
            "bootstrap_timeout_ms": 10_000,
            **kafka_python_options(self.settings),
        }
        options.update(kafka_options)
        require_broker(self.settings)  # a clear error, before kafka-python retries for long
        try:
            self._consumer = KafkaConsumer(self.settings.stats_topic, **options)
        except KafkaError as exc:
            raise broker_failed(self.settings, exc) from exc
        self.skipped = 0

    def events(self, timeout: float | None = None) -> Iterator[StatsUpdated]:
        """Events as they arrive; ends after ``timeout`` seconds without one (None: never).

        The idle clock starts once the subscriber has partitions (joining a group takes
        a few seconds).
        """
        idle_since = time.monotonic()
        while True:
            batches = self._consumer.poll(timeout_ms=int(self.poll_timeout * 1000))
            got = False
            for records in batches.values():
                for record in records:
                    if record.value is None:
                        self._erased(record.key)
                        continue
                    event = decode_stats_event(record.value)
                    if self._wanted(event):
                        got = True
                        yield event
                    else:
                        self.skipped += 1
            if got or not self._consumer.assignment():  # still joining the group: not idle
                idle_since = time.monotonic()
            elif timeout is not None and time.monotonic() - idle_since >= timeout:
                return

    def __iter__(self) -> Iterator[PerformanceStatsData]:
        for event in self.events():
            yield event.stats

    def _erased(self, key: bytes | None) -> None:
        scope = parse_scope(key)
        if scope is None:
            return
        self.erased += 1
        if self.on_erased is not None:
            self.on_erased(scope)

    def _wanted(self, event: StatsUpdated) -> bool:
        if self.drop_duplicates:
            if event.event_id in self._seen:
                return False
            self._seen[event.event_id] = None
            if len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)
        if self.skip_stale:
            scope = event.stats.scope_key
            if event.stats.revision < self._revisions.get(scope, 0):
                return False
            self._revisions[scope] = event.stats.revision
        return True

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> StatsSubscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
