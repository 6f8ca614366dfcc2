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

The next-answer prediction (SPEC 3.3), with the learning parameters in force (a set
published to Redis, else ``PERF_ENGINE_LEARNING_PARAMS``, else the modes')::

    found = PerformanceStats.predict(123, 456, "standard", question_id=77, difficulty="hard")
    found.p, found.params_version, found.version
"""

from __future__ import annotations

import threading

from performance_engine.errors import UserAttemptsNotFoundError
from performance_engine.metrics.attempt import scope_key
from performance_engine.metrics.types import (
    DifficultyEnum,
    LearningModeType,
    PerformanceStatsData,
    ScopeKey,
)
from performance_engine.settings import Settings, load_settings
from performance_engine.store.params import reading_follower
from performance_engine.store.predictions import Prediction, predict, predict_async
from performance_engine.store.stats_store import AsyncStatsStore, StatsStore

__all__ = ["AsyncPerformanceStats", "PerformanceStats", "Prediction", "scope_key"]

_stores: dict[Settings, StatsStore] = {}
_stores_lock = threading.Lock()
_predict_lock = threading.Lock()


def _unknown(scope: ScopeKey) -> UserAttemptsNotFoundError:
    return UserAttemptsNotFoundError(
        f"the learning values of {scope} are unknown until its history is rebuilt "
        "(perf-engine backfill with the platform's history)"
    )


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

    @classmethod
    def predict(
        cls,
        user_id: int,
        sub_topic_id: int,
        learning_mode: LearningModeType | str,
        question_id: int,
        difficulty: DifficultyEnum | str,
        *,
        settings: Settings | None = None,
        store: StatsStore | None = None,
    ) -> Prediction:
        """P(the scope's next answer, to ``question_id`` at ``difficulty``, is right).

        A scope with no attempts gets the prior's prediction; a question the fit never saw,
        its sub-topic's and difficulty's. InvalidScopeError for a malformed id, an unknown
        mode or difficulty; UserAttemptsNotFoundError while the scope's learning values
        are unknown."""
        scope = scope_key(user_id, sub_topic_id, learning_mode)
        settings = settings or load_settings()
        if store is None:
            store = _shared_store(settings)
        follower = reading_follower(settings)
        with _predict_lock:  # a refresh may swap the calculator's parameters
            follower.refresh_sync(store)
            found = predict(store, follower.calculator, scope, question_id, difficulty)
        if found is None:
            raise _unknown(scope)
        return found


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

    @classmethod
    async def predict(
        cls,
        user_id: int,
        sub_topic_id: int,
        learning_mode: LearningModeType | str,
        question_id: int,
        difficulty: DifficultyEnum | str,
        *,
        settings: Settings | None = None,
        store: AsyncStatsStore | None = None,
    ) -> Prediction:
        """See :meth:`PerformanceStats.predict`."""
        scope = scope_key(user_id, sub_topic_id, learning_mode)
        settings = settings or load_settings()
        if store is None:
            async with AsyncStatsStore.from_settings(settings) as own:
                return await cls.predict(
                    user_id,
                    sub_topic_id,
                    learning_mode,
                    question_id,
                    difficulty,
                    settings=settings,
                    store=own,
                )
        follower = reading_follower(settings)
        await follower.refresh(store)
        found = await predict_async(store, follower.calculator, scope, question_id, difficulty)
        if found is None:
            raise _unknown(scope)
        return found

    async def __call__(self) -> PerformanceStatsData:
        if self._store is not None:
            return await self._store.stats(self.scope)
        async with AsyncStatsStore.from_settings(self._settings or load_settings()) as store:
            return await store.stats(self.scope)
