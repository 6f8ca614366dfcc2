"""Backfill: historical attempts -> the same state and stats the stream keeps, in Redis.

The pandas batch engine computes every scope's state; scopes already in Redis are merged
(attempts they hold count once), and each scope is written with the store's
compare-and-set, so a backfill may run beside a live worker and may run twice: the second
run finds every attempt applied and writes nothing.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from performance_engine.erasure import Erasure
from performance_engine.errors import StateConflictError
from performance_engine.metrics.batch import ScopeIndex, compute_parts, scope_index
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import LoadResult, RowError
from performance_engine.metrics.history import Entry
from performance_engine.metrics.types import ScopeKey, with_revision
from performance_engine.store.bulk import FIRST_REVISION, PackedScopes, pack_fresh
from performance_engine.store.erasure import revision_floor
from performance_engine.store.params import ParamsFollower
from performance_engine.store.stats_store import ScopeWrite, StatsStore, StoredScope
from performance_engine.tools.history_files import load_attempts, without_erased

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["BackfillReport", "backfill_file", "backfill_frame", "backfill_loaded", "backfill_sql"]

logger = logging.getLogger(__name__)

CHUNK_SCOPES = 5_000
MAX_CONFLICT_ROUNDS = 10

Progress = Callable[[str, int, int], None]


@dataclass(slots=True)
class BackfillReport:
    rows: int = 0
    scopes: int = 0
    written: int = 0
    unchanged: int = 0
    attempts_applied: int = 0
    rejected: list[RowError] = field(default_factory=list)
    #: Attempts of erased learners from before their erasure, skipped; and the learners.
    erased_attempts: int = 0
    erased_learners: int = 0

    def merge(self, other: BackfillReport) -> None:
        """Add the counts of a backfill of other rows."""
        self.rows += other.rows
        self.scopes += other.scopes
        self.written += other.written
        self.unchanged += other.unchanged
        self.attempts_applied += other.attempts_applied

    def summary(self) -> str:
        text = (
            f"backfilled {self.rows} attempts into {self.scopes} scopes: "
            f"{self.attempts_applied} newly applied, {self.written} scopes written, "
            f"{self.unchanged} unchanged"
        )
        if self.rejected:
            text += f"; {len(self.rejected)} invalid rows skipped"
        if self.erased_attempts:
            text += (
                f"; {self.erased_attempts} attempts of {self.erased_learners} erased "
                "learners skipped"
            )
        return text


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


def backfill_file(
    path: Path | str,
    store: StatsStore,
    calculator: MetricsCalculator,
    *,
    skip_invalid: bool = False,
    progress: Progress = _no_progress,
    erasures: Mapping[int, Erasure] | None = None,
    include_erased: bool = False,
) -> BackfillReport:
    """Validate a CSV/JSONL/Parquet file and backfill it (see :func:`backfill_frame`)."""
    progress("reading", 0, 1)
    loaded = load_attempts(path, calculator.learning_modes, skip_invalid=skip_invalid)
    progress("reading", 1, 1)
    return backfill_loaded(
        loaded, store, calculator, progress, erasures=erasures, include_erased=include_erased
    )


def backfill_sql(
    engine: Engine,
    store: StatsStore,
    calculator: MetricsCalculator,
    *,
    query: str | None = None,
    table: str | None = None,
    skip_invalid: bool = False,
    progress: Progress = _no_progress,
    erasures: Mapping[int, Erasure] | None = None,
    include_erased: bool = False,
) -> BackfillReport:
    """Read the attempts of an SQL ``query`` or ``table`` in chunks, validate them like a
    file's rows, and backfill them (see :func:`backfill_frame`)."""
    from performance_engine.tools.sql_history import load_sql_attempts

    loaded = load_sql_attempts(
        engine,
        calculator.learning_modes,
        query=query,
        table=table,
        skip_invalid=skip_invalid,
        progress=progress,
    )
    return backfill_loaded(
        loaded, store, calculator, progress, erasures=erasures, include_erased=include_erased
    )


def backfill_loaded(
    loaded: LoadResult,
    store: StatsStore,
    calculator: MetricsCalculator,
    progress: Progress = _no_progress,
    *,
    erasures: Mapping[int, Erasure] | None = None,
    include_erased: bool = False,
) -> BackfillReport:
    """Backfill validated rows (:func:`backfill_frame`); the rows they left out are the
    report's ``rejected``."""
    report = backfill_frame(
        loaded.frame,
        store,
        calculator,
        progress=progress,
        erasures=erasures,
        include_erased=include_erased,
    )
    report.rejected = loaded.errors
    return report


