"""The Redis stats store: each scope's state, latest stats and history, sync and asyncio.

Every write is a compare-and-set on the scope's revision (a Lua script, many scopes a
call), so a writer that read stale state (a zombie worker after a rebalance, a backfill
racing the stream) cannot overwrite newer state: it gets a conflict and re-reads. Writing
a state whose revision is already stored, with the same content, changes nothing. A scope's
history key and its field in the learner's stats hash change in the same script call as
its state, and only when the compare-and-set succeeds, so the three never disagree.
Key layout: see :mod:`.keyspace`; the stored value: :mod:`.layout`.

Commands the store sends: GET, MGET, HGET, HMGET, HGETALL, EVAL (the script runs
GETRANGE, SET, APPEND and HSET) and PING; the eviction check (``eviction_policy``) adds
INFO through the same client. Nothing else: the ACL line in docs/operations.md grants
exactly these. On a Redis Cluster (``PERF_ENGINE_REDIS_CLUSTER``) every multi-key command
holds keys of one hash slot: a scope's keys carry its learner's hash tag, so a learner's
scopes travel together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
    legacy_stats,
    pack_scope,
    unpack_scope,
)

if TYPE_CHECKING:
    from performance_engine.store.bulk import PackedScopes

__all__ = [
    "SCRIPT_BATCH",
    "UPDATE_SCOPES_LUA",
    "WRITE_SCOPES_LUA",
    "AsyncStatsStore",
    "ScopeWrite",
    "StatsStore",
    "StoredScope",
    "revision_in",
]

# KEYS: per scope, its key, its history key, its learner's stats hash and its learner's
# erasure marker. ARGV: seven values per scope: the expected 8-byte revision header ('' for
# a scope not yet stored), the new value, what to do to the history ('' nothing, 'a'
# append, 'r' replace), the history bytes, the scope's field in the stats hash, its stats
# JSON, and the epoch of the learner's erasure the writer knows ('' none). A scope is
# written only if its stored header is the expected one; one not stored yet only if the
# learner's marker starts with that epoch (a learner erased since the writer read, or
# erased by someone the writer has not heard of, is not written back). Returns the
# 1-based positions of the refused scopes. The compiled writer of new scopes
# (store.kernels.create_commands) sends it too.
WRITE_SCOPES_LUA = """
local refused = {}
for i = 1, #KEYS / 4 do
  local key, at = KEYS[4 * i - 3], 7 * (i - 1)
  local stored = redis.call('GETRANGE', key, 0, 7)
  if stored == ARGV[at + 1] and (stored ~= '' or
      redis.call('GETRANGE', KEYS[4 * i], 0, 15) == ARGV[at + 7]) then
    redis.call('SET', key, ARGV[at + 2])
    local op = ARGV[at + 3]
    if op == 'a' then
      redis.call('APPEND', KEYS[4 * i - 2], ARGV[at + 4])
    elseif op == 'r' then
      redis.call('SET', KEYS[4 * i - 2], ARGV[at + 4])
    end
    redis.call('HSET', KEYS[4 * i - 1], ARGV[at + 5], ARGV[at + 6])
  else
    refused[#refused + 1] = i
  end
end
return refused
"""
# The same for scopes already stored (their expected header is never ''): without the
# marker and the epoch, which only a creation needs (an erasure deletes a stored scope, so
# a writer expecting it is refused anyway). Three keys and six values per scope.
UPDATE_SCOPES_LUA = """
local refused = {}
for i = 1, #KEYS / 3 do
  local key, at = KEYS[3 * i - 2], 6 * (i - 1)
  if redis.call('GETRANGE', key, 0, 7) == ARGV[at + 1] then
    redis.call('SET', key, ARGV[at + 2])
    local op = ARGV[at + 3]
    if op == 'a' then
      redis.call('APPEND', KEYS[3 * i - 1], ARGV[at + 4])
    elseif op == 'r' then
      redis.call('SET', KEYS[3 * i - 1], ARGV[at + 4])
    end
    redis.call('HSET', KEYS[3 * i], ARGV[at + 5], ARGV[at + 6])
  else
    refused[#refused + 1] = i
  end
end
return refused
"""
#: Scopes per script call, MSETNX or MGET: bounds how long one call holds Redis (~1 ms).
SCRIPT_BATCH = 256


class StoredScope(msgspec.Struct, frozen=True, gc=False):
    """What Redis holds for a scope: its state (revision inside) and latest stats JSON
    (empty if there is none: a layout-1 value not yet upgraded carries its own)."""

    state: ScopeState
    stats_json: bytes


class ScopeWrite(msgspec.Struct, frozen=True, gc=False):
    """A compare-and-set write: applies only if the stored revision is ``expected_revision``
    (0: nothing stored yet);
    ``history`` is done to the scope's history with it; ``erasure`` is the epoch of the
    learner's erasure the writer knows (a scope not stored yet is written only if it is
    the learner's current one; see :mod:`performance_engine.erasure`)."""

    scope: ScopeKey
    expected_revision: int
    state: ScopeState
    stats_json: bytes
    history: HistoryWrite | None = None
    erasure: str = ""

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


def _stored(value: bytes | None, stats: bytes | None) -> StoredScope | None:
    if value is None:
        return None
    return StoredScope(unpack_scope(value), stats or legacy_stats(value))


def _state(value: bytes | None) -> ScopeState | None:
    return None if value is None else unpack_scope(value)


class _Revision(msgspec.Struct):
    revision: int


_REVISION = msgspec.json.Decoder(_Revision)


def revision_in(stats_json: bytes) -> int:
    """The ``revision`` a stats JSON carries."""
    return _REVISION.decode(stats_json).revision


def _fill_legacy(found: list[bytes | None], missing: list[int], values: list[bytes | None]) -> None:
    """Where a scope's stats hash has no field, the stats its layout-1 value carries."""
    for i, value in zip(missing, values, strict=True):
        if value is not None:
            found[i] = legacy_stats(value) or None


def _learner(found: dict[bytes, bytes]) -> dict[tuple[int, str], bytes]:
    scopes: dict[tuple[int, str], bytes] = {}
    for field, stats_json in found.items():
        parsed = KeySpace.parse_stats_field(field)
        if parsed is not None:
            scopes[parsed] = stats_json
    return dict(sorted(scopes.items()))


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
        return _in_order(len(self.keys), self.groups, replies)


def _in_order(
    count: int, groups: Sequence[Sequence[int]], replies: Sequence[Sequence[Any]]
) -> list[Any]:
    """The values of grouped replies put back at their positions (None where none came)."""
    found: list[Any] = [None] * count
    for group, values in zip(groups, replies, strict=True):
        for i, value in zip(group, values, strict=True):
            found[i] = value
    return found


@dataclass(frozen=True, slots=True)
class _StatsPlan:
    """HMGETs of many scopes' stats JSON (one per learner) in one pipeline, in order."""

    keys: list[str]
    fields: list[list[str]]
    positions: list[list[int]]
    count: int

    @classmethod
    def of(cls, keyspace: KeySpace, scopes: Sequence[ScopeKey]) -> _StatsPlan:
        by_user: dict[int, tuple[list[str], list[int]]] = {}
        for i, scope in enumerate(scopes):
            fields, positions = by_user.setdefault(scope.user_id, ([], []))
            fields.append(keyspace.stats_field(scope.sub_topic_id, scope.learning_mode))
            positions.append(i)
        return cls(
            [keyspace.stats(user) for user in by_user],
            [fields for fields, _ in by_user.values()],
            [positions for _, positions in by_user.values()],
            len(scopes),
        )

    def queue(self, pipe: Any) -> None:
        for key, fields in zip(self.keys, self.fields, strict=True):
            pipe.execute_command("HMGET", key, *fields)

    def outcome(self, replies: list[Any]) -> list[bytes | None]:
        return _in_order(self.count, self.positions, replies)


@dataclass(frozen=True, slots=True)
class _StoredPlan:
    """Scopes' values (MGET) and stats (HMGET) in one pipeline: :meth:`StatsStore.read`."""

    values: _ReadPlan
    stats: _StatsPlan

    @classmethod
    def of(cls, keyspace: KeySpace, scopes: Sequence[ScopeKey], cluster: bool) -> _StoredPlan:
        keys = [keyspace.for_scope(s) for s in scopes]
        return cls(_ReadPlan.of(keys, cluster), _StatsPlan.of(keyspace, scopes))

    def queue(self, pipe: Any) -> None:
        self.values.queue(pipe)
        self.stats.queue(pipe)

    def outcome(self, replies: list[Any]) -> list[StoredScope | None]:
        split = len(self.values.groups)
        values = self.values.outcome(replies[:split])
        return list(map(_stored, values, self.stats.outcome(replies[split:])))


class _Row(NamedTuple):
    """One scope's compare-and-set write, packed: ``tag`` is what the caller gets back if
    it is refused; ``expected`` the stored header it needs (empty: not stored yet);
    ``op`` what to do to the history ('' nothing, 'a' append, 'r' replace);
    ``marker_key`` and ``erasure`` count for a creation only."""

    tag: Any
    key: str
    history_key: str
    stats_key: str
    marker_key: str
    expected: bytes
    value: bytes
    op: bytes
    history: bytes
    field: str
    stats: bytes
    erasure: str


def _row(
    keyspace: KeySpace,
    tag: Any,
    scope: ScopeKey,
    expected: bytes,
    value: bytes,
    history: tuple[bytes, bytes],
    stats: bytes,
    erasure: str = "",
) -> _Row:
    """A scope's row, its keys and stats field spelled by ``keyspace``; ``history`` is the
    script's (operation, bytes)."""
    key = keyspace.for_scope(scope)
    return _Row(
        tag,
        key,
        keyspace.history_of(key),
        keyspace.stats(scope.user_id),
        "" if expected else keyspace.erased(scope.user_id),  # a creation's only
        expected,
        value,
        *history,
        keyspace.stats_field(scope.sub_topic_id, scope.learning_mode),
        stats,
        erasure,
    )


def _rows_of(keyspace: KeySpace, writes: Sequence[ScopeWrite]) -> list[_Row]:
    return [
        _row(
            keyspace,
            w,
            w.scope,
            expected_header(w.expected_revision),
            pack_scope(w.state),
            w.history_args(),
            w.stats_json,
            w.erasure,
        )
        for w in writes
    ]


def _new_rows(keyspace: KeySpace, packed: PackedScopes, first: int, last: int) -> list[_Row]:
    """Rows ``first:last`` of packed new scopes."""
    values, histories, stats = packed.values, packed.histories, packed.stats
    return [
        _row(
            keyspace,
            scope,
            scope,
            b"",
            values[lo:hi],
            (b"r" if end > start else b"", histories[start:end]),
            stats[a:b],
        )
        for scope, (lo, hi), start, end, (a, b) in zip(
            packed.scopes[first:last],
            pairwise(packed.value_ends[first : last + 1]),
            packed.history_starts[first:last],
            packed.history_ends[first:last],
            pairwise(packed.stats_ends[first : last + 1]),
            strict=True,
        )
    ]


@dataclass(frozen=True, slots=True)
class _WritePlan:
    """Compare-and-set writes for many scopes in one pipeline: a script call per at most
    SCRIPT_BATCH scopes (of one hash slot, on a cluster), updates of stored scopes and
    creations of new ones in calls of their own (:data:`UPDATE_SCOPES_LUA`,
    :data:`WRITE_SCOPES_LUA`)."""

    commands: list[list[_Row]]

    @classmethod
    def of(cls, rows: Sequence[_Row], cluster: bool) -> _WritePlan:
        commands: list[list[_Row]] = []
        for kind in (
            [r for r in rows if r.expected],
            [r for r in rows if not r.expected],
        ):
            groups = _groups([r.key for r in kind], cluster)
            commands += [[kind[i] for i in group] for group in groups]
        return cls(commands)

    def queue(self, pipe: Any) -> None:
        for batch in self.commands:
            keys: list[str] = []
            values: list[Any] = []
            if batch[0].expected:
                for r in batch:
                    keys += (r.key, r.history_key, r.stats_key)
                    values += (r.expected, r.value, r.op, r.history, r.field, r.stats)
                pipe.execute_command("EVAL", UPDATE_SCOPES_LUA, len(keys), *keys, *values)
                continue
            for r in batch:
                keys += (r.key, r.history_key, r.stats_key, r.marker_key)
                values += (r.expected, r.value, r.op, r.history, r.field, r.stats, r.erasure)
            pipe.execute_command("EVAL", WRITE_SCOPES_LUA, len(keys), *keys, *values)

    def outcome(self, replies: list[Any]) -> list[Any]:
        """The tags of the writes the script refused."""
        return [
            batch[i - 1].tag
            for batch, reply in zip(self.commands, replies, strict=True)
            for i in reply
        ]


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
        """The stored stats JSON of a scope (one HGET), or UserAttemptsNotFoundError."""
        (found,) = self.read_stats([scope])
        if found is None:
            raise _not_found(scope)
        return found

    def stats(self, scope: ScopeKey) -> PerformanceStatsData:
        return PerformanceStatsData.from_json(self.stats_json(scope))

    def read_stats(self, scopes: Sequence[ScopeKey]) -> list[bytes | None]:
        """Each scope's stats JSON (None where there is none), one round trip (two if some
        are missing: a layout-1 value not yet upgraded carries its stats itself)."""
        plan = _StatsPlan.of(self.keys, scopes)
        found = plan.outcome(self._pipeline(plan.queue))
        missing = [i for i, stats in enumerate(found) if stats is None]
        if missing:
            values = self._mget([self.keys.for_scope(scopes[i]) for i in missing])
            _fill_legacy(found, missing, values)
        return found

    def learner_stats(self, user_id: int) -> dict[tuple[int, str], bytes]:
        """Every stored scope of a learner: (sub-topic id, mode) -> stats JSON (one HGETALL)."""
        return _learner(self._pipeline(lambda pipe: pipe.hgetall(self.keys.stats(user_id)))[0])

    def read(self, scopes: Sequence[ScopeKey]) -> list[StoredScope | None]:
        """The stored state and stats of each scope (None where there is none), one round
        trip (not one snapshot: a scope written between the two reads shows its new stats
        beside its old state, which a compare-and-set with that state then refuses)."""
        plan = _StoredPlan.of(self.keys, scopes, self.cluster)
        return plan.outcome(self._pipeline(plan.queue))

    def read_states(self, scopes: Sequence[ScopeKey]) -> list[ScopeState | None]:
        """The stored state of each scope (None where there is none), one round trip."""
        values = self._mget([self.keys.for_scope(s) for s in scopes])
        return [_state(value) for value in values]

    def scan_scopes(
        self, batch: int, sub_topic_id: int | None = None, mode: str | None = None
    ) -> Iterator[list[ScopeKey]]:
        """Every stored scope (of one sub-topic and mode, if given), ``batch`` at a time
        (SCAN: a scope written meanwhile may or may not be among them)."""
        found: list[ScopeKey] = []
        keys = self.keys
        try:
            for key in self.client.scan_iter(match=keys.scope_pattern(), count=1000):
                scope = keys.parse_scope(key)
                if scope is None:
                    continue
                if (sub_topic_id is not None and scope.sub_topic_id != sub_topic_id) or (
                    mode is not None and scope.learning_mode != mode
                ):
                    continue
                found.append(scope)
                if len(found) >= batch:
                    yield found
                    found = []
        except REDIS_ERRORS as exc:
            raise failure(self.url, exc) from exc
        if found:
            yield found

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
        return plan.outcome(self._pipeline(plan.queue))

    def _pipeline(self, queue: Callable[[Any], object]) -> list[Any]:
        """The replies of the commands ``queue`` puts in one pipeline."""
        try:
            with self.client.pipeline(transaction=False) as pipe:
                queue(pipe)
                replies: list[Any] = pipe.execute()
        except REDIS_ERRORS as exc:
            raise failure(self.url, exc) from exc
        return replies

    def write(self, writes: Sequence[ScopeWrite]) -> list[ScopeWrite]:
        """Apply compare-and-set writes (one round trip, rarely two); returns the refused ones."""
        return self._write(_rows_of(self.keys, writes))

    def create(self, packed: PackedScopes) -> list[ScopeKey]:
        """Write scopes not stored yet (their values packed by the batch path), each only
        if it is still not stored; returns the scopes that were (their writes refused).

        The compare-and-set script's commands go to Redis as one buffer written by a
        compiled loop (on a cluster: through the pipeline, grouped by hash slot).
        """
        n = len(packed.scopes)
        if self.cluster:
            return self._write(_new_rows(self.keys, packed, 0, n))
        from performance_engine.store.bulk import create_payload  # numpy: the backfill's

        payload, count = create_payload(self.keys, packed, WRITE_SCOPES_LUA, SCRIPT_BATCH)
        refused: list[ScopeKey] = []
        for command, reply in enumerate(self._send(payload, count)):
            refused += [packed.scopes[command * SCRIPT_BATCH + i - 1] for i in reply]
        return refused

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

    def _write(self, rows: list[_Row]) -> list[Any]:
        plan = _WritePlan.of(rows, self.cluster)
        return plan.outcome(self._pipeline(plan.queue))


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
        """The scope's stats JSON and the revision it carries."""
        (found,) = await self.read_stats([scope])
        if found is None:
            raise _not_found(scope)
        return found, revision_in(found)

    async def stats(self, scope: ScopeKey) -> PerformanceStatsData:
        return PerformanceStatsData.from_json(await self.stats_json(scope))

    async def read_stats(self, scopes: Sequence[ScopeKey]) -> list[bytes | None]:
        """See :meth:`StatsStore.read_stats`."""
        plan = _StatsPlan.of(self.keys, scopes)
        found = plan.outcome(await self._pipeline(plan.queue))
        missing = [i for i, stats in enumerate(found) if stats is None]
        if missing:
            values = await self._mget([self.keys.for_scope(scopes[i]) for i in missing])
            _fill_legacy(found, missing, values)
        return found

    async def learner_stats(self, user_id: int) -> dict[tuple[int, str], bytes]:
        """See :meth:`StatsStore.learner_stats`."""
        key = self.keys.stats(user_id)
        return _learner((await self._pipeline(lambda pipe: pipe.hgetall(key)))[0])

    async def read(self, scopes: Sequence[ScopeKey]) -> list[StoredScope | None]:
        """See :meth:`StatsStore.read`."""
        plan = _StoredPlan.of(self.keys, scopes, self.cluster)
        return plan.outcome(await self._pipeline(plan.queue))

    async def read_states(self, scopes: Sequence[ScopeKey]) -> list[ScopeState | None]:
        """See :meth:`StatsStore.read_states`."""
        values = await self._mget([self.keys.for_scope(s) for s in scopes])
        return [_state(value) for value in values]

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
        return plan.outcome(await self._pipeline(plan.queue))

    async def _pipeline(self, queue: Callable[[Any], object]) -> list[Any]:
        """See :meth:`StatsStore._pipeline`."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                queue(pipe)
                replies: list[Any] = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise failure(self.url, exc) from exc
        return replies

    async def write(self, writes: Sequence[ScopeWrite]) -> list[ScopeWrite]:
        """See :meth:`StatsStore.write`."""
        return await self._write(_rows_of(self.keys, writes))

    async def _write(self, rows: list[_Row]) -> list[Any]:
        plan = _WritePlan.of(rows, self.cluster)
        return plan.outcome(await self._pipeline(plan.queue))
