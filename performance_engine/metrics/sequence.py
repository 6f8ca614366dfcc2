"""Sequential metrics over many scopes at once: the pandas batch path's numpy twins.

For a frame of distinct attempts of many scopes, each scope's rows in learning order:

* :func:`learning_order` sorts rows by (scope, ``occurred_at``, ``attempt_id``);
* :func:`fold_learning_columns` is :func:`metrics.learning.fold_learning` for every scope
  at once: the BKT and moving-average recurrences advance one attempt per step for all
  scopes that have one (the same IEEE operations in the same order, so the same bits), a
  few very long scopes finish with the reference step itself; streaks and first-attempt
  counts are plain segment reductions;
* :func:`encode_history_columns` writes each scope's history exactly as
  :func:`metrics.history.encode_entries` would (msgpack, smallest forms), without a
  Python object per attempt.

``tests/test_properties.py`` holds each equal to its reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa

from performance_engine.metrics.learning import LearningParams, LearningState, learning_step

__all__ = ["LearningColumns", "encode_history_columns", "fold_learning_columns", "learning_order"]

Array = np.ndarray[Any, Any]

#: Below this many scopes still stepping, the rest is folded one scope at a time.
_FEW_SCOPES = 8
_ROWS_PER_CHUNK = 1 << 18


def learning_order(scope: Array, occurred: Array, ids: pa.Array) -> Array:
    """The permutation that sorts rows by (scope, occurred_at, attempt_id as UTF-8 bytes).

    ``ids`` are the rows' ids as an Arrow string or binary array. Ties of (scope, time)
    are rare and sorted by id in Python.
    """
    n = len(scope)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    low = int(occurred.min())
    span = int(occurred.max()) - low
    scope_bits = max(1, int(scope.max()).bit_length())
    if span.bit_length() + scope_bits <= 64:
        key = (scope.astype(np.uint64) << np.uint64(span.bit_length())) | (occurred - low).astype(
            np.uint64
        )
        order = np.argsort(key)
        k = key[order]
        tie = k[1:] == k[:-1]
    else:
        order = np.lexsort((occurred, scope))
        s, t = scope[order], occurred[order]
        tie = (s[1:] == s[:-1]) & (t[1:] == t[:-1])
    if tie.any():
        at = np.flatnonzero(tie)
        breaks = np.flatnonzero(np.diff(at) > 1)
        starts = at[np.concatenate(([0], breaks + 1))]
        ends = at[np.concatenate((breaks, [len(at) - 1]))] + 2
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
            run = order[lo:hi]
            names = ids.take(pa.array(run)).to_pylist()
            order[lo:hi] = run[sorted(range(len(run)), key=names.__getitem__)]
    return order


class LearningColumns:
    """The folded learning values of n scopes (arrays of n, ``first_correct`` n x 3)."""

    __slots__ = ("current", "e", "first_correct", "longest", "p")

    def __init__(self, p: Array, e: Array, current: Array, longest: Array, first: Array):
        self.p, self.e, self.current, self.longest, self.first_correct = (
            p,
            e,
            current,
            longest,
            first,
        )

    def states(self) -> list[LearningState]:
        return [
            LearningState(p, e, c, longest, (first[0], first[1], first[2]))
            for p, e, c, longest, first in zip(
                self.p.tolist(),
                self.e.tolist(),
                self.current.tolist(),
                self.longest.tolist(),
                self.first_correct.tolist(),
                strict=True,
            )
        ]


def fold_learning_columns(
    offsets: Array,
    difficulty: Array,
    correct: Array,
    question: Array,
    params: Sequence[LearningParams],
    scope_params: Array,
) -> LearningColumns:
    """The learning fold of each scope; scope i's rows (in learning order) are
    ``offsets[i]:offsets[i + 1]``, its parameters ``params[scope_params[i]]``."""
    n = len(offsets) - 1
    p, e = _recurrences(offsets, difficulty, correct, params, scope_params)
    current, longest = _streaks(offsets, correct)
    first = _first_correct(offsets, difficulty, correct, question, n)
    return LearningColumns(p, e, current, longest, first)


def _recurrences(
    offsets: Array,
    difficulty: Array,
    correct: Array,
    params: Sequence[LearningParams],
    scope_params: Array,
) -> tuple[Array, Array]:
    """Mastery ``p`` and recent accuracy ``e`` of each scope (see ``learning_step``)."""
    k = [q.coefficients for q in params]
    guess = np.array([c.guess for c in k], dtype=np.float64)
    slip = np.array([c.slip for c in k], dtype=np.float64)
    one_minus_guess = np.array([c.one_minus_guess for c in k], dtype=np.float64)
    one_minus_slip = np.array([c.one_minus_slip for c in k], dtype=np.float64)
    learn = np.array([c.learn for c in k], dtype=np.float64)
    one_minus_forget = np.array([c.one_minus_forget for c in k], dtype=np.float64)
    alpha = np.array([c.alpha for c in k], dtype=np.float64)
    one_minus_alpha = np.array([c.one_minus_alpha for c in k], dtype=np.float64)

    lengths = np.diff(offsets)
    by_length = np.argsort(-lengths, kind="stable")
    steps = lengths[by_length]
    starts = offsets[:-1][by_length]
    which = scope_params[by_length]
    p = np.array([q.prior for q in params], dtype=np.float64)[which]
    e = np.array([q.ewma_prior for q in params], dtype=np.float64)[which]
    longest = int(steps[0]) if len(steps) else 0
    negative = -steps
    step = 0
    while step < longest:
        m = int(np.searchsorted(negative, -step, side="left"))  # scopes with > step rows
        if m <= _FEW_SCOPES and int(steps[0]) - step > 64:
            _finish_few(p, e, m, step, steps, starts, difficulty, correct, params, which)
            break
        rows = starts[:m] + step
        d = difficulty[rows]
        c = correct[rows]
        w = which[:m]
        pk = p[:m]
        num = pk * np.where(c, one_minus_slip[w, d], slip[w, d])
        q = num / (num + (1 - pk) * np.where(c, guess[w, d], one_minus_guess[w, d]))
        p[:m] = q * one_minus_forget[w] + (1 - q) * learn[w]
        e[:m] = alpha[w] * c + one_minus_alpha[w] * e[:m]
        step += 1
    p_out = np.empty_like(p)
    e_out = np.empty_like(e)
    p_out[by_length] = p
    e_out[by_length] = e
    return p_out, e_out


def _finish_few(
    p: Array,
    e: Array,
    m: int,
    step: int,
    steps: Array,
    starts: Array,
    difficulty: Array,
    correct: Array,
    params: Sequence[LearningParams],
    which: Array,
) -> None:
    """The remaining steps of the last few (long) scopes, with the reference step."""
    for i in range(m):
        k = params[int(which[i])].coefficients
        state = LearningState(float(p[i]), float(e[i]))
        lo, hi = int(starts[i]) + step, int(starts[i]) + int(steps[i])
        for d, c in zip(difficulty[lo:hi].tolist(), correct[lo:hi].tolist(), strict=True):
            learning_step(state, k, d, c, False)  # first-attempt counts are done apart
        p[i], e[i] = state.p, state.e


def _streaks(offsets: Array, correct: Array) -> tuple[Array, Array]:
    """Per scope: correct answers in a row at the end, and the longest such run."""
    n = len(offsets) - 1
    if len(correct) == 0:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    index = np.arange(len(correct), dtype=np.int64)
    base = np.where(correct, -1, index)
    starts = offsets[:-1]
    base[starts] = np.maximum(base[starts], starts - 1)  # runs do not cross scopes
    run = index - np.maximum.accumulate(base)
    return run[offsets[1:] - 1], np.maximum.reduceat(run, starts)


def _first_correct(
    offsets: Array, difficulty: Array, correct: Array, question: Array, n: int
) -> Array:
    """Per scope and difficulty: questions whose first attempt (in order) was correct."""
    if len(correct) == 0:
        return np.zeros((n, 3), dtype=np.int64)
    scope = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    key = scope * 3 + difficulty
    order = np.lexsort((question, key))  # stable: each (key, question) run keeps row order
    k, q = key[order], question[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (k[1:] != k[:-1]) | (q[1:] != q[:-1])
    firsts = order[first]
    counts = np.bincount(key[firsts][correct[firsts]], minlength=3 * n)
    return counts.reshape(n, 3)


# -- history encoding ------------------------------------------------------------------


def encode_history_columns(
    offsets: Array,
    occurred: Array,
    ids: pa.Array,
    question: Array,
    difficulty: Array,
    correct: Array,
    number: Array,
    number_missing: Array,
    spent: Array,
    spent_missing: Array,
) -> list[bytes]:
    """Each scope's stored history (rows in learning order; ``ids`` an Arrow binary array
    of the rows' UTF-8 ids): ``encode_entries`` of its rows, byte for byte."""
    n_rows = len(occurred)
    if n_rows == 0:
        return [b""] * (len(offsets) - 1)
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    ids = ids.cast(pa.large_binary())
    id_offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[
        ids.offset : ids.offset + n_rows + 1
    ]
    id_data = np.frombuffer(ids.buffers()[2], dtype=np.uint8)
    pieces: list[bytes] = []
    row_ends: list[Array] = []
    written = 0
    for lo in range(0, n_rows, _ROWS_PER_CHUNK):
        hi = min(lo + _ROWS_PER_CHUNK, n_rows)
        blob, ends = _encode_rows(
            occurred[lo:hi],
            id_offsets[lo : hi + 1],
            id_data,
            question[lo:hi],
            difficulty[lo:hi],
            correct[lo:hi],
            (number[lo:hi], number_missing[lo:hi]),
            (spent[lo:hi], spent_missing[lo:hi]),
        )
        pieces.append(blob)
        row_ends.append(ends + written)
        written += len(blob)
    buffer = b"".join(pieces)
    ends = np.concatenate([np.zeros(1, dtype=np.int64), *row_ends])
    return [buffer[a:b] for a, b in pairwise(ends[offsets].tolist())]


