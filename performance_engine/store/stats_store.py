"""The Redis stats store: each scope's state, latest stats and history, sync and asyncio.

Every write is a compare-and-set on the scope's revision (a Lua script, many scopes a
call), so a writer that read stale state (a zombie worker after a rebalance, a backfill
racing the stream) cannot overwrite newer state: it gets a conflict and re-reads. Writing
a state whose revision is already stored, with the same content, changes nothing. A scope's
history key changes in the same script call as its state, and only when the
compare-and-set succeeds, so the two never disagree.
Key layout: see :mod:`.keyspace`; the stored value: :mod:`.layout`.

Commands the store sends: GET, MGET, MSETNX, EVAL (the script runs GETRANGE, SET and
APPEND) and PING; the eviction check (``eviction_policy``) adds INFO through the same client.
Nothing else:
the ACL line in docs/operations.md grants exactly these. On a Redis Cluster
(``PERF_ENGINE_REDIS_CLUSTER``) every multi-key command holds keys of one hash slot: a
scope's key carries its learner's hash tag, so a learner's scopes travel together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import msgspec
from redis.crc import key_slot

from performance_engine.connections import async_redis_client, redis_client
from performance_engine.errors import UserAttemptsNotFoundError
from performance_engine.metrics.history import Entry, HistoryError, HistoryWrite, decode_entries
from performance_engine.metrics.state import ScopeState
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey
from performance_engine.settings import Settings
from performance_engine.store.failures import REDIS_ERRORS, failure
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.layout import (
    expected_header,
    pack_scope,
    revision_of,
    stats_of,
    unpack_scope,
)

if TYPE_CHECKING:
    from performance_engine.store.bulk import PackedScopes

__all__ = [
    "SCRIPT_BATCH",
    "WRITE_SCOPES_LUA",
    "AsyncStatsStore",
    "ScopeWrite",
    "StatsStore",
    "StoredScope",
]

# KEYS: per scope, its key and its history key. ARGV: four values per scope: the expected
# 8-byte version header ('' for a scope not yet stored), the new value, what to do to the
# history ('' nothing, 'a' append, 'r' replace) and the history bytes. A scope is written
# only if its stored header is the expected one. Returns the 1-based positions of the
# refused scopes.
WRITE_SCOPES_LUA = """
local refused = {}
for i = 1, #KEYS / 2 do
  local key, at = KEYS[2 * i - 1], 4 * (i - 1)
  if redis.call('GETRANGE', key, 0, 7) == ARGV[at + 1] then
    redis.call('SET', key, ARGV[at + 2])
    local op = ARGV[at + 3]
    if op == 'a' then
      redis.call('APPEND', KEYS[2 * i], ARGV[at + 4])
    elseif op == 'r' then
      redis.call('SET', KEYS[2 * i], ARGV[at + 4])
    end
  else
    refused[#refused + 1] = i
  end
end
return refused
"""
#: Scopes per script call, MSETNX or MGET: bounds how long one call holds Redis (~1 ms).
SCRIPT_BATCH = 256


class StoredScope(msgspec.Struct, frozen=True, gc=False):
    """What Redis holds for a scope: its state (version inside) and latest stats JSON."""

    state: ScopeState
    stats_json: bytes


class ScopeWrite(msgspec.Struct, frozen=True, gc=False):
    """A compare-and-set write: applies only if the stored revision is ``expected_revision``
    (0: nothing stored yet);
    ``history`` is done to the scope's history with it."""

    scope: ScopeKey
    expected_revision: int
    state: ScopeState
    stats_json: bytes
    history: HistoryWrite | None = None

    def history_args(self) -> tuple[bytes, bytes]:
        """The script's (operation, bytes) for the history."""
        history = self.history
        if history is None:
            return b"", b""
        return (b"r" if history.replace else b"a"), history.data


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


def _history(value: bytes | None, count: int) -> list[Entry] | None:
    """A stored history's entries; None if it is lost (missing, or not ``count`` entries)."""
    if value is None:
        return None
    try:
        return decode_entries(value, count)
    except HistoryError:
        return None


def _histories(
    scopes: Sequence[tuple[ScopeKey, int]], stored: list[int], values: list[bytes | None]
) -> list[list[Entry] | None]:
    """Each scope's history: [] for a count of 0, else what its value decodes to."""
    found: list[list[Entry] | None] = [[] for _ in scopes]
    for i, value in zip(stored, values, strict=True):
        found[i] = _history(value, scopes[i][1])
    return found


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    """MGETs for many keys in one pipeline, and their replies put back in order."""

    keys: list[str]
    groups: list[list[int]]

    @classmethod
    def of(cls, keys: list[str], cluster: bool) -> _ReadPlan:
        return cls(keys, _groups(keys, cluster))

    def queue(self, pipe: Any) -> None:
        for group in self.groups:
            pipe.execute_command("MGET", *[self.keys[i] for i in group])

    def outcome(self, replies: list[Any]) -> list[bytes | None]:
        found: list[bytes | None] = [None] * len(self.keys)
        for group, values in zip(self.groups, replies, strict=True):
            for i, value in zip(group, values, strict=True):
                found[i] = value
        return found


class _Row(NamedTuple):
    """One scope's compare-and-set write, packed: ``tag`` is what the caller gets back if
    it is refused; ``expected`` the stored header it needs (empty: not stored yet);
    ``op`` what to do to the history ('' nothing, 'a' append, 'r' replace)."""

    tag: Any
    key: str
    history_key: str
    expected: bytes
    value: bytes
    op: bytes
    history: bytes


def _rows_of(keyspace: KeySpace, writes: Sequence[ScopeWrite]) -> list[_Row]:
    rows = []
    for w in writes:
        key = keyspace.for_scope(w.scope)
        rows.append(
            _Row(
                w,
                key,
                keyspace.history_of(key),
                expected_header(w.expected_revision),
                pack_scope(w.state, w.stats_json),
                *w.history_args(),
            )
        )
    return rows


def _new_rows(keyspace: KeySpace, packed: PackedScopes, first: int, last: int) -> list[_Row]:
    """Rows ``first:last`` of packed new scopes."""
    values, histories = packed.values, packed.histories
    rows = []
    for scope, (lo, hi), start, end in zip(
        packed.scopes[first:last],
        pairwise(packed.value_ends[first : last + 1]),
        packed.history_starts[first:last],
        packed.history_ends[first:last],
        strict=True,
    ):
        key = keyspace.for_scope(scope)
        op = b"r" if end > start else b""
        rows.append(
            _Row(scope, key, keyspace.history_of(key), b"", values[lo:hi], op, histories[start:end])
        )
    return rows


@dataclass(frozen=True, slots=True)
class _WritePlan:
    """Compare-and-set writes for many scopes in one pipeline.

    Writes of scopes not yet stored go as ``MSETNX`` (no script: it sets all of its keys
    only if none of them exists, the compare-and-set for "not stored yet"); the others
    through the compare-and-set script. An MSETNX that finds any of its keys already
    there writes nothing; its writes are then retried through the script.
    """

    commands: list[tuple[bool, list[_Row]]]  # (is MSETNX, writes)

    @classmethod
    def of(cls, rows: Sequence[_Row], cluster: bool, *, script_only: bool = False) -> _WritePlan:
        commands: list[tuple[bool, list[_Row]]] = []
        fresh = [] if script_only else [r for r in rows if not r.expected]
        stored = rows if script_only else [r for r in rows if r.expected]
        for msetnx, part in ((True, fresh), (False, stored)):
            for group in _groups([r.key for r in part], cluster):
                commands.append((msetnx, [part[i] for i in group]))
        return cls(commands)

    def queue(self, pipe: Any) -> None:
        for msetnx, batch in self.commands:
            if msetnx:
                args: list[Any] = []
                for r in batch:
                    args += (r.key, r.value)
                    if r.op:
                        args += (r.history_key, r.history)
                pipe.execute_command("MSETNX", *args)
            else:
                keys: list[str] = []
                values: list[Any] = []
                for r in batch:
                    keys += (r.key, r.history_key)
                    values += (r.expected, r.value, r.op, r.history)
                pipe.execute_command("EVAL", WRITE_SCOPES_LUA, len(keys), *keys, *values)

    def outcome(self, replies: list[Any]) -> tuple[list[Any], list[_Row]]:
        """(tags of the writes the script refused, writes to retry through the script)."""
        refused: list[Any] = []
        retry: list[_Row] = []
        for (msetnx, batch), reply in zip(self.commands, replies, strict=True):
            if msetnx:
                if not reply:
                    retry += batch
            else:
                refused += [batch[i - 1].tag for i in reply]
        return refused, retry


class _Store:
    """What both stores hold: a redis-py client (sync or asyncio), the key space, the URL
    (for messages, without its password) and whether Redis is a cluster."""

    def __init__(
        self, client: Any, keys: KeySpace, url: str = "redis", *, cluster: bool = False
    ) -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self.cluster = cluster

    @staticmethod
    def _client_for(settings: Settings) -> Any:
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            cls._client_for(settings),
            KeySpace(settings.key_prefix),
            settings.redis_url,
            cluster=settings.redis_cluster,
        )


