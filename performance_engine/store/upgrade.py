"""Moving a store written in layout 1 (each scope's stats JSON after its state, in one
value) to layout 2 (the stats JSON in the learner's stats hash; see :mod:`.keyspace`).

The engine reads both: a scope not yet moved keeps serving its stats to Python readers,
and the next write of it writes layout 2. Readers in other languages see only the stats
hashes, so a store written by an earlier release is upgraded once with
``perf-engine upgrade-store``; it can run while workers write (each scope moves only if
its value is still the one read) and can be run again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from performance_engine.store.layout import legacy_stats
from performance_engine.store.stats_store import StatsStore, _groups

__all__ = ["UpgradeReport", "upgrade_layout"]

# KEYS: per scope, its key and its learner's stats hash. ARGV: four per scope: the value
# read, that value without its stats, the scope's field and its stats JSON. A scope moves
# only if its value is still the one read. Returns how many moved.
MOVE_STATS_LUA = """
local moved = 0
for i = 1, #KEYS / 2 do
  local at = 4 * (i - 1)
  if redis.call('GET', KEYS[2 * i - 1]) == ARGV[at + 1] then
    redis.call('SET', KEYS[2 * i - 1], ARGV[at + 2])
    redis.call('HSET', KEYS[2 * i], ARGV[at + 3], ARGV[at + 4])
    moved = moved + 1
  end
end
return moved
"""


@dataclass(slots=True)
class UpgradeReport:
    scanned: int = 0
    moved: int = 0  # layout-1 values whose stats went to the stats hash
    changed: int = 0  # written by someone else between the read and the move: left alone


_Move = tuple[str, str, bytes, bytes, str, bytes]  # key, stats key, value, kept, field, stats


def _queue_moves(rows: list[_Move], cluster: bool, pipe: Any) -> None:
    for group in _groups([row[0] for row in rows], cluster):
        keys: list[object] = []
        args: list[object] = []
        for i in group:
            keys += rows[i][:2]
            args += rows[i][2:]
        pipe.execute_command("EVAL", MOVE_STATS_LUA, len(keys), *keys, *args)


def upgrade_layout(store: StatsStore, batch: int = 500) -> UpgradeReport:
    """Move every layout-1 scope's stats JSON into its learner's stats hash."""
    report = UpgradeReport()
    keys = store.keys
    for scopes in store.scan_scopes(batch):
        report.scanned += len(scopes)
        names = [keys.for_scope(scope) for scope in scopes]
        values = store.values(names)
        rows: list[_Move] = []
        for scope, name, value in zip(scopes, names, values, strict=True):
            stats = legacy_stats(value) if value is not None else b""
            if value is None or not stats:
                continue
            field = keys.stats_field(scope.sub_topic_id, scope.learning_mode)
            kept = value[: len(value) - len(stats)]
            rows.append((name, keys.stats(scope.user_id), value, kept, field, stats))
        if not rows:
            continue

        moved = sum(store._pipeline(partial(_queue_moves, rows, store.cluster)))
        report.moved += moved
        report.changed += len(rows) - moved
    return report
