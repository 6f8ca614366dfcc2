"""The Redis stats store: each scope's state and latest stats, sync and asyncio.

Every write is a compare-and-set on the scope's version (a Lua script, many scopes a call), so a
writer that read stale state (a zombie worker after a rebalance, a backfill racing the
stream) cannot overwrite newer state: it gets a conflict and re-reads. Writing a state
whose version is already stored, with the same content, changes nothing.
Key layout: see :mod:`performance_engine.naming`.
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


def _failure(url: str, exc: Exception) -> DatabaseQueryError:
    error = DatabaseQueryError(
        f"Redis at {redact_url(url)} failed: {exc}; check that it is running and that "
        "PERF_ENGINE_REDIS_URL points at it"
    )
    error.__cause__ = exc
    return error


def _batches(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + SCRIPT_BATCH] for i in range(0, len(items), SCRIPT_BATCH)]


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


def _write_args(batch: Sequence[ScopeWrite]) -> list[Any]:
    args: list[Any] = []
    for w in batch:
        args += (_expected_header(w.expected_version), pack_scope(w.state, w.stats_json))
    return args


@dataclass(frozen=True, slots=True)
class _WritePlan:
    """How a list of writes goes to Redis in one pipeline.

    Writes of scopes not yet stored go as ``MSETNX`` (no script: it sets all of its keys
    only if none of them exists, the compare-and-set for "not stored yet"); the others go
    through the compare-and-set script. An MSETNX that finds any of its keys already
    there writes nothing; its writes are then retried through the script.
    """

    created: list[Sequence[ScopeWrite]]
    scripted: list[Sequence[ScopeWrite]]

    @classmethod
    def of(cls, writes: Sequence[ScopeWrite], *, script_only: bool = False) -> _WritePlan:
        if script_only:
            return cls([], _batches(writes))
        fresh = [w for w in writes if w.expected_version == 0]
        if len(fresh) == len(writes):
            return cls(_batches(writes), [])
        return cls(_batches(fresh), _batches([w for w in writes if w.expected_version != 0]))

    def queue_created(self, pipe: Any, keys: KeySpace) -> None:
        for batch in self.created:
            args: list[Any] = []
            for w in batch:
                args += (keys.for_scope(w.scope), pack_scope(w.state, w.stats_json))
            pipe.execute_command("MSETNX", *args)

    def outcome(self, replies: list[Any]) -> tuple[list[ScopeWrite], list[ScopeWrite]]:
        """(refused by the script, to retry through the script) from the pipeline's replies."""
        created, scripted = replies[: len(self.created)], replies[len(self.created) :]
        retry = [
            w for batch, ok in zip(self.created, created, strict=True) if not ok for w in batch
        ]
        refused = [
            batch[i - 1] for batch, ids in zip(self.scripted, scripted, strict=True) for i in ids
        ]
        return refused, retry


def _client_options() -> dict[str, Any]:
    return {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "health_check_interval": 30}


class StatsStore:
    """Synchronous access to the stored scopes (the CLI, backfill and the read API)."""

    def __init__(self, client: redis.Redis, keys: KeySpace, url: str = "redis") -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self._write = client.register_script(WRITE_SCOPES_LUA)

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
            raw = self.client.get(self.keys.for_scope(scope))
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        if not isinstance(raw, bytes):
            raise _not_found(scope)
        return stats_of(raw)

    def stats(self, scope: ScopeKey) -> PerformanceStatsData:
        return PerformanceStatsData.from_json(self.stats_json(scope))

    def read(self, scopes: Sequence[ScopeKey]) -> list[StoredScope | None]:
        """The stored state of each scope (None where there is none), one round trip."""
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for batch in _batches(scopes):
                    pipe.mget([self.keys.for_scope(s) for s in batch])
                replies = pipe.execute()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        return [_stored(values) for reply in replies for values in reply]

    def write(self, writes: Sequence[ScopeWrite], *, script_only: bool = False) -> list[ScopeWrite]:
        """Apply compare-and-set writes (one round trip, rarely two); returns the refused ones."""
        plan = _WritePlan.of(writes, script_only=script_only)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                plan.queue_created(pipe, self.keys)
                for batch in plan.scripted:
                    keys = [self.keys.for_scope(w.scope) for w in batch]
                    self._write(keys=keys, args=_write_args(batch), client=pipe)
                refused, retry = plan.outcome(pipe.execute())
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        if retry:
            refused += self.write(retry, script_only=True)
        return refused


class AsyncStatsStore:
    """asyncio access to the stored scopes (async platforms and the worker)."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace, url: str = "redis") -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self._write = client.register_script(WRITE_SCOPES_LUA)

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
            raw = await self.client.get(self.keys.for_scope(scope))
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        if not isinstance(raw, bytes):
            raise _not_found(scope)
        return stats_of(raw)

    async def stats(self, scope: ScopeKey) -> PerformanceStatsData:
        return PerformanceStatsData.from_json(await self.stats_json(scope))

    async def read(self, scopes: Sequence[ScopeKey]) -> list[StoredScope | None]:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for batch in _batches(scopes):
                    pipe.mget([self.keys.for_scope(s) for s in batch])
                replies = await pipe.execute()
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        return [_stored(values) for reply in replies for values in reply]

    async def write(
        self, writes: Sequence[ScopeWrite], *, script_only: bool = False
    ) -> list[ScopeWrite]:
        plan = _WritePlan.of(writes, script_only=script_only)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                plan.queue_created(pipe, self.keys)
                for batch in plan.scripted:
                    keys = [self.keys.for_scope(w.scope) for w in batch]
                    await self._write(keys=keys, args=_write_args(batch), client=pipe)
                refused, retry = plan.outcome(await pipe.execute())
        except redis.RedisError as exc:
            raise _failure(self.url, exc) from exc
        if retry:
            refused += await self.write(retry, script_only=True)
        return refused