class StatsStore(_Store):
    """Synchronous access to the stored scopes (the CLI, backfill and the read API)."""

    _client_for = staticmethod(redis_client)

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
            raise failure(self.url, exc) from exc

    def stats_json(self, scope: ScopeKey) -> bytes:
        """The stored stats JSON of a scope, or UserAttemptsNotFoundError."""
        try:
            raw = self.client.get(self.keys.for_scope(scope))
        except REDIS_ERRORS as exc:
            raise failure(self.url, exc) from exc
        if not isinstance(raw, bytes):
            raise _not_found(scope)
        return stats_of(raw)

    def stats(self, scope: ScopeKey) -> PerformanceStatsData:
        return PerformanceStatsData.from_json(self.stats_json(scope))

    def read(self, scopes: Sequence[ScopeKey]) -> list[StoredScope | None]:
        """The stored state of each scope (None where there is none), one round trip."""
        values = self._mget([self.keys.for_scope(s) for s in scopes])
        return [_stored(value) for value in values]

    def read_histories(self, scopes: Sequence[tuple[ScopeKey, int]]) -> list[list[Entry] | None]:
        """The history of each (scope, entry count): its entries in learning order, or None
        if it is lost (missing, or not that many entries)."""
        stored = [i for i, (_, count) in enumerate(scopes) if count]  # the others are empty
        values = self._mget([self.keys.history(scopes[i][0]) for i in stored]) if stored else []
        return _histories(scopes, stored, values)

    def values(self, keys: list[str]) -> list[bytes | None]:
        """The raw values of some keys of the key space (None where missing)."""
        return self._mget(keys)

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        plan = _ReadPlan.of(keys, self.cluster)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                plan.queue(pipe)
                replies = pipe.execute()
        except REDIS_ERRORS as exc:
            raise failure(self.url, exc) from exc
        return plan.outcome(replies)

    def write(self, writes: Sequence[ScopeWrite]) -> list[ScopeWrite]:
        """Apply compare-and-set writes (one round trip, rarely two); returns the refused ones."""
        return self._write(_rows_of(self.keys, writes))

    def create(self, packed: PackedScopes) -> list[ScopeKey]:
        """Write scopes not stored yet (their values packed by the batch path), each only
        if it is still not stored; returns the scopes that were (their writes refused).

        The ``MSETNX`` commands go to Redis as one buffer written by a compiled loop (on
        a cluster: through the pipeline, grouped by hash slot); a command that finds one
        of its keys taken is retried through the compare-and-set script.
        """
        n = len(packed.scopes)
        if self.cluster:
            return self._write(_new_rows(self.keys, packed, 0, n))
        from performance_engine.store.bulk import msetnx_payload  # numpy: the backfill's

        payload, count = msetnx_payload(self.keys, packed, SCRIPT_BATCH)
        replies = self._send(payload, count)
        retry: list[_Row] = []
        for command, created in enumerate(replies):
            if not created:
                lo = command * SCRIPT_BATCH
                retry += _new_rows(self.keys, packed, lo, min(n, lo + SCRIPT_BATCH))
        return self._write(retry, script_only=True) if retry else []

    def _send(self, payload: bytes, count: int) -> list[Any]:
        """Send commands already in the wire protocol; the replies of ``count`` of them."""
        pool = self.client.connection_pool
        try:
            connection = pool.get_connection()
            try:
                connection.send_packed_command([payload])
                return [connection.read_response() for _ in range(count)]
            except BaseException:
                connection.disconnect()  # replies may be left unread: never reuse it
                raise
            finally:
                pool.release(connection)
        except REDIS_ERRORS as exc:
            raise failure(self.url, exc) from exc

    def _write(self, rows: list[_Row], *, script_only: bool = False) -> list[Any]:
        plan = _WritePlan.of(rows, self.cluster, script_only=script_only)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                plan.queue(pipe)
                refused, retry = plan.outcome(pipe.execute())
        except REDIS_ERRORS as exc:
            raise failure(self.url, exc) from exc
        if retry:
            refused += self._write(retry, script_only=True)
        return refused


