"""The xAPI statements taken in, by id: what makes a resend a duplicate and a reused id
with another body a conflict.

One string per statement, ``{prefix}:xapi:stmt:<statement id>``, holding the SHA-256 of
the statement's JSON as taken. :data:`CLAIM_LUA` claims many ids in one call: an id not
seen yet is recorded; one seen with the same body is a resend; one seen with another body
is a conflict, and then nothing of the call is recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from performance_engine.store.failures import REDIS_ERRORS, failure
from performance_engine.store.stats_store import AsyncStatsStore

__all__ = ["CLAIM_LUA", "claim_statements", "statement_digest"]

# KEYS: the statements' keys. ARGV: their digests. Returns, per statement, 0 (new), 1 (seen
# with this body) or 2 (seen with another body); with any 2, nothing is written.
CLAIM_LUA = """
local found = {}
local conflict = false
for i = 1, #KEYS do
  local stored = redis.call('GET', KEYS[i])
  if not stored then
    found[i] = 0
  elseif stored == ARGV[i] then
    found[i] = 1
  else
    found[i] = 2
    conflict = true
  end
end
if not conflict then
  for i = 1, #KEYS do
    if found[i] == 0 then redis.call('SET', KEYS[i], ARGV[i]) end
  end
end
return found
"""


def statement_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def claim_statements(
    store: AsyncStatsStore, ids: Sequence[str], digests: Sequence[str]
) -> list[int]:
    """Claim statement ids (see :data:`CLAIM_LUA`); one call (keys of no common hash
    slot: not for a Redis Cluster, where each id is claimed on its own)."""
    keys = [f"{store.keys.prefix}:xapi:stmt:{i}" for i in ids]
    try:
        if store.cluster:
            found: list[int] = []
            for key, digest in zip(keys, digests, strict=True):
                found += await store.client.eval(CLAIM_LUA, 1, key, digest)
            return found
        return list(await store.client.eval(CLAIM_LUA, len(keys), *keys, *digests))
    except REDIS_ERRORS as exc:
        raise failure(store.url, exc) from exc