def _encode_rows(
    occurred: Array,
    id_offsets: Array,
    id_data: Array,
    question: Array,
    difficulty: Array,
    correct: Array,
    number: tuple[Array, Array],
    spent: tuple[Array, Array],
) -> tuple[bytes, Array]:
    """The rows' msgpack arrays joined, and the end of each row in the result.

    Each row is laid out at fixed columns of one byte matrix (every field at its widest),
    with a mask of the bytes each field really uses; the masked bytes, read row by row,
    are the encoding.
    """
    n = len(occurred)
    id_lengths = np.diff(id_offsets)
    longest = int(id_lengths.max())
    ones = np.ones(n, dtype=np.int64)
    fields = [
        (np.full((n, 1), 0x97, dtype=np.uint8), ones),  # array of 7
        _unsigned(occurred.astype(np.uint64)),
        _str_header(id_lengths),
        None,  # the id's bytes go here
        _unsigned(question.astype(np.uint64)),
        (difficulty.astype(np.uint8).reshape(n, 1), ones),
        (np.where(correct, 0xC3, 0xC2).astype(np.uint8).reshape(n, 1), ones),
        _unsigned(number[0].astype(np.uint64), number[1]),
        _unsigned(spent[0].astype(np.uint64), spent[1]),
    ]
    width = sum(longest if item is None else item[0].shape[1] for item in fields)
    matrix = np.zeros((n, width), dtype=np.uint8)
    used = np.zeros((n, width), dtype=bool)
    column = 0
    for item in fields:
        if item is None:
            _place_ids(matrix[:, column : column + longest], id_offsets, id_data, id_lengths)
            used[:, column : column + longest] = np.arange(longest) < id_lengths[:, None]
            column += longest
            continue
        values, size = item
        w = values.shape[1]
        matrix[:, column : column + w] = values
        used[:, column : column + w] = np.arange(w) < size[:, None]
        column += w
    ends = np.cumsum(used.sum(axis=1, dtype=np.int64))
    return matrix[used].tobytes(), ends


