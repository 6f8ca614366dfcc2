"""``perf-engine refold``: every stored scope's learning values recomputed now with the
parameters in force, from its history, and its new stats published (SPEC 3.2).

Without it a scope is refolded at its next attempt. The scopes are read a batch at a
time (``SCAN``), and a scope is rewritten only where its values were folded with other
parameters or its stats name another ``params_version``. Each write is a compare-and-set
on the scope's ``revision``, which it raises by one: a scope that a worker wrote
meanwhile is read again and refolded again, so a running worker loses nothing. Stopped
at any point (even by ``kill -9``), every scope holds either its old values or its new
ones, and running the command again finishes the rest; the ``stats-updated`` events of
the last batch written before the stop may be missing (the stats in Redis are right).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from performance_engine.events import Source, stats_event
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.history import Entry, HistoryWrite
from performance_engine.metrics.state import ScopeState
from performance_engine.metrics.types import ScopeKey
from performance_engine.store.params import ParamsFollower
from performance_engine.store.stats_store import ScopeWrite, StatsStore, StoredScope

__all__ = ["REFOLD_SOURCE", "RefoldReport", "refold"]

#: The ``source.topic`` of the events a refold publishes (partition and offset are -1).
REFOLD_SOURCE = "perf-engine refold"

Send = Callable[[bytes, bytes], None]


@dataclass
class RefoldReport:
    """What a refold did: scopes seen (of the chosen sub-topic and mode), refolded, already
    current, and skipped because their history is incomplete (state from the first
    release: backfill the platform's history first)."""

    scanned: int = 0
    refolded: int = 0
    current: int = 0
    incomplete: int = 0
    conflicts: int = 0


def refold(
    store: StatsStore,
    calculator: MetricsCalculator,
    send: Send,
    *,
    sub_topic_id: int | None = None,
    learning_mode: str | None = None,
    batch: int = 500,
    flush: Callable[[], None] = lambda: None,
    progress: Callable[[RefoldReport], None] = lambda report: None,
) -> RefoldReport:
    """Refold the stored scopes (of one sub-topic and mode, if given) with the learning
    parameters in force (a set published to Redis replaces the calculator's parameter
    file's; see ``store.params``); ``send(key, value)`` publishes a stats event, ``flush``
    waits for them."""
    ParamsFollower(calculator, store.keys, calculator.parameters).refresh_sync(store)
    report = RefoldReport()
    for scopes in store.scan_scopes(batch, sub_topic_id, learning_mode):
        report.scanned += len(scopes)
        pending = scopes
        while pending:
            stored = store.read(pending)
            writes = _writes(calculator, store, pending, stored, report)
            refused = {w.scope for w in store.write(writes)} if writes else set()
            now_ms = int(time.time() * 1000)
            for w in writes:
                if w.scope not in refused:
                    report.refolded += 1
                    source = Source(REFOLD_SOURCE, -1, -1, w.state.tail_id)
                    send(*stats_event(w.scope, w.state.revision, w.stats_json, source, now_ms))
            report.conflicts += len(refused)
            pending = [scope for scope in pending if scope in refused]
        flush()
        progress(report)
    return report


def _writes(
    calculator: MetricsCalculator,
    store: StatsStore,
    scopes: Sequence[ScopeKey],
    stored: Sequence[StoredScope | None],
    report: RefoldReport,
) -> list[ScopeWrite]:
    chosen: list[tuple[ScopeKey, StoredScope]] = []
    for scope, found in zip(scopes, stored, strict=True):
        if found is None:  # removed since the scan
            continue
        state = found.state
        if not state.history_complete:
            report.incomplete += 1
            continue
        group = calculator.group(scope)
        wanted = b'"params_version":' + msgspec.json.encode(group.version)
        if state.signature == group.signature and wanted in found.stats_json:
            report.current += 1
            continue
        chosen.append((scope, found))
    plans = [calculator.plan(scope, found.state, []) for scope, found in chosen]
    wanted_histories = [
        (scope, found.state.history)
        for (scope, found), plan in zip(chosen, plans, strict=True)
        if plan.needs_history
    ]
    loaded = dict(
        zip(
            (scope for scope, _ in wanted_histories),
            store.read_histories(wanted_histories) if wanted_histories else [],
            strict=True,
        )
    )
    states: list[tuple[ScopeKey, int, ScopeState]] = []
    entries: list[list[Entry] | None] = []
    history_writes: list[HistoryWrite | None] = []
    for (scope, found), plan in zip(chosen, plans, strict=True):
        state = found.state
        history = loaded.get(scope) if plan.needs_history else None
        if plan.needs_history and history is None:
            report.incomplete += 1  # its history key is gone: leave it as it is
            continue
        expected = state.revision
        outcome = calculator.apply_plan(scope, state, plan, history)
        state.revision += 1  # its stored stats change
        states.append((scope, expected, state))
        entries.append(outcome.entries)
        history_writes.append(outcome.history)
    stats = calculator.stats_json_many(
        [scope for scope, _, _ in states],
        [state for _, _, state in states],
        entries if calculator.frame_metrics else None,
    )
    return [
        ScopeWrite(scope, expected, state, stats_json, history_write)
        for (scope, expected, state), stats_json, history_write in zip(
            states, stats, history_writes, strict=True
        )
    ]
