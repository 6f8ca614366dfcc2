"""Sequential metrics over many scopes at once: the batch path's twins of the references.

For a frame of distinct attempts of many scopes, each scope's rows in learning order:

* :func:`learning_order` sorts rows by (scope, ``occurred_at``, ``attempt_id``) (numpy);
* :func:`fold_learning_columns` is :func:`metrics.learning.fold_learning` for every scope
  (a compiled loop, :func:`metrics.kernels.fold_learning_scopes`: the same IEEE
  operations in the same order, so the same bits);
* :func:`encode_history_buffer` writes each scope's history exactly as
  :func:`metrics.history.encode_entries` would (msgpack, smallest forms), without a
  Python object per attempt (:func:`metrics.kernels.encode_history_rows`).

``tests/metrics/test_sequence.py`` holds each equal to its reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

import numpy as np
import pyarrow as pa

from performance_engine.metrics.kernels import (
    encode_history_rows,
    fold_learning_scopes,
    predict_scopes,
)
from performance_engine.metrics.learning import LearningParams, LearningState, logit
from performance_engine.metrics.types import Entry

__all__ = [
    "LearningColumns",
    "encode_history_buffer",
    "fold_learning_columns",
    "learning_order",
    "predict_columns",
]

#: ``kernels.encode_history_rows`` writes each entry as a msgpack array of this many.
HISTORY_ENTRY_WIDTH = 7
if len(get_args(Entry)) != HISTORY_ENTRY_WIDTH:
    raise ImportError(
        f"metrics.kernels.encode_history_rows writes entries of {HISTORY_ENTRY_WIDTH} fields, "
        f"but metrics.types.Entry has {len(get_args(Entry))}: update the compiled encoder"
    )

Array = np.ndarray[Any, Any]


def learning_order(
    scope: Array, occurred: Array, ids: pa.Array, rows: Array | None = None
) -> Array:
    """The permutation that sorts rows by (scope, occurred_at, attempt_id as UTF-8 bytes).

    ``ids`` are the rows' ids as an Arrow string or binary array (row i's id is
    ``ids[rows[i]]`` when ``rows`` is given). Ties of (scope, time) are rare and sorted
    by id in Python.
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
            names = ids.take(pa.array(run if rows is None else rows[run])).to_pylist()
            order[lo:hi] = run[sorted(range(len(run)), key=names.__getitem__)]
    return order


class LearningColumns:
    """The folded learning values of n scopes (arrays of n, ``first_correct`` n x 3);
    ``logit``: the mastery's log-odds."""

    __slots__ = ("current", "e", "first_correct", "logit", "longest")

    def __init__(self, logit: Array, e: Array, current: Array, longest: Array, first: Array):
        self.logit, self.e, self.current, self.longest, self.first_correct = (
            logit,
            e,
            current,
            longest,
            first,
        )

    def states(self) -> list[LearningState]:
        return [
            LearningState(x, e, c, longest, (first[0], first[1], first[2]))
            for x, e, c, longest, first in zip(
                self.logit.tolist(),
                self.e.tolist(),
                self.current.tolist(),
                self.longest.tolist(),
                self.first_correct.tolist(),
                strict=True,
            )
        ]


def _chain_arrays(params: Sequence[LearningParams]) -> tuple[Array, Array, Array]:
    """The mastery chain's terms of each parameter group, as the compiled loops take them:
    the prior's log-odds, ``evidence[w, d, c]`` and ``transition[w]`` (ln(1 - F), ln F,
    ln T, ln(1 - T)), from ``learning.Coefficients``."""
    k = [q.coefficients for q in params]
    return (
        np.array([logit(q.prior) for q in params], dtype=np.float64),
        np.array([c.evidence for c in k], dtype=np.float64).reshape(len(k), 3, 2),
        np.array(
            [(c.log_keep, c.log_forget, c.log_learn, c.log_stay) for c in k], dtype=np.float64
        ).reshape(len(k), 4),
    )


