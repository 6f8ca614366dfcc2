"""The platform's read API: the latest stats of a scope, from Redis (SPEC 7).

::

    from performance_engine import PerformanceStats, LearningModeType

    stats = PerformanceStats.create_performance_stats(
        user_id=123, sub_topic_id=456, learning_mode=LearningModeType.STANDARD
    )()
    stats.passed_difficulties, stats.failed_difficulties, stats.difficulty_scores

No stats for the scope raises :class:`UserAttemptsNotFoundError`; a Redis failure raises
:class:`DatabaseQueryError` with the cause chained. :class:`AsyncPerformanceStats` is the
asyncio twin. Importing this module imports neither Faust nor Kafka.
"""

from __future__ import annotations

import threading

from performance_engine.metrics.attempt import scope_key
from performance_engine.metrics.types import LearningModeType, PerformanceStatsData, ScopeKey
from performance_engine.settings import Settings, load_settings
from performance_engine.store.stats_store import AsyncStatsStore, StatsStore

__all__ = ["AsyncPerformanceStats", "PerformanceStats", "scope_key"]

_stores: dict[Settings, StatsStore] = {}
_stores_lock = threading.Lock()


def _shared_store(settings: Settings) -> StatsStore:
    """One connection pool per settings, made on first use (never at import)."""
    with _stores_lock:
        store = _stores.get(settings)
        if store is None:
            store = _stores[settings] = StatsStore.from_settings(settings)
        return store


class PerformanceStats:
    """A callable that reads one scope's latest :class:`PerformanceStatsData`."""

    def __init__(self, scope: ScopeKey, store: StatsStore) -> None:
        self.scope = scope
        self._store = store

    @classmethod
    def create_performance_stats(
        cls,
        *,
        user_id: int,
        sub_topic_id: int,
        learning_mode: LearningModeType | str,
        settings: Settings | None = None,
        store: StatsStore | None = None,
    ) -> PerformanceStats:
        """Bind a scope; call the result to read its stats. Settings default to the env."""
        scope = scope_key(user_id, sub_topic_id, learning_mode)
        if store is None:
            store = _shared_store(settings or load_settings())
        return cls(scope, store)

    def __call__(self) -> PerformanceStatsData:
        return self._store.stats(self.scope)


class AsyncPerformanceStats:
    """The asyncio variant: ``await AsyncPerformanceStats.create_performance_stats(...)()``.

    Without a ``store``, each call opens and closes its own connection; pass a shared
    :class:`AsyncStatsStore` to reuse one pool.
    """

    def __init__(
        self, scope: ScopeKey, settings: Settings | None, store: AsyncStatsStore | None
    ) -> None:
        self.scope = scope
        self._settings = settings
        self._store = store

    @classmethod
    def create_performance_stats(
        cls,
        *,
        user_id: int,
        sub_topic_id: int,
        learning_mode: LearningModeType | str,
        settings: Settings | None = None,
        store: AsyncStatsStore | None = None,
    ) -> AsyncPerformanceStats:
        scope = scope_key(user_id, sub_topic_id, learning_mode)
        return cls(scope, settings, store)

    async def __call__(self) -> PerformanceStatsData:
        if self._store is not None:
            return await self._store.stats(self.scope)
        async with AsyncStatsStore.from_settings(self._settings or load_settings()) as store:
            return await store.stats(self.scope)