def backfill_frame(
    frame: pd.DataFrame,
    store: StatsStore,
    calculator: MetricsCalculator,
    *,
    progress: Progress = _no_progress,
    erasures: Mapping[int, Erasure] | None = None,
    include_erased: bool = False,
) -> BackfillReport:
    """Merge a normalised frame of attempts into the stored state of its scopes, with the
    learning parameters in force (a set published to Redis replaces the calculator's
    parameter file's; see ``store.params``).

    ``erasures`` (the erased learners, :func:`~performance_engine.platform.erase.
    read_erasures`): their attempts that occurred up to their erasure are skipped
    (counted) unless ``include_erased``; their scopes start again above the erased
    revisions.

    The cyclic garbage collector is paused meanwhile (and restored after): the backfill
    creates a few objects per scope, none in a cycle, and collections triggered by
    hundreds of thousands of them cost a third of the state building.
    """
    ParamsFollower(calculator, store.keys, calculator.parameters).refresh_sync(store)
    erasures = erasures or {}
    frame, skipped, learners = without_erased(frame, {} if include_erased else erasures)
    erased = frame["user_id"].isin(list(erasures)) if erasures else None
    with _collector_paused():
        if erased is None or not erased.any():
            report = _backfill_frame(frame, store, calculator, progress, {})
        else:  # the erased learners' later attempts: written with their erasures known
            report = _backfill_frame(
                frame[~erased].reset_index(drop=True), store, calculator, progress, {}
            )
            again = _backfill_frame(
                frame[erased].reset_index(drop=True), store, calculator, progress, erasures
            )
            report.merge(again)
    report.rows += skipped
    report.erased_attempts, report.erased_learners = skipped, learners
    return report


@contextmanager
def _collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _backfill_frame(
    frame: pd.DataFrame,
    store: StatsStore,
    calculator: MetricsCalculator,
    progress: Progress,
    erasures: Mapping[int, Erasure],
) -> BackfillReport:
    report = BackfillReport(rows=len(frame))
    index = scope_index(frame)
    scopes = index[1]
    report.scopes = len(scopes)
    base: dict[ScopeKey, StoredScope] = {}
    for start in range(0, len(scopes), CHUNK_SCOPES):
        chunk = scopes[start : start + CHUNK_SCOPES]
        _remember(base, chunk, store)
        progress("reading state", min(start + CHUNK_SCOPES, len(scopes)), len(scopes))

    pending, pending_index = frame, index
    for _ in range(MAX_CONFLICT_ROUNDS):
        refused = _write_all(
            pending, pending_index, store, calculator, base, report, progress, erasures
        )
        if not refused:
            return report
        logger.info("%d scopes changed during the backfill; merging them again", len(refused))
        _remember(base, refused, store)
        pending = _rows_of(frame, refused)
        pending_index = scope_index(pending)
    raise StateConflictError(
        f"{len(refused)} scopes kept changing while being backfilled; run the backfill again"
    )


def _remember(base: dict[ScopeKey, StoredScope], scopes: list[ScopeKey], store: StatsStore) -> None:
    for scope, stored in zip(scopes, store.read(scopes), strict=True):
        if stored is not None:
            base[scope] = stored


