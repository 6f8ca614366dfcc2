"""The pandas batch engine: the state and stats of every scope of a frame of attempts.

Vectorised over the whole frame (sorts, bincounts and segment reductions); the only
Python loop runs once per *scope* to assemble its state. Duplicates of an ``attempt_id``
within a scope count once (the first in frame order wins), exactly as in the stream,
because both deduplicate by the same fingerprint. It is a fast twin of the reference
definitions (``metrics.builtin``, ``metrics.learning``), held equal to them and to the
stream by property tests; end-to-end results are judged by an oracle of the tests' own.

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
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import xxhash

from performance_engine.metrics.base import attempt_from_row
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.columnar import (
    STATS_PRODUCT_LIMIT,
    StatsColumns,
    columns_stats_buffer,
)
from performance_engine.metrics.frame import frame_attempts
from performance_engine.metrics.history import Entry, HistoryWrite, entry_of
from performance_engine.metrics.kernels import distinct_attempts, unseen
from performance_engine.metrics.sequence import (
    encode_history_buffer,
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

    def joined(self, other: BatchResult) -> BatchResult:
        """This result's scopes, then ``other``'s."""
        if not other.scopes:
            return self
        entries = None
        if self.entries is not None or other.entries is not None:
            entries = [
                *(self.entries or [None] * len(self.scopes)),
                *(other.entries or [None] * len(other.scopes)),
            ]
        return BatchResult(
            self.scopes + other.scopes,
            self.states + other.states,
            self.histories + other.histories,
            entries,
        )

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
    """The stats of every scope of a normalised frame (see ``metrics.frame``)."""
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
    if len(frame) == 0:
        return BatchResult([], [], [])
    fresh, merged = compute_parts(frame, calculator, base, index=index, load_history=load_history)
    return fresh.result(calculator).joined(merged)


def compute_parts(
    frame: pd.DataFrame,
    calculator: MetricsCalculator,
    base: Mapping[ScopeKey, ScopeState] | None = None,
    *,
    index: ScopeIndex | None = None,
    load_history: HistoryLoader | None = None,
) -> tuple[FreshScopes, BatchResult]:
    """:func:`compute_states` in two parts: the new scopes column-wise, and the scopes of
    ``base`` (merged, or unchanged)."""
    scope_codes, scopes = index if index is not None else scope_index(frame)
    ids = _id_bytes(frame["attempt_id"])
    fps = _fingerprints(ids)
    # One row per distinct (scope, fingerprint), the first in frame order, sorted by both.
    rows, sc, fp = _distinct_attempts(scope_codes, fps, len(scopes))
    if base:
        return _merge_into_base(frame, ids, calculator, base, scopes, sc, fp, rows, load_history)
    return FreshScopes(frame, ids, calculator, scopes, sc, fp, rows), BatchResult([], [], [])


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
) -> tuple[np.ndarray[Any, np.dtype[np.uint64]], np.ndarray[Any, np.dtype[np.int64]]]:
    """Per key, the sorted distinct question ids: all of them in one uint64 array, and
    where each key's run starts in it (``size + 1`` offsets)."""
    if len(key) == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(size + 1, dtype=np.int64)
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
        return q, _segments(k, size)
    order = np.lexsort((question, key))
    k, q = key[order], question[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = (k[1:] != k[:-1]) | (q[1:] != q[:-1])
    return q[first].astype(np.uint64), _segments(k[first], size)


def _slices(buffer: bytes, offsets: list[int]) -> list[bytes]:
    return [buffer[lo:hi] for lo, hi in pairwise(offsets)]


class FreshScopes:
    """New scopes (no stored state) computed column-wise: what their states are made of,
    as arrays over all of them, in the order of ``scopes``.

    :meth:`result` makes their :class:`ScopeState` objects; the backfill writes their
    stored values straight from these arrays (``store.bulk.pack_fresh``), without an
    object per scope.
    """

    __slots__ = (
        "_custom",
        "attempts",
        "correct",
        "first_at",
        "groups",
        "history",
        "history_ends",
        "last_at",
        "learning",
        "question_ends",
        "questions",
        "scope_groups",
        "scopes",
        "seen",
        "seen_ends",
        "signatures",
        "solved",
        "solved_ends",
        "spilled",
        "tails",
        "versions",
    )

    def __init__(
        self,
        frame: pd.DataFrame,
        ids: pa.Array,
        calculator: MetricsCalculator,
        scopes: list[ScopeKey],
        sc: np.ndarray[Any, Any],
        fp: np.ndarray[Any, Any],
        rows: np.ndarray[Any, Any],
    ) -> None:
        """``rows`` are the scopes' distinct attempts sorted by (scope, fingerprint), ``sc``
        their dense scope codes, ``fp`` their fingerprints."""
        n_scopes = len(scopes)
        self.scopes = scopes
        self._custom = (frame, sc, rows)
        difficulty = frame["difficulty"].to_numpy(np.int64)[rows]
        correct = frame["is_correct"].to_numpy(bool)[rows]
        question = frame["question_id"].to_numpy(np.int64)[rows]
        occurred = frame["occurred_at"].to_numpy(np.int64)[rows]
        key = sc * 3 + difficulty
        size = n_scopes * 3
        self.attempts = np.bincount(key, minlength=size).reshape(n_scopes, 3)
        self.correct = np.bincount(key[correct], minlength=size).reshape(n_scopes, 3)
        self.questions, self.question_ends = _distinct_questions(key, question, size)
        self.solved, self.solved_ends = _distinct_questions(key[correct], question[correct], size)
        seen_offsets = _segments(sc, n_scopes)  # rows are sorted by (scope, fingerprint)
        self.seen, self.seen_ends = fp.astype(_U8), seen_offsets * 8
        self.versions = np.diff(seen_offsets)
        starts = seen_offsets[:-1]
        if len(rows):
            self.first_at = np.minimum.reduceat(occurred, starts)
            self.last_at = np.maximum.reduceat(occurred, starts)
        else:
            self.first_at = self.last_at = np.zeros(0, dtype=np.int64)

        # The same rows in learning order: the sequential metrics and the histories.
        order = learning_order(sc, occurred, ids, rows)
        ordered_rows = rows[order]
        ordered_ids = ids.take(pa.array(ordered_rows))
        difficulty_in_order, correct_in_order = difficulty[order], correct[order]
        question_in_order = question[order]
        model = calculator.model
        params, _, self.groups, self.scope_groups = model.groups(scopes)
        self.learning = fold_learning_columns(
            seen_offsets,
            difficulty_in_order,
            correct_in_order,
            question_in_order,
            params,
            self.scope_groups,
            model.class_column(question_in_order, difficulty_in_order) if model.classes else None,
        )
        number, number_missing = _optional(frame["attempt_number"], ordered_rows)
        spent, spent_missing = _optional(frame["time_spent_ms"], ordered_rows)
        self.history, self.history_ends = encode_history_buffer(
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
        # Small histories stay in the state; the others go to keys of their own.
        self.spilled = np.diff(self.history_ends) > calculator.history_inline_limit
        self.tails = ordered_ids.take(pa.array(seen_offsets[1:] - 1)).cast(pa.large_binary())
        self.signatures = [calculator.signature(mode, sub) for mode, sub in self.groups]

    def __len__(self) -> int:
        return len(self.scopes)

    def result(self, calculator: MetricsCalculator) -> BatchResult:
        """The scopes' states, history writes and (for frame-based metrics) entries."""
        n = len(self.scopes)
        if n == 0:
            return BatchResult([], [], [])
        questions = _slices(self.questions.astype(_U8).tobytes(), (self.question_ends * 8).tolist())
        solved = _slices(self.solved.astype(_U8).tobytes(), (self.solved_ends * 8).tolist())
        seen = _slices(self.seen.tobytes(), self.seen_ends.tolist())
        history = self.history.tobytes()
        blobs = _slices(history, self.history_ends.tolist())
        tails = self.tails.cast(pa.large_string()).to_pylist()
        spilled = self.spilled.tolist()
        versions = self.versions.tolist()
        attempts = self.attempts.tolist()
        corrects = self.correct.tolist()
        states = [
            ScopeState(
                version,
                first,
                last,
                attempts[i],
                corrects[i],
                questions[3 * i : 3 * i + 3],
                solved[3 * i : 3 * i + 3],
                seen[i],
                {},
                (),
                version,
                spill,
                b"" if spill else blob,
                tail,
                folded,
                None,
                self.signatures[mode],
            )
            for i, (version, first, last, blob, spill, tail, folded, mode) in enumerate(
                zip(
                    versions,
                    self.first_at.tolist(),
                    self.last_at.tolist(),
                    blobs,
                    spilled,
                    tails,
                    self.learning.states(),
                    self.scope_groups.tolist(),
                    strict=True,
                )
            )
        ]
        histories: list[HistoryWrite | None] = [
            HistoryWrite(blob, True) if spill else None
            for blob, spill in zip(blobs, spilled, strict=True)
        ]
        entries: list[list[Entry] | None] | None = None
        if calculator.metrics:
            frame, sc, rows = self._custom
            entries = _custom_metrics(frame, calculator, self.scopes, states, sc, rows)
        return BatchResult(self.scopes, states, histories, entries)

    def stats_columns(self, lo: int, hi: int, revision: int = 0) -> StatsColumns:
        """What the built-in stats of scopes ``lo:hi`` derive from (``metrics.columnar``),
        each at ``revision`` (0: not stored; the writer that stores them says)."""
        learning = self.learning
        rows = np.empty((hi - lo, 7), dtype=np.float64)
        rows[:, 0], rows[:, 1] = learning.logit[lo:hi], learning.e[lo:hi]
        rows[:, 2], rows[:, 3] = learning.current[lo:hi], learning.longest[lo:hi]
        rows[:, 4:] = learning.first_correct[lo:hi]
        return StatsColumns(
            self.versions[lo:hi],
            np.full(hi - lo, revision, dtype=np.int64),
            self.attempts[lo:hi],
            self.correct[lo:hi],
            np.diff(self.question_ends[3 * lo : 3 * hi + 1]).reshape(-1, 3),
            np.diff(self.solved_ends[3 * lo : 3 * hi + 1]).reshape(-1, 3),
            self.first_at[lo:hi],
            self.last_at[lo:hi],
            rows,
        )

    def packable(self, calculator: MetricsCalculator) -> bool:
        """Whether the scopes can be written from the arrays (``store.bulk.pack_fresh``):
        no custom metric is registered, every mode is known and the counts fit the
        columnar stats."""
        modes = calculator.learning_modes
        if calculator.metrics or not {mode for mode, _ in self.groups} <= modes.rules.keys():
            return False
        if not len(self.scopes):
            return True
        most = max(int(np.diff(self.question_ends).max()), 1)
        return int(self.attempts.max()) * most < STATS_PRODUCT_LIMIT

    def stats_buffer(
        self, calculator: MetricsCalculator, lo: int, hi: int, revision: int = 0
    ) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], np.ndarray[Any, np.dtype[np.int64]]]:
        """The stats JSON of scopes ``lo:hi`` at ``revision`` joined, and the end of each
        (only where :meth:`packable`)."""
        joined = columns_stats_buffer(
            self.scopes[lo:hi], self.stats_columns(lo, hi, revision), calculator.model
        )
        if joined is None:
            raise ValueError("these scopes' counts are too large to pack: see packable()")
        return joined


