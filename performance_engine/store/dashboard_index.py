"""The dashboard's index in Redis: who is in which cohort, in which order.

A cohort is a (sub-topic, learning mode). For each one, a sorted set of user ids per
order (:data:`ORDERS`), so that a page of a cohort is one ``ZRANGE`` and the stats of its
learners one ``MGET``, whatever the cohort's size; for each learner, the set of their
cohorts. The index is written from the stats events only (the dashboard's feed,
``worker/dashboard/feed.py``), idempotently: the score of a learner is a function of their
latest stats; an erasure takes the learner out (:func:`forget_commands`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from performance_engine.errors import DatabaseQueryError
from performance_engine.store.failures import REDIS_ERRORS
from performance_engine.store.keyspace import KeySpace

__all__ = ["ORDERS", "Cohort", "DashboardIndex", "forget_commands", "scores"]

#: How a cohort can be ordered: attempts spent on difficulties not completed yet (who is
#: stuck), mastery probability (unknown: -1), all attempts.
ORDERS = ("stuck", "mastery", "attempts")


class _Learning(Protocol):
    @property
    def mastery_probability(self) -> float: ...


class Indexed(Protocol):
    """What the index reads of a scope's stats (:class:`PerformanceStatsData`, or the
    feed's lighter :class:`~performance_engine.worker.dashboard.feed.Summary`)."""

    @property
    def user_id(self) -> int: ...
    @property
    def sub_topic_id(self) -> int: ...
    @property
    def learning_mode(self) -> str: ...
    @property
    def total_attempts(self) -> int: ...
    @property
    def attempts(self) -> Mapping[Any, int]: ...
    @property
    def passed_difficulties(self) -> Sequence[Any]: ...
    @property
    def learning(self) -> _Learning | None: ...


def scores(stats: Indexed) -> dict[str, float]:
    """A learner's score in each order of their cohort."""
    completed = sum(stats.attempts[d] for d in stats.passed_difficulties)
    mastery = stats.learning.mastery_probability if stats.learning is not None else -1.0
    return {
        "stuck": float(stats.total_attempts - completed),
        "mastery": float(mastery),
        "attempts": float(stats.total_attempts),
    }


@dataclass(frozen=True, slots=True)
class Cohort:
    sub_topic_id: int
    learning_mode: str
    learners: int


def forget_commands(
    keys: KeySpace, user_id: int, cohorts: Iterable[tuple[int, str]]
) -> list[tuple[Any, ...]]:
    """The commands that take an erased learner out of the index: out of every order of
    each of their cohorts, and their own set of cohorts."""
    member = str(user_id)
    commands: list[tuple[Any, ...]] = [
        ("ZREM", keys.dashboard("cohort", sub, mode, order), member)
        for sub, mode in cohorts
        for order in ORDERS
    ]
    commands.append(("DEL", keys.dashboard("learner", user_id)))
    return commands


def _cohort_name(sub_topic_id: int, learning_mode: str) -> str:
    return f"{sub_topic_id}:{learning_mode}"


class DashboardIndex:
    """Reads and writes the index through an asyncio Redis client."""

    def __init__(self, client: Any, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys

    async def add(self, updates: Sequence[Indexed]) -> None:
        """Index the latest stats of some scopes (a learner's scores are replaced)."""
        if not updates:
            return
        keys = self.keys
        try:
            by_cohort: dict[tuple[int, str], list[Indexed]] = {}
            for stats in updates:
                by_cohort.setdefault((stats.sub_topic_id, stats.learning_mode), []).append(stats)
            async with self.client.pipeline(transaction=False) as pipe:
                names = [_cohort_name(sub, mode) for sub, mode in by_cohort]
                pipe.sadd(keys.dashboard("cohorts"), *names)
                for (sub, mode), members in by_cohort.items():
                    cohort = _cohort_name(sub, mode)
                    ranked = [(str(stats.user_id), scores(stats)) for stats in members]
                    for order in ORDERS:  # one ZADD per cohort and order
                        key = keys.dashboard("cohort", sub, mode, order)
                        pipe.zadd(key, {user: score[order] for user, score in ranked})
                    for stats in members:
                        pipe.sadd(keys.dashboard("learner", stats.user_id), cohort)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise DatabaseQueryError(f"updating the dashboard's index failed: {exc}") from exc

    async def cohorts(self) -> list[Cohort]:
        """Every cohort, with how many learners it has, by sub-topic then mode."""
        try:
            names = sorted(
                (int(sub), mode)
                for sub, _, mode in (
                    raw.decode().partition(":")
                    for raw in await self.client.smembers(self.keys.dashboard("cohorts"))
                )
            )
            async with self.client.pipeline(transaction=False) as pipe:
                for sub, mode in names:
                    pipe.zcard(self.keys.dashboard("cohort", sub, mode, ORDERS[0]))
                sizes = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise DatabaseQueryError(f"reading the dashboard's cohorts failed: {exc}") from exc
        return [Cohort(sub, mode, int(n)) for (sub, mode), n in zip(names, sizes, strict=True)]

    async def page(
        self,
        sub_topic_id: int,
        learning_mode: str,
        order: str,
        *,
        descending: bool,
        offset: int,
        limit: int,
    ) -> tuple[int, list[int]]:
        """(learners in the cohort, the user ids of one page of it in ``order``)."""
        key = self.keys.dashboard("cohort", sub_topic_id, learning_mode, order)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zcard(key)
                pipe.zrange(key, offset, offset + limit - 1, desc=descending)
                total, members = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise DatabaseQueryError(f"reading a cohort failed: {exc}") from exc
        return int(total), [int(m) for m in members]

    async def forget(self, user_id: int, cohorts: Iterable[tuple[int, str]] = ()) -> None:
        """Take an erased learner out of the index (the cohorts named, and those the
        index holds for them)."""
        try:
            known = await self.learner_cohorts(user_id)
            async with self.client.pipeline(transaction=False) as pipe:
                for command in forget_commands(self.keys, user_id, {*known, *cohorts}):
                    pipe.execute_command(*command)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise DatabaseQueryError(f"updating the dashboard's index failed: {exc}") from exc

    async def learner_cohorts(self, user_id: int) -> list[tuple[int, str]]:
        """The (sub-topic, learning mode) of each scope of a learner, in order."""
        try:
            raw = await self.client.smembers(self.keys.dashboard("learner", user_id))
        except REDIS_ERRORS as exc:
            raise DatabaseQueryError(f"reading a learner's cohorts failed: {exc}") from exc
        pairs = (m.decode().partition(":") for m in raw)
        return sorted((int(sub), mode) for sub, _, mode in pairs)

    async def followed(self) -> bool:
        """Whether the index has read the stats topic from its start once."""
        try:
            return bool(await self.client.exists(self.keys.dashboard("followed")))
        except REDIS_ERRORS as exc:
            raise DatabaseQueryError(f"reading the dashboard's index failed: {exc}") from exc

    async def mark_followed(self) -> None:
        try:
            await self.client.set(self.keys.dashboard("followed"), b"1")
        except REDIS_ERRORS as exc:
            raise DatabaseQueryError(f"writing the dashboard's index failed: {exc}") from exc
