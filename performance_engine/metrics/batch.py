"""The pandas batch engine: the state and stats of every scope of a frame of attempts.

Vectorised over the whole frame (sorts, bincounts and segment reductions); the only
Python loop runs once per *scope* to assemble its state. Duplicates of an ``attempt_id``
within a scope count once (the first in frame order wins), exactly as in the stream,
because both deduplicate by the same fingerprint. This is also the oracle the stream
is tested against.

New scopes are built column-wise, sequential metrics and histories included
(:mod:`metrics.sequence`). Scopes that already have a state (``base``: a backfill into
what the stream holds, older history included) go through the calculator's own
plan/apply, with their histories, so a merge is exactly what the stream would do.

Custom metrics cost more here: incremental and sequential ones are folded over each
scope's attempts in Python, a frame-based one is called once per scope with a pandas
groupby.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import xxhash

from performance_engine.metrics.base import attempt_from_row
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.history import Entry, HistoryWrite, entry_of
from performance_engine.metrics.kernels import distinct_attempts, unseen
from performance_engine.metrics.sequence import (
    encode_history_columns,
    fold_learning_columns,
    learning_order,
)
from performance_engine.metrics.state import ScopeState, fingerprint
from performance_engine.metrics.types import DIFFICULTIES, PerformanceStatsData, ScopeKey

__all__ = [
    "BatchResult",
    "HistoryLoader",
    "ScopeIndex",
    "compute_states",
    "compute_stats",
    "fingerprints",
    "scope_index",
]

_U8 = np.dtype("<u8")
_DIFFICULTY_NAMES = np.array([d.value for d in DIFFICULTIES], dtype=object)

#: Reads the stored histories of some scopes: their entries in learning order, or None for
#: a history that is lost (see ``MetricsCalculator.apply_plan``).
HistoryLoader = Callable[[Sequence[ScopeKey]], Sequence[list[Entry] | None]]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Scopes, their states and what to store in their histories, in the same order.

    ``entries`` holds each scope's whole history, when frame-based metrics need it.
    """

    scopes: list[ScopeKey]
    states: list[ScopeState]
    histories: list[HistoryWrite | None]
    entries: list[list[Entry] | None] | None = None

    def __len__(self) -> int:
        return len(self.scopes)

    def items(self) -> Iterator[tuple[ScopeKey, ScopeState]]:
        return zip(self.scopes, self.states, strict=True)

    def stats(self, calculator: MetricsCalculator) -> dict[ScopeKey, PerformanceStatsData]:
        entries: Sequence[list[Entry] | None] = self.entries or [None] * len(self.scopes)
        return {
            scope: calculator.stats(scope, state, history)
            for scope, state, history in zip(self.scopes, self.states, entries, strict=True)
        }

    def stats_json(self, calculator: MetricsCalculator) -> list[bytes]:
        """Each scope's stats JSON (see ``MetricsCalculator.stats_json_many``)."""
        return calculator.stats_json_many(self.scopes, self.states, self.entries)

    def chunks(self, size: int) -> Iterator[BatchResult]:
        for start in range(0, len(self.scopes), size):
            end = start + size
            yield BatchResult(
                self.scopes[start:end],
                self.states[start:end],
                self.histories[start:end],
                None if self.entries is None else self.entries[start:end],
            )


def _id_bytes(attempt_ids: Any) -> pa.Array:
    """The ids as an Arrow binary array of their UTF-8 bytes."""
    values = attempt_ids.array if isinstance(attempt_ids, pd.Series) else attempt_ids
    try:  # Arrow hands out the UTF-8 bytes without a Python str per id
        array = pa.array(values, type=pa.large_string()).cast(pa.large_binary())
    except (pa.ArrowException, UnicodeEncodeError):  # e.g. lone surrogates: not UTF-8
        array = pa.array([s.encode("utf-8", "surrogatepass") for s in values], pa.large_binary())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array


def fingerprints(attempt_ids: Any) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """The dedup fingerprint of each attempt id (see ``metrics.state.fingerprint``)."""
    return _fingerprints(_id_bytes(attempt_ids))


