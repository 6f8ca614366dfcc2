"""The Redis stats store: each scope's state and latest stats, sync and asyncio.

Every write is a compare-and-set on the scope's version (a Lua script, many scopes a call), so a
writer that read stale state (a zombie worker after a rebalance, a backfill racing the
stream) cannot overwrite newer state: it gets a conflict and re-reads. Writing a state
whose version is already stored, with the same content, changes nothing.
Key layout: see :mod:`performance_engine.naming`.

Commands the store sends: GET, MGET, MSETNX, EVAL (the script runs GETRANGE and SET) and
PING; the eviction check (``preflight``) adds INFO through the same client. Nothing else:
the README's ACL line grants exactly these. On a Redis Cluster
(``PERF_ENGINE_REDIS_CLUSTER``) every multi-key command holds keys of one hash slot: a
scope's key carries its learner's hash tag, so a learner's scopes travel together.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from performance_engine.connections import redis_options
from performance_engine.errors import DatabaseQueryError, UserAttemptsNotFoundError
from performance_engine.metrics.state import ScopeState, decode_state, encode_state
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey
from performance_engine.naming import KeySpace
from performance_engine.settings import Settings

__all__ = [
    "REDIS_ERRORS",
    "AsyncStatsStore",
    "ScopeWrite",
    "StatsStore",
    "StoredScope",
    "pack_scope",
    "redact_url",
    "stats_of",
    "unpack_scope",
]

# KEYS: scope keys; ARGV: two values per key: the expected 8-byte version header ('' for
# a scope not yet stored) and the new value. A key is written only if its stored header is
# the expected one. Returns the 1-based positions of the refused keys.
WRITE_SCOPES_LUA = """
local refused = {}
for i, key in ipairs(KEYS) do
  if redis.call('GETRANGE', key, 0, 7) == ARGV[2 * i - 1] then
    redis.call('SET', key, ARGV[2 * i])
  else
    refused[#refused + 1] = i
  end
end
return refused
"""
#: Scopes per script call, MSETNX or MGET: bounds how long one call holds Redis (~1 ms).
SCRIPT_BATCH = 256
_HEADER = struct.Struct(">QI")  # version, length of the state


def pack_scope(state: ScopeState, stats_json: bytes) -> bytes:
    """A scope's stored value: version and state length, the state, then the stats JSON."""
    encoded = encode_state(state)
    return _HEADER.pack(state.version, len(encoded)) + encoded + stats_json


def unpack_scope(value: bytes) -> tuple[ScopeState, bytes]:
    """The state and the stats JSON of a stored value."""
    _version, length = _HEADER.unpack_from(value)
    start = _HEADER.size
    return decode_state(value[start : start + length]), value[start + length :]


def stats_of(value: bytes) -> bytes:
    """Only the stats JSON of a stored value (the state is not decoded)."""
    _version, length = _HEADER.unpack_from(value)
    return value[_HEADER.size + length :]


def _expected_header(version: int) -> bytes:
    return version.to_bytes(8, "big") if version else b""


class StoredScope(msgspec.Struct, frozen=True, gc=False):
    """What Redis holds for a scope: its state (version inside) and latest stats JSON."""

    state: ScopeState
    stats_json: bytes


class ScopeWrite(msgspec.Struct, frozen=True, gc=False):
    """A compare-and-set write: applies only if the stored version is ``expected_version``."""

    scope: ScopeKey
    expected_version: int
    state: ScopeState
    stats_json: bytes


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


#: What a Redis client may raise (cluster routing errors are not RedisErrors).
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


def _failure(url: str, exc: Exception) -> DatabaseQueryError:
    hint = "check that it is running and that PERF_ENGINE_REDIS_URL points at it"
    if any(sign in str(exc) for sign in ("MOVED", "CROSSSLOT", "hash to the same slot")):
        hint = "it is a Redis Cluster: set PERF_ENGINE_REDIS_CLUSTER=true"
    elif "maxmemory" in str(exc):
        hint = "Redis is out of memory (maxmemory with noeviction): raise maxmemory"
    elif isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in str(exc):
        hint = "the Redis user lacks a permission: see the ACL line in the README"
    error = DatabaseQueryError(f"Redis at {redact_url(url)} failed: {exc}; {hint}")
    error.__cause__ = exc
    return error


def _groups(keys: Sequence[str], cluster: bool) -> list[list[int]]:
    """Positions of ``keys`` in groups one command may take: at most SCRIPT_BATCH keys and,
    on a cluster, keys of one hash slot only."""
    if not cluster:
        return [
            list(range(i, min(i + SCRIPT_BATCH, len(keys))))
            for i in range(0, len(keys), SCRIPT_BATCH)
        ]
    by_slot: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_slot.setdefault(key_slot(key.encode()), []).append(i)
    return [
        group[i : i + SCRIPT_BATCH]
        for group in by_slot.values()
        for i in range(0, len(group), SCRIPT_BATCH)
    ]


def _stored(value: bytes | None) -> StoredScope | None:
    if value is None:
        return None
    state, stats = unpack_scope(value)
    return StoredScope(state, stats)


def _not_found(scope: ScopeKey) -> UserAttemptsNotFoundError:
    return UserAttemptsNotFoundError(
        f"no stats for user {scope.user_id}, sub-topic {scope.sub_topic_id}, "
        f"learning mode {scope.learning_mode!r}: no attempt of that scope has been "
        "processed (check the ids and the mode, or backfill the history)"
    )


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    """MGETs for many scopes in one pipeline, and their replies put back in order."""

    keys: list[str]
    groups: list[list[int]]

    @classmethod
    def of(cls, keyspace: KeySpace, scopes: Sequence[ScopeKey], cluster: bool) -> _ReadPlan:
        keys = [keyspace.for_scope(s) for s in scopes]
        return cls(keys, _groups(keys, cluster))

    def queue(self, pipe: Any) -> None:
        for group in self.groups:
            pipe.execute_command("MGET", *[self.keys[i] for i in group])

    def outcome(self, replies: list[Any]) -> list[StoredScope | None]:
        found: list[StoredScope | None] = [None] * len(self.keys)
        for group, values in zip(self.groups, replies, strict=True):
            for i, value in zip(group, values, strict=True):
                found[i] = _stored(value)
        return found


@dataclass(frozen=True, slots=True)
class _WritePlan:
    """Compare-and-set writes for many scopes in one pipeline.

    Writes of scopes not yet stored go as ``MSETNX`` (no script: it sets all of its keys
    only if none of them exists, the compare-and-set for "not stored yet"); the others
    through the compare-and-set script. An MSETNX that finds any of its keys already
    there writes nothing; its writes are then retried through the script.
    """

    commands: list[tuple[bool, list[tuple[str, ScopeWrite]]]]  # (is MSETNX, writes)

    @classmethod
    def of(
        cls,
        keyspace: KeySpace,
        writes: Sequence[ScopeWrite],
        cluster: bool,
        *,
        script_only: bool = False,
    ) -> _WritePlan:
        commands: list[tuple[bool, list[tuple[str, ScopeWrite]]]] = []
        fresh = [] if script_only else [w for w in writes if w.expected_version == 0]
        stored = writes if script_only else [w for w in writes if w.expected_version != 0]
        for msetnx, part in ((True, fresh), (False, stored)):
            keyed = [(keyspace.for_scope(w.scope), w) for w in part]
            for group in _groups([key for key, _ in keyed], cluster):
                commands.append((msetnx, [keyed[i] for i in group]))
        return cls(commands)

    def queue(self, pipe: Any) -> None:
        for msetnx, batch in self.commands:
            if msetnx:
                args: list[Any] = []
                for key, w in batch:
                    args += (key, pack_scope(w.state, w.stats_json))
                pipe.execute_command("MSETNX", *args)
            else:
                keys = [key for key, _ in batch]
                values: list[Any] = []
                for _key, w in batch:
                    values += (
                        _expected_header(w.expected_version),
                        pack_scope(w.state, w.stats_json),
                    )
                pipe.execute_command("EVAL", WRITE_SCOPES_LUA, len(keys), *keys, *values)

    def outcome(self, replies: list[Any]) -> tuple[list[ScopeWrite], list[ScopeWrite]]:
        """(refused by the script, to retry through the script) from the pipeline's replies."""
        refused: list[ScopeWrite] = []
        retry: list[ScopeWrite] = []
        for (msetnx, batch), reply in zip(self.commands, replies, strict=True):
            if msetnx:
                if not reply:
                    retry += [w for _, w in batch]
            else:
                refused += [batch[i - 1][1] for i in reply]
        return refused, retry


def _client(settings: Settings) -> Any:
    options = redis_options(settings)
    if settings.redis_cluster:
        return redis.cluster.RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


def _async_client(settings: Settings) -> Any:
    options = redis_options(settings)
    if settings.redis_cluster:
        return aiocluster.RedisCluster.from_url(settings.redis_url, **options)
    return aioredis.Redis.from_url(settings.redis_url, **options)


class StatsStore:
    """Synchronous access to the stored scopes (the CLI, backfill and the read API)."""

    def __init__(
        self, client: Any, keys: KeySpace, url: str = "redis", *, cluster: bool = False
    ) -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self.cluster = cluster

    @classmethod
    def from_settings(cls, settings: Settings) -> StatsStore:
        return cls(
            _client(settings),
            KeySpace(settings.key_prefix),
            settings.redis_url,
            cluster=settings.redis_cluster,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> StatsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ping(self) -> None:
        try:
            self.client.ping()
        except REDIS_ERRORS as exc:
            raise _failure(self.url, exc) from exc

    def stats_json(self, scope: ScopeKey) -> bytes:
        """The stored stats JSON of a scope, or UserAttemptsNotFoundError."""
        try:
            raw = self.client.get(self.keys.for_scope(scope))
        except REDIS_ERRORS as exc:
            raise _failure(self.url, exc) from exc
        if not isinstance(raw, bytes):
            raise _not_found(scope)
        return stats_of(raw)

    def stats(self, scope: ScopeKey) -> PerformanceStatsData:
        return PerformanceStatsData.from_json(self.stats_json(scope))

    def read(self, scopes: Sequence[ScopeKey]) -> list[StoredScope | None]:
        """The stored state of each scope (None where there is none), one round trip."""
        plan = _ReadPlan.of(self.keys, scopes, self.cluster)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                plan.queue(pipe)
                replies = pipe.execute()
        except REDIS_ERRORS as exc:
            raise _failure(self.url, exc) from exc
        return plan.outcome(replies)

    def write(self, writes: Sequence[ScopeWrite], *, script_only: bool = False) -> list[ScopeWrite]:
        """Apply compare-and-set writes (one round trip, rarely two); returns the refused ones."""
        plan = _WritePlan.of(self.keys, writes, self.cluster, script_only=script_only)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                plan.queue(pipe)
                refused, retry = plan.outcome(pipe.execute())
        except REDIS_ERRORS as exc:
            raise _failure(self.url, exc) from exc
        if retry:
            refused += self.write(retry, script_only=True)
        return refused


class AsyncStatsStore:
    """asyncio access to the stored scopes (async platforms and the worker)."""

    def __init__(
        self, client: Any, keys: KeySpace, url: str = "redis", *, cluster: bool = False
    ) -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self.cluster = cluster

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncStatsStore:
        return cls(
            _async_client(settings),
            KeySpace(settings.key_prefix),
            settings.redis_url,
            cluster=settings.redis_cluster,
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> AsyncStatsStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except REDIS_ERRORS as exc:
            raise _failure(self.url, exc) from exc

    async def stats_json(self, scope: ScopeKey) -> bytes:
        try:
            raw = await self.client.get(self.keys.for_scope(scope))
        except REDIS_ERRORS as exc:
            raise _failure(self.url, exc) from exc
        if not isinstance(raw, bytes):
            raise _not_found(scope)
        return stats_of(raw)

    async def stats(self, scope: ScopeKey) -> PerformanceStatsData:
        return PerformanceStatsData.from_json(await self.stats_json(scope))

    async def read(self, scopes: Sequence[ScopeKey]) -> list[StoredScope | None]:
        plan = _ReadPlan.of(self.keys, scopes, self.cluster)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                plan.queue(pipe)
                replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise _failure(self.url, exc) from exc
        return plan.outcome(replies)

    async def write(
        self, writes: Sequence[ScopeWrite], *, script_only: bool = False
    ) -> list[ScopeWrite]:
        plan = _WritePlan.of(self.keys, writes, self.cluster, script_only=script_only)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                plan.queue(pipe)
                refused, retry = plan.outcome(await pipe.execute())
        except REDIS_ERRORS as exc:
            raise _failure(self.url, exc) from exc
        if retry:
            refused += await self.write(retry, script_only=True)
        return refused