def _place_ids(out: Array, id_offsets: Array, id_data: Array, id_lengths: Array) -> None:
    """Each row's id bytes at the start of its row of ``out``."""
    first, last = int(id_offsets[0]), int(id_offsets[-1])
    if last == first:
        return
    width = out.shape[1]
    if int(id_lengths.min()) == width:  # ids of one length (UUIDs, say): a plain reshape
        out[:] = id_data[first:last].reshape(-1, width)
        return
    rows = np.repeat(np.arange(len(id_lengths), dtype=np.int64), id_lengths)
    within = np.arange(first, last, dtype=np.int64) - np.repeat(id_offsets[:-1], id_lengths)
    out[rows, within] = id_data[first:last]


def _unsigned(values: Array, missing: Array | None = None) -> tuple[Array, Array]:
    """msgpack's smallest form of each unsigned integer (nil where ``missing``)."""
    n = len(values)
    big_endian = values.astype(">u8").view(np.uint8).reshape(n, 8)
    out = np.zeros((n, 9), dtype=np.uint8)
    size = np.empty(n, dtype=np.int64)
    fix = values < 128
    out[fix, 0] = values[fix].astype(np.uint8)
    size[fix] = 1
    for marker, low, high, width in (
        (0xCC, 128, 1 << 8, 1),
        (0xCD, 1 << 8, 1 << 16, 2),
        (0xCE, 1 << 16, 1 << 32, 4),
        (0xCF, 1 << 32, None, 8),
    ):
        rows = values >= np.uint64(low)
        if high is not None:
            rows &= values < np.uint64(high)
        out[rows, 0] = marker
        out[rows, 1 : 1 + width] = big_endian[rows, 8 - width :]
        size[rows] = 1 + width
    if missing is not None:
        out[missing, 0] = 0xC0
        size[missing] = 1
    return out, size


def _str_header(lengths: Array) -> tuple[Array, Array]:
    """msgpack's header of a str of each byte length (fixstr, str8 or str16)."""
    n = len(lengths)
    out = np.zeros((n, 3), dtype=np.uint8)
    size = np.empty(n, dtype=np.int64)
    fix = lengths <= 31
    out[fix, 0] = (0xA0 | lengths[fix]).astype(np.uint8)
    size[fix] = 1
    str8 = (lengths > 31) & (lengths <= 255)
    out[str8, 0] = 0xD9
    out[str8, 1] = lengths[str8].astype(np.uint8)
    size[str8] = 2
    str16 = lengths > 255
    out[str16, 0] = 0xDA
    out[str16, 1] = (lengths[str16] >> 8).astype(np.uint8)
    out[str16, 2] = (lengths[str16] & 0xFF).astype(np.uint8)
    size[str16] = 3
    return out, size
