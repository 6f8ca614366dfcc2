"""Redis: where the engine's state lives, and the one owner of every byte it stores.

- :mod:`.keyspace`: every key name;
- :mod:`.layout`: a scope's stored value (revision, state); its stats JSON is in the
  learner's stats hash (:mod:`.keyspace`);
- :mod:`.stats_store`: the stores, sync and asyncio, and their compare-and-set;
- :mod:`.ledger`: how far Redis's state reaches in the attempts topic;
- :mod:`.bulk` and :mod:`.kernels`: the backfill's compiled writers of new scopes;
- :mod:`.failures` and :mod:`.checks`: what a failure means, the checks before a start.

Nothing here imports the worker: the platform's client, the Django app and the tools
read and write through this package.
"""

from performance_engine.store.keyspace import KeySpace
from performance_engine.store.layout import legacy_stats, pack_scope, unpack_scope
from performance_engine.store.stats_store import (
    AsyncStatsStore,
    ScopeWrite,
    StatsStore,
    StoredScope,
)

__all__ = [
    "AsyncStatsStore",
    "KeySpace",
    "ScopeWrite",
    "StatsStore",
    "StoredScope",
    "legacy_stats",
    "pack_scope",
    "unpack_scope",
]