class AsyncStatsStore(_Store):
    """asyncio access to the stored scopes (async platforms and the worker)."""

    _client_for = staticmethod(async_redis_client)

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
            raise failure(self.url, exc) from exc

    async def stats_json(self, scope: ScopeKey) -> bytes:
        return (await self.stats_json_and_revision(scope))[0]

    async def stats_json_and_revision(self, scope: ScopeKey) -> tuple[bytes, int]:
        """The scope's stats JSON and its revision (from the stored value's header)."""
        try:
            raw = await self.client.get(self.keys.for_scope(scope))
        except REDIS_ERRORS as exc:
            raise failure(self.url, exc) from exc
        if not isinstance(raw, bytes):
            raise _not_found(scope)
        return stats_of(raw), revision_of(raw)

    async def stats(self, scope: ScopeKey) -> PerformanceStatsData:
        return PerformanceStatsData.from_json(await self.stats_json(scope))

    async def read(self, scopes: Sequence[ScopeKey]) -> list[StoredScope | None]:
        values = await self._mget([self.keys.for_scope(s) for s in scopes])
        return [_stored(value) for value in values]

    async def read_histories(
        self, scopes: Sequence[tuple[ScopeKey, int]]
    ) -> list[list[Entry] | None]:
        """See :meth:`StatsStore.read_histories`."""
        stored = [i for i, (_, count) in enumerate(scopes) if count]
        keys = [self.keys.history(scopes[i][0]) for i in stored]
        values = await self._mget(keys) if stored else []
        return _histories(scopes, stored, values)

    async def values(self, keys: list[str]) -> list[bytes | None]:
        """See :meth:`StatsStore.values`."""
        return await self._mget(keys)

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        plan = _ReadPlan.of(keys, self.cluster)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                plan.queue(pipe)
                replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise failure(self.url, exc) from exc
        return plan.outcome(replies)

    async def write(self, writes: Sequence[ScopeWrite]) -> list[ScopeWrite]:
        """See :meth:`StatsStore.write`."""
        return await self._write(_rows_of(self.keys, writes))

    async def _write(self, rows: list[_Row], *, script_only: bool = False) -> list[Any]:
        plan = _WritePlan.of(rows, self.cluster, script_only=script_only)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                plan.queue(pipe)
                refused, retry = plan.outcome(await pipe.execute())
        except REDIS_ERRORS as exc:
            raise failure(self.url, exc) from exc
        if retry:
            refused += await self._write(retry, script_only=True)
        return refused
