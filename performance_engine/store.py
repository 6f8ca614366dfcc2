"""The Redis stats store: each scope's state and latest stats, sync and asyncio.

Every write is a compare-and-set on the scope's version (one Lua script per scope), so a
writer that read stale state (a zombie worker after a rebalance, a backfill racing the
stream) cannot overwrite newer state: it gets a conflict and re-reads. Writing a state
whose version is already stored, with the same content, changes nothing.
Key layout: see :mod:`performance_engine.naming`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis

from performance_engine.errors import DatabaseQueryError, UserAttemptsNotFoundError
from performance_engine.metrics.state import ScopeState, decode_state, encode_state
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey
from performance_engine.naming import KeySpace
from performance_engine.settings import Settings

__all__ = [
    "AsyncStatsStore",
    "ScopeWrite",
    "StatsStore",
    "StoredScope",
    "redact_url",
]

# KEYS[1] scope hash; ARGV expected version, new version, state, stats JSON.
# Returns -1 when written, else the version found (the write is refused).
WRITE_SCOPE_LUA = """
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if current ~= tonumber(ARGV[1]) then
  return current
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3], 'j', ARGV[4])
return -1
"""
_FIELDS = ("v", "s", "j")


@dataclass(frozen=True, slots=True)
class StoredScope:
    """What Redis holds for a scope: its state (version inside) and latest stats JSON."""

    state: ScopeState
    stats_json: bytes


@dataclass(frozen=True, slots=True)
class ScopeWrite:
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


def _failure(url: str, exc: Exception) -> DatabaseQueryError:
    error = DatabaseQueryError(
        f"Redis at {redact_url(url)} failed: {exc}; check that it is running and that "
        "PERF_ENGINE_REDIS_URL points at it"
    )
    error.__cause__ = exc
    return error


def _stored(values: Sequence[Any]) -> StoredScope | None:
    _version, state, stats = values
    if state is None:
        return None
    return StoredScope(decode_state(state), stats or b"")


def _not_found(scope: ScopeKey) -> UserAttemptsNotFoundError:
    return UserAttemptsNotFoundError(
        f"no stats for user {scope.user_id}, sub-topic {scope.sub_topic_id}, "
        f"learning mode {scope.learning_mode!r}: no attempt of that scope has been "
        "processed (check the ids and the mode, or backfill the history)"
    )


def _write_args(w: ScopeWrite) -> list[Any]:
    return [w.expected_version, w.state.version, encode_state(w.state), w.stats_json]


def _client_options() -> dict[str, Any]:
    return {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "health_check_interval": 30}


class StatsStore:
    """Synchronous access to the stored scopes (the CLI, backfill and the read API)."""

    def __init__(self, client: redis.Redis, keys: KeySpace, url: str = "redis") -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self._write = client.register_script(WRITE_SCOPE_LUA)

    @classmethod
    def from_settings(cls, settings: Settings) -> StatsStore:
        client = redis.Redis.from_url(settings.redis_url, **_client_options())
        return cls(client, KeySpace(settings.key_prefix), settings.redis_url)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> StatsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc

    def stats_json(self, scope: ScopeKey) -> bytes:
        """The stored stats JSON of a scope, or UserAttemptsNotFoundError."""
        try:
            raw = self.client.hget(self.keys.for_scope(scope), "j")
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        if raw is None:
            raise _not_found(scope)
        return raw if isinstance(raw, bytes) else raw.encode()

    def stats(self, scope: ScopeKey) -> PerformanceStatsData:
        return PerformanceStatsData.from_json(self.stats_json(scope))

    def read(self, scopes: Sequence[ScopeKey]) -> list[StoredScope | None]:
        """The stored state of each scope (None where there is none), one round trip."""
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for scope in scopes:
                    pipe.hmget(self.keys.for_scope(scope), _FIELDS)
                replies = pipe.execute()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        return [_stored(values) for values in replies]

    def write(self, writes: Iterable[ScopeWrite]) -> list[ScopeWrite]:
        """Apply compare-and-set writes in one round trip; returns the refused ones."""
        batch = list(writes)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for w in batch:
                    self._write(
                        keys=[self.keys.for_scope(w.scope)],
                        args=_write_args(w),
                        client=pipe,
                    )
                replies = pipe.execute()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        return [w for w, reply in zip(batch, replies, strict=True) if reply != -1]


class AsyncStatsStore:
    """asyncio access to the stored scopes (async platforms and the worker)."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace, url: str = "redis") -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self._write = client.register_script(WRITE_SCOPE_LUA)

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncStatsStore:
        client = aioredis.Redis.from_url(settings.redis_url, **_client_options())
        return cls(client, KeySpace(settings.key_prefix), settings.redis_url)

    async def close(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> AsyncStatsStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc

    async def stats_json(self, scope: ScopeKey) -> bytes:
        try:
            raw = await self.client.hget(self.keys.for_scope(scope), "j")
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        if raw is None:
            raise _not_found(scope)
        return raw if isinstance(raw, bytes) else raw.encode()

    async def stats(self, scope: ScopeKey) -> PerformanceStatsData:
        return PerformanceStatsData.from_json(await self.stats_json(scope))

    async def read(self, scopes: Sequence[ScopeKey]) -> list[StoredScope | None]:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for scope in scopes:
                    pipe.hmget(self.keys.for_scope(scope), _FIELDS)
                replies = await pipe.execute()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        return [_stored(values) for values in replies]

    async def write(self, writes: Iterable[ScopeWrite]) -> list[ScopeWrite]:
        batch = list(writes)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for w in batch:
                    await self._write(
                        keys=[self.keys.for_scope(w.scope)],
                        args=_write_args(w),
                        client=pipe,
                    )
                replies = await pipe.execute()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        return [w for w, reply in zip(batch, replies, strict=True) if reply != -1]
