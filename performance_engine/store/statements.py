"""What the xAPI ingest keeps of the statements it took, by id, and the learners' xAPI
identifiers.

One hash per statement, ``{prefix}:xapi:stmt:<statement id>``:

- ``digest``: the SHA-256 of the statement's JSON as taken. A resend (same body) is a
  duplicate; a reused id with another body is a conflict and changes nothing;
- ``scope``: for a statement that became an attempt, its scope (``user:sub_topic:mode``),
  which a voiding statement needs to reach the attempt's partition and scope;
- ``voided_by`` and ``void_reason``: the id of the statement that made it no longer
  count, and why: ``void`` (a voiding statement) or ``parent`` (a statement of one question
  of a multi-question problem referred to it: it is the whole problem's). That statement
  can arrive first: it is recorded here, and the void is sent when this one arrives.

A statement's hash expires ``PERF_ENGINE_XAPI_STATEMENT_DAYS`` after it was first
written (its first receipt, or a void held for it); with 0 it is kept for good.

A statement's keys are one per statement, so every script touches one key (one hash
slot: a Redis Cluster is fine). A statement's hash names no learner: the scope holds the
engine's id, which the learner's own key maps back to their xAPI identifier,
``{prefix}:xapi:learner:{u<id>}``; that one is in the learner's hash slot and is erased
with their scopes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from performance_engine.store.stats_store import AsyncStatsStore, _groups

__all__ = [
    "LEARNER_LUA",
    "STATEMENT_LUA",
    "VOID_LUA",
    "Claim",
    "check_statements",
    "remember_learners",
    "statement_digest",
    "take_statements",
    "void_statements",
    "xapi_identifier",
]

# KEYS: the statement's hash. ARGV: its digest, its scope ('' if it is no attempt), the
# seconds to keep it from now (0: for good). Returns {0 new | 1 taken before with this body
# | 2 taken with another body, voided_by, void_reason}.
STATEMENT_LUA = """
local stored = redis.call('HGET', KEYS[1], 'digest')
if stored and stored ~= ARGV[1] then return {2, '', ''} end
if not stored then
  redis.call('HSET', KEYS[1], 'digest', ARGV[1])
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'scope', ARGV[2]) end
  if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
end
return {stored and 1 or 0, redis.call('HGET', KEYS[1], 'voided_by') or '',
        redis.call('HGET', KEYS[1], 'void_reason') or ''}
"""

# KEYS: the voided statement's hash. ARGV: the id of the statement that voids it, why
# (void or parent), the seconds to keep a void held for a statement not taken yet (0: for
# good). Records the first; returns {whether the voided one was taken (0/1), its scope or
# ''}.
VOID_LUA = """
if not redis.call('HGET', KEYS[1], 'voided_by') then
  local fresh = redis.call('EXISTS', KEYS[1]) == 0
  redis.call('HSET', KEYS[1], 'voided_by', ARGV[1], 'void_reason', ARGV[2])
  if fresh and tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
end
local taken = redis.call('HEXISTS', KEYS[1], 'digest')
return {taken, redis.call('HGET', KEYS[1], 'scope') or ''}
"""

# KEYS: the learner's xAPI identifier key, their erasure marker (one hash slot). ARGV: the
# identifier, the attempt's time. An attempt from before the learner's erasure does not
# bring the identifier back. Returns 1 if written.
LEARNER_LUA = """
local marker = redis.call('GET', KEYS[2])
if marker then
  local ok, record = pcall(cjson.decode, string.sub(marker, 17))
  if ok and type(record) == 'table' and tonumber(record.erased_at_ms)
      and tonumber(ARGV[2]) <= tonumber(record.erased_at_ms) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def statement_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class Claim(NamedTuple):
    """What taking a statement found: ``status`` 0 (new), 1 (a resend) or 2 (a conflict),
    the id of the statement that voided it ('' none) and why (``void`` or ``parent``)."""

    status: int
    voided_by: str
    reason: str


async def _evals(store: AsyncStatsStore, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
    """Run scripts (each with its eval arguments: key count, keys, values) in one pipeline."""
    if not calls:
        return []
    return await store._pipeline(
        lambda pipe: [pipe.execute_command("EVAL", script, *args) for script, args in calls]
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def check_statements(
    store: AsyncStatsStore, ids: Sequence[str], digests: Sequence[str]
) -> list[int]:
    """Without taking anything: per statement 0 (not taken), 1 (taken with this body) or
    2 (taken with another body). One ``EXISTS`` per group of keys first (a group: up to
    SCRIPT_BATCH keys, of one hash slot on a cluster): new statements, the usual case,
    need nothing more; only a group with a key that exists has its digests read."""
    if not ids:
        return []
    keys = [store.keys.xapi_statement(i) for i in ids]
    groups = _groups(keys, store.cluster)
    counts = await store._pipeline(
        lambda pipe: [pipe.exists(*(keys[i] for i in group)) for group in groups]
    )
    found = [0] * len(keys)
    known = [i for group, count in zip(groups, counts, strict=True) if count for i in group]
    if known:
        stored = await store._pipeline(lambda pipe: [pipe.hget(keys[i], "digest") for i in known])
        for i, digest in zip(known, stored, strict=True):
            found[i] = 0 if digest is None else 1 if _text(digest) == digests[i] else 2
    return found


async def take_statements(
    store: AsyncStatsStore,
    ids: Sequence[str],
    digests: Sequence[str],
    scopes: Sequence[str],
    keep_seconds: int = 0,
) -> list[Claim]:
    """Take statements (see :data:`STATEMENT_LUA`); ``scopes``: '' for one that is no
    attempt; ``keep_seconds``: how long a new one is remembered (0: for good)."""
    keys = store.keys
    found = await _evals(
        store,
        [
            (STATEMENT_LUA, [1, keys.xapi_statement(i), digest, scope, keep_seconds])
            for i, digest, scope in zip(ids, digests, scopes, strict=True)
        ],
    )
    return [
        Claim(int(status), _text(voided_by), _text(reason)) for status, voided_by, reason in found
    ]


async def void_statements(
    store: AsyncStatsStore, voids: Sequence[tuple[str, str, str]], keep_seconds: int = 0
) -> list[tuple[bool, str]]:
    """Record voids (voided id, voiding id, ``void`` or ``parent``; see :data:`VOID_LUA`):
    per void, whether the voided statement was taken and its scope ('' if it was no
    attempt, or not taken yet). ``keep_seconds``: how long a void held for a statement not
    taken yet is remembered (0: for good)."""
    keys = store.keys
    found = await _evals(
        store,
        [
            (VOID_LUA, [1, keys.xapi_statement(target), voider, reason, keep_seconds])
            for target, voider, reason in voids
        ],
    )
    return [(bool(int(taken)), _text(scope)) for taken, scope in found]


async def remember_learners(
    store: AsyncStatsStore, learners: Sequence[tuple[int, str, int]]
) -> None:
    """Keep each learner's xAPI identifier (user id, identifier, attempt time); see
    :data:`LEARNER_LUA`."""
    keys = store.keys
    unique = {user: (identifier, at) for user, identifier, at in learners}
    await _evals(
        store,
        [
            (LEARNER_LUA, [2, keys.xapi_learner(user), keys.erased(user), identifier, at])
            for user, (identifier, at) in unique.items()
        ],
    )


async def xapi_identifier(store: AsyncStatsStore, user_id: int) -> str | None:
    """The xAPI identifier the learner's statements carried (None: none kept)."""
    (found,) = await store.values([store.keys.xapi_learner(user_id)])
    return None if found is None else _text(found)