def _fingerprints(ids: pa.Array) -> np.ndarray[Any, np.dtype[np.uint64]]:
    digest = xxhash.xxh3_64_intdigest
    blobs = ids.to_pylist()
    return np.fromiter(map(digest, blobs), dtype=np.uint64, count=len(blobs))


def compute_stats(
    frame: pd.DataFrame, calculator: MetricsCalculator
) -> dict[ScopeKey, PerformanceStatsData]:
    """The stats of every scope of a normalised frame (see ``metrics.loader``)."""
    return compute_states(frame, calculator).stats(calculator)


def compute_states(
    frame: pd.DataFrame,
    calculator: MetricsCalculator,
    base: Mapping[ScopeKey, ScopeState] | None = None,
    *,
    index: ScopeIndex | None = None,
    load_history: HistoryLoader | None = None,
) -> BatchResult:
    """The state of every scope in ``frame`` after applying its attempts.

    ``base`` holds states that already exist (e.g. in Redis): their attempts are merged
    with the frame's, attempts already applied to them change nothing. Merging may need
    some of their histories: ``load_history`` reads them. ``index`` is the frame's
    :func:`scope_index`, if the caller has it already.
    """
    n = len(frame)
    if n == 0:
        return BatchResult([], [], [])
    scope_codes, scopes = index if index is not None else scope_index(frame)
    ids = _id_bytes(frame["attempt_id"])
    fps = _fingerprints(ids)
    # One row per distinct (scope, fingerprint), the first in frame order, sorted by both.
    rows, sc, fp = _distinct_attempts(scope_codes, fps, len(scopes))

    if base:
        return _merge_into_base(frame, ids, calculator, base, scopes, sc, fp, rows, load_history)
    return _build_states(frame, ids, calculator, scopes, sc, fp, rows)


#: Each row's scope code, and the scope of each code (codes in order of first appearance).
ScopeIndex = tuple[np.ndarray[Any, np.dtype[np.int64]], list[ScopeKey]]


def scope_index(frame: pd.DataFrame) -> ScopeIndex:
    """Each row's scope code, and the scope of each code."""
    user = frame["user_id"].to_numpy(np.int64)
    sub = frame["sub_topic_id"].to_numpy(np.int64)
    mode_codes, mode_names = pd.factorize(frame["learning_mode"])
    codes, first_rows = _scope_codes(user, sub, mode_codes)
    users, subs, modes = user[first_rows].tolist(), sub[first_rows].tolist(), mode_codes[first_rows]
    names = [str(m) for m in mode_names]
    return codes, [
        ScopeKey(u, s, names[m]) for u, s, m in zip(users, subs, modes.tolist(), strict=True)
    ]