def _optional(
    column: pd.Series, rows: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """An optional integer column at ``rows``: its values (0 where absent) and a mask."""
    values = column.astype("Int64").array
    missing = values.isna()[rows]
    return values.fillna(0).to_numpy(dtype=np.int64)[rows], missing


def _custom_metrics(
    frame: pd.DataFrame,
    calculator: MetricsCalculator,
    scopes: list[ScopeKey],
    states: list[ScopeState],
    sc: np.ndarray[Any, Any],
    rows: np.ndarray[Any, Any],
) -> list[list[Entry] | None] | None:
    """Fill the custom metrics' states (only when some are registered: a Python call per
    attempt and metric); returns each scope's history entries when frame-based metrics
    need them.

    Incremental and sequential metrics are folded over each scope's attempts in learning
    order (occurred_at, then attempt_id).
    """
    distinct = frame.iloc[rows].assign(_scope=sc)
    distinct = distinct.sort_values(["_scope", "occurred_at", "attempt_id"], kind="stable")
    entries: list[list[Entry] | None] | None = [] if calculator.frame_metrics else None
    codes = distinct["_scope"].to_numpy(np.int64)
    bounds = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1], True]).tolist()
    every = frame_attempts(distinct)  # one pass over the rows, no group-by per scope
    for lo, hi in pairwise(bounds):
        state = states[int(codes[lo])]
        attempts = every[lo:hi]
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
) -> tuple[FreshScopes, BatchResult]:
    """Scopes with a base state go through the calculator, as in the stream; new scopes
    take the column-wise path."""
    has_base = np.array([scope in base for scope in scopes], dtype=bool)
    fresh_rows = ~has_base[sc]
    new_codes = np.cumsum(~has_base) - 1
    fresh_scopes = [s for s, b in zip(scopes, has_base.tolist(), strict=True) if not b]
    fresh = FreshScopes(
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
    scopes_out: list[ScopeKey] = []
    states_out: list[ScopeState] = []
    histories_out: list[HistoryWrite | None] = []
    entries_out: list[list[Entry] | None] | None = [] if calculator.frame_metrics else None
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
    return fresh, BatchResult(scopes_out, states_out, histories_out, entries_out)
