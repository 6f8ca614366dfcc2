"""Erasing a learner's keys in Redis, and putting an erasure back after Redis lost it.

Two scripts, each one call in the learner's hash slot (atomic against every
compare-and-set of the learner's scopes):

- :data:`ERASE_LUA` deletes every scope of the learner (its state, history and stats
  field, found through the stats hash) and leaves the erasure marker in their place, the
  record under way with each scope's last ``revision`` added. From then on no writer that
  has not heard of this erasure can create a scope of the learner (see the
  compare-and-set in :mod:`.stats_store`).
- :data:`RESTORE_LUA` re-applies a recorded erasure to a Redis that lost it (``FLUSHDB``,
  a restored older snapshot, a failover to a replica that lagged): it deletes the scopes
  whose stored revision is at most the erased one (what is older than the erasure) and
  puts the marker back. Scopes with a higher revision started after the erasure and stay.

:data:`FINISH_LUA` writes the complete record into the marker once the erasure's offsets
are known, unless another erasure of the learner has begun meanwhile.

The calls are built here, as (script, keys, arguments), for the sync store (the erase
command) and the asyncio one (the worker) alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from performance_engine.erasure import Erasure, decode_marker, encode_erasure, marker_value
from performance_engine.metrics.types import ScopeKey
from performance_engine.store.failures import REDIS_ERRORS, failure
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.stats_store import StatsStore

__all__ = [
    "ERASE_LUA",
    "FINISH_LUA",
    "RESTORE_LUA",
    "ScriptCall",
    "erase_call",
    "finish_call",
    "restore_call",
    "revision_floor",
    "stored_erasures",
]

# KEYS: the marker, the stats hash, then per scope its key and its history key, and last
# the learner's xAPI identifier. ARGV: the epoch, the record under way (JSON, earlier
# revisions in it), then each scope's field.
# Returns {'again', field} if the stats hash has a field not passed (a scope created since
# the caller read the hash: read again), else the marker's new JSON.
ERASE_LUA = """
local passed = {}
for i = 3, #ARGV do passed[ARGV[i]] = true end
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not passed[field] then return {'again', field} end
end
local record = cjson.decode(ARGV[2])
if type(record.revisions) ~= 'table' then record.revisions = {} end
for i = 3, #ARGV do
  local key = KEYS[2 * i - 3]
  local header = redis.call('GETRANGE', key, 0, 7)
  if #header == 8 then
    local high, low = struct.unpack('>I4I4', header)
    local revision = high * 4294967296 + low
    local earlier = tonumber(record.revisions[ARGV[i]]) or 0
    if revision > earlier then record.revisions[ARGV[i]] = revision end
  end
  redis.call('DEL', key, KEYS[2 * i - 2])
end
redis.call('DEL', KEYS[2], KEYS[#KEYS])
local encoded = cjson.encode(record)
redis.call('SET', KEYS[1], ARGV[1] .. encoded)
return {'done', encoded}
"""

# KEYS: the marker, the stats hash, then per scope its key and its history key, and last
# the learner's xAPI identifier. ARGV: the epoch the marker holds now ('' none), the
# marker's value to set, then per scope its field and its erased revision. Returns 'moved'
# if the marker no longer holds that epoch.
RESTORE_LUA = """
if redis.call('GETRANGE', KEYS[1], 0, 15) ~= ARGV[1] then return 'moved' end
for i = 3, #ARGV, 2 do
  local key = KEYS[i]
  local header = redis.call('GETRANGE', key, 0, 7)
  if #header == 8 then
    local high, low = struct.unpack('>I4I4', header)
    if high * 4294967296 + low <= tonumber(ARGV[i + 1]) then
      redis.call('DEL', key, KEYS[i + 1])
      redis.call('HDEL', KEYS[2], ARGV[i])
    end
  else
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
redis.call('DEL', KEYS[#KEYS])
redis.call('SET', KEYS[1], ARGV[2])
return 'done'
"""

# KEYS: the marker. ARGV: the epoch, the marker's complete value. Returns 1 if written.
FINISH_LUA = """
if redis.call('GETRANGE', KEYS[1], 0, 15) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class ScriptCall(NamedTuple):
    """One EVAL: its script, keys and arguments."""

    script: str
    keys: list[str]
    args: list[Any]

    def eval_args(self) -> list[Any]:
        """What redis-py's ``eval`` takes after the script."""
        return [len(self.keys), *self.keys, *self.args]


def _scope_keys(keys: KeySpace, user_id: int, fields: Iterable[str]) -> list[str]:
    found: list[str] = []
    for field in fields:
        key = f"{keys.prefix}:{{u{user_id}}}:{field}"
        found += (key, keys.history_of(key))
    return found


def erase_call(keys: KeySpace, under_way: Erasure, fields: Sequence[str]) -> ScriptCall:
    """Delete the learner's scopes of these stats fields (all of their stats hash's) and
    leave the marker of ``under_way``; see :data:`ERASE_LUA`."""
    user = under_way.user
    return ScriptCall(
        ERASE_LUA,
        [
            keys.erased(user),
            keys.stats(user),
            *_scope_keys(keys, user, fields),
            keys.xapi_learner(user),
        ],
        [under_way.epoch, encode_erasure(under_way), *fields],
    )


def restore_call(keys: KeySpace, erasure: Erasure, marker_epoch: str) -> ScriptCall:
    """Re-apply a recorded erasure where the marker holds ``marker_epoch`` ('' none)."""
    user = erasure.user
    fields = sorted(erasure.revisions)
    args: list[Any] = [marker_epoch, marker_value(erasure)]
    for field in fields:
        args += (field, erasure.revisions[field])
    return ScriptCall(
        RESTORE_LUA,
        [
            keys.erased(user),
            keys.stats(user),
            *_scope_keys(keys, user, fields),
            keys.xapi_learner(user),
        ],
        args,
    )


def finish_call(keys: KeySpace, erasure: Erasure) -> ScriptCall:
    """Write the complete record into the marker (unless a newer erasure began)."""
    return ScriptCall(
        FINISH_LUA, [keys.erased(erasure.user)], [erasure.epoch, marker_value(erasure)]
    )


def revision_floor(erasures: Mapping[int, Erasure], scope: ScopeKey) -> int:
    """The revision a scope starts again above: its erased one, if its learner was erased."""
    erasure = erasures.get(scope.user_id) if erasures else None
    if erasure is None:
        return 0
    return erasure.revision_floor(KeySpace.stats_field(scope.sub_topic_id, scope.learning_mode))


def stored_erasures(store: StatsStore) -> dict[int, Erasure]:
    """The erasures Redis holds (their markers), by user id."""
    try:
        users = sorted(int(u) for u in store.client.smembers(store.keys.erasures()))
    except REDIS_ERRORS as exc:
        raise failure(store.url, exc) from exc
    found: dict[int, Erasure] = {}
    for start in range(0, len(users), 1000):
        chunk = users[start : start + 1000]
        values = store.values([store.keys.erased(user) for user in chunk])
        for user, value in zip(chunk, values, strict=True):
            erasure = decode_marker(value)
            if erasure is not None:
                found[user] = erasure
    return found