def fold_learning_columns(
    offsets: Array,
    difficulty: Array,
    correct: Array,
    question: Array,
    params: Sequence[LearningParams],
    scope_params: Array,
    evidence_class: Array | None = None,
) -> LearningColumns:
    """The learning fold of each scope; scope i's rows (in learning order) are
    ``offsets[i]:offsets[i + 1]``, its parameters ``params[scope_params[i]]``;
    ``evidence_class``: per row, the questions' fitted classes (``difficulty`` if None)."""
    k = [q.coefficients for q in params]
    difficulty = np.asarray(difficulty, dtype=np.int64)
    prior_logit, evidence, transition = _chain_arrays(params)
    logits, e, current, longest, first = fold_learning_scopes(
        np.asarray(offsets, dtype=np.int64),
        difficulty,
        difficulty if evidence_class is None else np.asarray(evidence_class, dtype=np.int64),
        np.asarray(correct, dtype=np.bool_),
        np.asarray(question, dtype=np.int64),
        np.asarray(scope_params, dtype=np.int64),
        prior_logit,
        np.array([q.ewma_prior for q in params], dtype=np.float64),
        evidence,
        transition,
        np.array([c.ewma for c in k], dtype=np.float64).reshape(len(k), 2),
        np.array([c.one_minus_alpha for c in k], dtype=np.float64),
    )
    return LearningColumns(logits, e, current, longest, first)


def predict_columns(
    offsets: Array,
    evidence_class: Array,
    correct: Array,
    question_offset: Array,
    params: Sequence[LearningParams],
    scope_params: Array,
) -> Array:
    """Each row's P(right) from its scope's earlier rows only (SPEC 3.3), what
    ``MetricsCalculator.predict`` gives after those rows (the same operations, a compiled
    loop, :func:`metrics.kernels.predict_scopes`). Rows as in
    :func:`fold_learning_columns`; ``evidence_class`` the questions' classes,
    ``question_offset`` their offsets (0.0 for none)."""
    k = [q.coefficients for q in params]
    found: Array = predict_scopes(
        np.asarray(offsets, dtype=np.int64),
        np.asarray(evidence_class, dtype=np.int64),
        np.asarray(correct, dtype=np.bool_),
        np.asarray(question_offset, dtype=np.float64),
        np.asarray(scope_params, dtype=np.int64),
        *_chain_arrays(params),
        np.array([c.guess for c in k], dtype=np.float64).reshape(len(k), 3),
        np.array([c.one_minus_slip for c in k], dtype=np.float64).reshape(len(k), 3),
    )
    return found


# -- history encoding ------------------------------------------------------------------


def encode_history_buffer(
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
) -> tuple[Array, Array]:
    """Each scope's stored history (rows in learning order; ``ids`` an Arrow binary array
    of the rows' UTF-8 ids), ``encode_entries`` of its rows byte for byte, all joined:
    one uint8 buffer, and where each scope's ends in it (``ends[0]`` is 0; scope i's
    history is ``buffer[ends[i]:ends[i + 1]]``)."""
    n_rows = len(occurred)
    if n_rows == 0:
        return np.zeros(0, dtype=np.uint8), np.zeros(len(offsets), dtype=np.int64)
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    ids = ids.cast(pa.large_binary())
    id_offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[
        ids.offset : ids.offset + n_rows + 1
    ]
    id_data = np.frombuffer(ids.buffers()[2], dtype=np.uint8)
    encoded, ends = encode_history_rows(
        np.asarray(occurred, dtype=np.int64),
        id_offsets,
        id_data,
        np.asarray(question, dtype=np.int64),
        np.asarray(difficulty, dtype=np.int64),
        np.asarray(correct, dtype=np.bool_),
        np.asarray(number, dtype=np.int64),
        np.asarray(number_missing, dtype=np.bool_),
        np.asarray(spent, dtype=np.int64),
        np.asarray(spent_missing, dtype=np.bool_),
    )
    return encoded, ends[offsets]