def _distinct_attempts(
    scope_codes: np.ndarray[Any, Any], fps: np.ndarray[Any, Any], n_scopes: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Rows of the distinct (scope, fingerprint) pairs, sorted by both; for each pair the
    first row in frame order. Returns (rows, their scope codes, their fingerprints)."""
    rows = distinct_attempts(
        np.asarray(scope_codes, dtype=np.int64), np.asarray(fps, dtype=np.uint64), n_scopes
    )
    return rows, scope_codes[rows], fps[rows]


def _scope_codes(
    user: np.ndarray[Any, Any], sub: np.ndarray[Any, Any], mode_codes: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.int64]]]:
    """A dense code per scope (in order of first appearance) and each scope's first row."""
    n_modes = int(mode_codes.max()) + 1
    low = min(int(user.min()), int(sub.min()))
    if low >= 0 and (int(user.max()) + 1) * (int(sub.max()) + 1) * n_modes < 2**62:
        combined = (user * (int(sub.max()) + 1) + sub) * n_modes + mode_codes
        codes, uniques = pd.factorize(combined)
    else:  # ids too large to pack: pack their dense codes instead
        user_codes, user_uniques = pd.factorize(user)
        sub_codes, sub_uniques = pd.factorize(sub)
        width = len(sub_uniques) * n_modes
        if len(user_uniques) * width < 2**62:
            combined = (user_codes.astype(np.int64) * width + sub_codes * n_modes) + mode_codes
            codes, uniques = pd.factorize(combined)
        else:  # pragma: no cover - needs more than 2**31 distinct users and sub-topics
            codes, uniques = pd.MultiIndex.from_arrays([user, sub, mode_codes]).factorize()
    first = np.empty(len(uniques), dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    return codes.astype(np.int64), first


def _segments(codes: np.ndarray[Any, Any], size: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Offsets of each code's run in an array sorted by code (``size + 1`` entries)."""
    offsets = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(codes, minlength=size), out=offsets[1:])
    return offsets


def _distinct_questions(
    key: np.ndarray[Any, Any], question: np.ndarray[Any, Any], size: int
) -> tuple[bytes, list[int]]:
    """Per key, the sorted distinct question ids packed as uint64: one buffer + offsets."""
    if len(key) == 0:
        return b"", [0] * (size + 1)
    bits = max(1, (size - 1).bit_length())
    if bits <= 40 and int(question.max()) < 1 << (64 - bits):
        # One sort of packed (key, question) values; no permutation needed.
        shift = np.uint64(64 - bits)
        packed = np.sort((key.astype(np.uint64) << shift) | question.astype(np.uint64))
        first = np.ones(len(packed), dtype=bool)
        first[1:] = packed[1:] != packed[:-1]
        packed = packed[first]
        k = (packed >> shift).astype(np.int64)
        q = packed & np.uint64((1 << (64 - bits)) - 1)
        return q.astype(_U8).tobytes(), (_segments(k, size) * 8).tolist()
    order = np.lexsort((question, key))
    k, q = key[order], question[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = (k[1:] != k[:-1]) | (q[1:] != q[:-1])
    buffer = q[first].astype(_U8).tobytes()
    return buffer, (_segments(k[first], size) * 8).tolist()


def _slices(buffer: bytes, offsets: list[int]) -> list[bytes]:
    return [buffer[lo:hi] for lo, hi in pairwise(offsets)]


def _build_states(
    frame: pd.DataFrame,
    ids: pa.Array,
    calculator: MetricsCalculator,
    scopes: list[ScopeKey],
    sc: np.ndarray[Any, Any],
    fp: np.ndarray[Any, Any],
    rows: np.ndarray[Any, Any],
) -> BatchResult:
    """New scopes, column-wise: ``rows`` are their distinct attempts sorted by (scope,
    fingerprint), ``sc`` their dense scope codes, ``fp`` their fingerprints."""
    n_scopes = len(scopes)
    if n_scopes == 0:
        return BatchResult([], [], [])
    difficulty = frame["difficulty"].to_numpy(np.int64)[rows]
    correct = frame["is_correct"].to_numpy(bool)[rows]
    question = frame["question_id"].to_numpy(np.int64)[rows]
    occurred = frame["occurred_at"].to_numpy(np.int64)[rows]
    key = sc * 3 + difficulty
    size = n_scopes * 3
    attempts = np.bincount(key, minlength=size).tolist()
    corrects = np.bincount(key[correct], minlength=size).tolist()
    q_buffer, q_offsets = _distinct_questions(key, question, size)
    s_buffer, s_offsets = _distinct_questions(key[correct], question[correct], size)
    seen_offsets = _segments(sc, n_scopes)  # rows are sorted by (scope, fingerprint)
    seen_buffer = fp.astype(_U8).tobytes()
    starts = seen_offsets[:-1]
    firsts = np.minimum.reduceat(occurred, starts).tolist()
    lasts = np.maximum.reduceat(occurred, starts).tolist()
    seen_bytes = (seen_offsets * 8).tolist()

    # The same rows in learning order: the sequential metrics and the histories.
    order = learning_order(sc, occurred, ids, rows)
    ordered_rows = rows[order]
    ordered_ids = ids.take(pa.array(ordered_rows))
    difficulty_in_order, correct_in_order = difficulty[order], correct[order]
    question_in_order = question[order]
    modes = sorted({scope.learning_mode for scope in scopes})
    mode_code = {mode: i for i, mode in enumerate(modes)}
    scope_modes = np.array([mode_code[scope.learning_mode] for scope in scopes], dtype=np.int64)
    learning = fold_learning_columns(
        seen_offsets,
        difficulty_in_order,
        correct_in_order,
        question_in_order,
        [calculator.learning_modes.params(mode) for mode in modes],
        scope_modes,
    ).states()
    number, number_missing = _optional(frame["attempt_number"], ordered_rows)
    spent, spent_missing = _optional(frame["time_spent_ms"], ordered_rows)
    blobs = encode_history_columns(
        seen_offsets,
        occurred[order],
        ordered_ids,
        question_in_order,
        difficulty_in_order,
        correct_in_order,
        number,
        number_missing,
        spent,
        spent_missing,
    )
    tails = ordered_ids.take(pa.array(seen_offsets[1:] - 1)).cast(pa.large_string()).to_pylist()
    signatures = [calculator.signature(mode) for mode in modes]

    questions = _slices(q_buffer, q_offsets)  # one blob per (scope, difficulty)
    solved = _slices(s_buffer, s_offsets)
    seen = _slices(seen_buffer, seen_bytes)
    versions = np.diff(seen_offsets).tolist()
    thirds = range(0, size, 3)
    limit = calculator.history_inline_limit
    states = [
        ScopeState(
            version,
            first,
            last,
            attempts[k : k + 3],
            corrects[k : k + 3],
            questions[k : k + 3],
            solved[k : k + 3],
            blob,
            {},
            (),
            version,
            len(history) > limit,
            b"" if len(history) > limit else history,
            tail,
            folded,
            None,
            signatures[mode],
        )
        for version, first, last, k, blob, history, tail, folded, mode in zip(
            versions,
            firsts,
            lasts,
            thirds,
            seen,
            blobs,
            tails,
            learning,
            scope_modes.tolist(),
            strict=True,
        )
    ]
    # Small histories stay in the state; the others go to their own keys.
    histories: list[HistoryWrite | None] = [
        HistoryWrite(blob, True) if len(blob) > limit else None for blob in blobs
    ]
    entries: list[list[Entry] | None] | None = None
    if calculator.incremental_metrics or calculator.sequential_metrics or calculator.frame_metrics:
        entries = _custom_metrics(frame, calculator, scopes, states, sc, rows)
    return BatchResult(scopes, states, histories, entries)


def _optional(
    column: pd.Series, rows: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """An optional integer column at ``rows``: its values (0 where absent) and a mask."""
    missing = column.isna().to_numpy(dtype=bool)[rows]
    return column.to_numpy(dtype=np.int64, na_value=0)[rows], missing


def _custom_metrics(
    frame: pd.DataFrame,
    calculator: MetricsCalculator,
    scopes: list[ScopeKey],
    states: list[ScopeState],
    sc: np.ndarray[Any, Any],
    rows: np.ndarray[Any, Any],
) -> list[list[Entry] | None] | None:
    """Fill the custom metrics' states (the slow path, only when some are registered);
    returns each scope's history entries when frame-based metrics need them.

    Incremental and sequential metrics are folded over each scope's attempts in learning
    order (occurred_at, then attempt_id).
    """
    distinct = seed_frame(frame.iloc[rows]).assign(_scope=sc)
    distinct = distinct.sort_values(["_scope", "occurred_at", "attempt_id"], kind="stable")
    entries: list[list[Entry] | None] | None = [] if calculator.frame_metrics else None
    for code, group in distinct.groupby("_scope", sort=False):
        state = states[cast(int, code)]
        attempts = [attempt_from_row(row) for row in group.to_dict("records")]
        for metric in calculator.incremental_metrics:
            value = metric.initial()
            for attempt in attempts:
                value = metric.update(value, attempt)
            state.custom[metric.name] = value
        if calculator.sequential_metrics:
            folds = state.sequential = {}
            for seq in calculator.sequential_metrics:
                folded = seq.initial()
                for attempt in attempts:
                    folded = seq.update(folded, attempt)
                folds[seq.name] = folded
        if entries is not None:
            entries.append([entry_of(attempt) for attempt in attempts])
    return entries


def seed_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A normalised frame as frame-based metrics see it (see ``metrics.base``)."""
    return frame.assign(
        difficulty=_DIFFICULTY_NAMES[frame["difficulty"].to_numpy(np.int64)],
        occurred_at=pd.to_datetime(frame["occurred_at"].to_numpy(np.int64), unit="ms", utc=True),
    )


def _merge_into_base(
    frame: pd.DataFrame,
    ids: pa.Array,
    calculator: MetricsCalculator,
    base: Mapping[ScopeKey, ScopeState],
    scopes: list[ScopeKey],
    sc: np.ndarray[Any, Any],
    fp: np.ndarray[Any, Any],
    rows: np.ndarray[Any, Any],
    load_history: HistoryLoader | None,
) -> BatchResult:
    """Scopes with a base state go through the calculator, as in the stream; new scopes
    take the column-wise path."""
    has_base = np.array([scope in base for scope in scopes], dtype=bool)
    fresh_rows = ~has_base[sc]
    new_codes = np.cumsum(~has_base) - 1
    fresh_scopes = [s for s, b in zip(scopes, has_base.tolist(), strict=True) if not b]
    fresh = _build_states(
        frame,
        ids,
        calculator,
        fresh_scopes,
        new_codes[sc[fresh_rows]],
        fp[fresh_rows],
        rows[fresh_rows],
    )
    offsets = _segments(sc, len(scopes))
    # Attempts a state has seen change nothing: only the others are read (unless frame
    # metrics or a lost history need every attempt).
    known = [
        base[scope].seen
        if has and base[scope].history_complete and not calculator.frame_metrics
        else b""
        for scope, has in zip(scopes, has_base.tolist(), strict=True)
    ]
    seen_offsets = np.zeros(len(scopes) + 1, dtype=np.int64)
    np.cumsum([len(blob) // 8 for blob in known], out=seen_offsets[1:])
    new = unseen(offsets, fp, seen_offsets, np.frombuffer(b"".join(known), _U8))
    merged: list[tuple[ScopeKey, ScopeState, Any]] = []
    unchanged: list[tuple[ScopeKey, ScopeState]] = []
    for code in np.flatnonzero(has_base).tolist():
        scope = scopes[code]
        lo, hi = offsets[code], offsets[code + 1]
        positions = rows[lo:hi][new[lo:hi]]
        if not len(positions):
            unchanged.append((scope, base[scope]))
            continue
        state = base[scope].copy()
        positions = np.sort(positions)  # file order: the first of an attempt_id wins
        records = seed_frame(frame.iloc[positions]).to_dict("records")
        pairs = [
            (attempt, fingerprint(attempt.attempt_id)) for attempt in map(attempt_from_row, records)
        ]
        merged.append((scope, state, calculator.plan(scope, state, pairs)))
    wanted = [scope for scope, _, plan in merged if plan.needs_history]
    if wanted and load_history is None:
        raise ValueError("merging into these states needs their histories: give load_history")
    loaded = dict(zip(wanted, load_history(wanted) if wanted and load_history else [], strict=True))
    scopes_out = list(fresh.scopes)
    states_out = list(fresh.states)
    histories_out = list(fresh.histories)
    entries_out = list(fresh.entries or []) if calculator.frame_metrics else None
    for scope, state in unchanged:
        scopes_out.append(scope)
        states_out.append(state)
        histories_out.append(None)  # frame metrics never take this path: no entries
    for scope, state, plan in merged:
        lost = scope in loaded and loaded[scope] is None
        history = [] if lost else loaded.get(scope)
        applied = calculator.apply_plan(scope, state, plan, history, lost=lost)
        scopes_out.append(scope)
        states_out.append(state)
        histories_out.append(applied.history)
        if entries_out is not None:
            entries_out.append(applied.entries)
    return BatchResult(scopes_out, states_out, histories_out, entries_out)