def _write_all(
    frame: pd.DataFrame,
    index: ScopeIndex,
    store: StatsStore,
    calculator: MetricsCalculator,
    base: dict[ScopeKey, StoredScope],
    report: BackfillReport,
    progress: Progress,
    erasures: Mapping[int, Erasure],
) -> list[ScopeKey]:
    base_states = {s: stored.state for s, stored in base.items()}

    def load_history(scopes: Sequence[ScopeKey]) -> list[list[Entry] | None]:
        wanted = [(scope, base_states[scope].history) for scope in scopes]
        found: list[list[Entry] | None] = []
        for start in range(0, len(wanted), CHUNK_SCOPES):
            found += store.read_histories(wanted[start : start + CHUNK_SCOPES])
        lost = sum(history is None for history in found)
        if lost:
            logger.warning(
                "%d scopes' stored histories are missing or damaged; they are rebuilt from "
                "this file's attempts (their learning metrics stay unknown unless it holds "
                "every attempt they counted)",
                lost,
            )
        return found

    fresh, result = compute_parts(
        frame, calculator, base_states, index=index, load_history=load_history
    )
    total = len(fresh) + len(result)
    refused: list[ScopeKey] = []
    done = 0
    if fresh.packable(calculator) and not erasures:  # new scopes: straight from the arrays
        # A thread sends each chunk while this one packs the next: the send waits on Redis
        # and the packing holds the GIL, so the two overlap. One chunk waits at most.
        with ThreadPoolExecutor(1, thread_name_prefix="backfill-writer") as writer:
            sending: Future[list[ScopeKey]] | None = None
            for start in range(0, len(fresh), CHUNK_SCOPES):
                packed = pack_fresh(fresh, calculator, start, min(start + CHUNK_SCOPES, len(fresh)))
                if sending is not None:
                    refused.extend(sending.result())
                    progress("writing", start, total)
                sending = writer.submit(_create, store, packed, report)
            if sending is not None:
                refused.extend(sending.result())
                progress("writing", len(fresh), total)
        done = len(fresh)
    else:
        if calculator.metrics and len(fresh):
            _warn_slow_path(calculator)
        result = fresh.result(calculator).joined(result)
    for chunk in result.chunks(CHUNK_SCOPES):
        writes: list[ScopeWrite] = []
        applies: list[int] = []
        for scope, state in zip(chunk.scopes, chunk.states, strict=True):
            if scope not in base:
                state.revision = FIRST_REVISION + revision_floor(erasures, scope)
        for scope, state, stats_json, history in zip(
            chunk.scopes, chunk.states, chunk.stats_json(calculator), chunk.histories, strict=True
        ):
            before = base.get(scope)
            if before is None:
                epoch = erasures[scope.user_id].epoch if scope.user_id in erasures else ""
                writes.append(ScopeWrite(scope, 0, state, stats_json, history, epoch))
                applies.append(state.version)
            elif before.state == state and before.stats_json == stats_json:
                report.unchanged += 1
            else:  # a change: the next revision
                state.revision = before.state.revision + 1
                stats_json = with_revision(stats_json, state.revision)
                writes.append(ScopeWrite(scope, before.state.revision, state, stats_json, history))
                applies.append(state.version - before.state.version)
        refused.extend(_flush(store, writes, applies, report))
        done += len(chunk)
        progress("writing", done, total)
    return refused


#: The custom metrics already warned about (once per process and set of metrics).
_WARNED: set[tuple[str, ...]] = set()


def _warn_slow_path(calculator: MetricsCalculator) -> None:
    """Say once that custom metrics turn the packed writer of new scopes off."""
    names = tuple(sorted(calculator.metrics))
    if names in _WARNED:
        return
    _WARNED.add(names)
    logger.warning(
        "custom metrics %s: the backfill writes new scopes one by one (a ScopeState and "
        "the per-scope custom metrics each) instead of packing them from arrays; see "
        "docs/metrics.md for what that costs",
        ", ".join(names),
    )


def _create(store: StatsStore, packed: PackedScopes, report: BackfillReport) -> list[ScopeKey]:
    refused = store.create(packed)
    found = set(refused)
    for scope, version in zip(packed.scopes, packed.versions, strict=True):
        if scope not in found:
            report.written += 1
            report.attempts_applied += version
    return refused


def _flush(
    store: StatsStore, writes: list[ScopeWrite], applies: list[int], report: BackfillReport
) -> list[ScopeKey]:
    """Write; count what landed (``applies``: the attempts each write applies)."""
    if not writes:
        return []
    refused = {w.scope for w in store.write(writes)}
    for w, applied in zip(writes, applies, strict=True):
        if w.scope not in refused:
            report.written += 1
            report.attempts_applied += applied
    return list(refused)


def _rows_of(frame: pd.DataFrame, scopes: list[ScopeKey]) -> pd.DataFrame:
    wanted = pd.MultiIndex.from_tuples(
        [(s.user_id, s.sub_topic_id, s.learning_mode) for s in scopes]
    )
    index = pd.MultiIndex.from_arrays(
        [frame["user_id"], frame["sub_topic_id"], frame["learning_mode"]]
    )
    mask: np.ndarray[tuple[int], np.dtype[np.bool_]] = np.asarray(index.isin(wanted))
    return frame[mask].reset_index(drop=True)
