"""The Redis stats store: each scope's state and latest stats, sync and asyncio.

Every write is a compare-and-set on the scope's version (a Lua script, many scopes a call), so a
writer that read stale state (a zombie worker after a rebalance, a backfill racing the
stream) cannot overwrite newer state: it gets a conflict and re-reads. Writing a state
whose version is already stored, with the same content, changes nothing.
Key layout: see :mod:`performance_engine.naming`.
"""

from __future__ import annotations

from collections.abc import Sequence
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

# KEYS: scope hashes; ARGV: four values per key: expected version, new version, state,
# stats JSON. Each key is written only if its stored version is the expected one.
# Returns the 1-based positions of the refused keys.
WRITE_SCOPES_LUA = """
local refused = {}
for i, key in ipairs(KEYS) do
  local at = (i - 1) * 4
  local current = tonumber(redis.call('HGET', key, 'v') or '0')
  if current == tonumber(ARGV[at + 1]) then
    redis.call('HSET', key, 'v', ARGV[at + 2], 's', ARGV[at + 3], 'j', ARGV[at + 4])
  else
    refused[#refused + 1] = i
  end
end
return refused
"""
# KEYS: scope hashes. Returns, per key, {state, stats JSON} (false where absent).
READ_SCOPES_LUA = """
local found = {}
for i, key in ipairs(KEYS) do
  found[i] = redis.call('HMGET', key, 's', 'j')
end
return found
"""
#: Scopes per script call: bounds how long one call holds Redis (~1 ms).
SCRIPT_BATCH = 256


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


def _batches(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + SCRIPT_BATCH] for i in range(0, len(items), SCRIPT_BATCH)]


def _stored(values: Sequence[Any]) -> StoredScope | None:
    state, stats = values
    if state is None:
        return None
    return StoredScope(decode_state(state), stats or b"")


def _not_found(scope: ScopeKey) -> UserAttemptsNotFoundError:
    return UserAttemptsNotFoundError(
        f"no stats for user {scope.user_id}, sub-topic {scope.sub_topic_id}, "
        f"learning mode {scope.learning_mode!r}: no attempt of that scope has been "
        "processed (check the ids and the mode, or backfill the history)"
    )


def _write_args(batch: Sequence[ScopeWrite]) -> list[Any]:
    args: list[Any] = []
    for w in batch:
        args += (w.expected_version, w.state.version, encode_state(w.state), w.stats_json)
    return args


def _client_options() -> dict[str, Any]:
    return {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "health_check_interval": 30}


class StatsStore:
    """Synchronous access to the stored scopes (the CLI, backfill and the read API)."""

    def __init__(self, client: redis.Redis, keys: KeySpace, url: str = "redis") -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self._write = client.register_script(WRITE_SCOPES_LUA)
        self._read = client.register_script(READ_SCOPES_LUA)

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
                for batch in _batches(scopes):
                    self._read(keys=[self.keys.for_scope(s) for s in batch], client=pipe)
                replies = pipe.execute()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        return [_stored(values) for reply in replies for values in reply]

    def write(self, writes: Sequence[ScopeWrite]) -> list[ScopeWrite]:
        """Apply compare-and-set writes in one round trip; returns the refused ones."""
        batches = _batches(writes)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for batch in batches:
                    keys = [self.keys.for_scope(w.scope) for w in batch]
                    self._write(keys=keys, args=_write_args(batch), client=pipe)
                replies = pipe.execute()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        return [
            batch[i - 1] for batch, refused in zip(batches, replies, strict=True) for i in refused
        ]


class AsyncStatsStore:
    """asyncio access to the stored scopes (async platforms and the worker)."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace, url: str = "redis") -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self._write = client.register_script(WRITE_SCOPES_LUA)
        self._read = client.register_script(READ_SCOPES_LUA)

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
                for batch in _batches(scopes):
                    await self._read(keys=[self.keys.for_scope(s) for s in batch], client=pipe)
                replies = await pipe.execute()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        return [_stored(values) for reply in replies for values in reply]

    async def write(self, writes: Sequence[ScopeWrite]) -> list[ScopeWrite]:
        batches = _batches(writes)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for batch in batches:
                    keys = [self.keys.for_scope(w.scope) for w in batch]
                    await self._write(keys=keys, args=_write_args(batch), client=pipe)
                replies = await pipe.execute()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        return [
            batch[i - 1] for batch, refused in zip(batches, replies, strict=True) for i in refused
        ]
