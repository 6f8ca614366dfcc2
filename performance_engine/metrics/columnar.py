"""The built-in stats JSON of many scopes at once: the backfill's path.

``builtin_stats_json(scopes, states, rules)`` returns, for every scope, the same bytes as
``MetricsCalculator.stats(scope, state).to_json()`` when no custom metric is registered
(``tests/test_properties.py`` holds the two together): the numbers of SPEC 3 are computed
with numpy over all scopes (see :mod:`metrics.builtin` for the definitions), floats are
rounded by Python's ``round`` and written by msgspec as one list, and each record is one
``bytes`` template filled with ``%``. About four times faster than building a
:class:`PerformanceStatsData` per scope, which is what a backfill of 300,000 scopes spends
most of its per-scope time on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import msgspec
import numpy as np

from performance_engine.metrics.state import ScopeState
from performance_engine.metrics.types import DIFFICULTIES, CompletionStatusEnum, ScopeKey

__all__ = ["builtin_stats_json"]

_TRIPLE = b'{"easy":%d,"medium":%d,"hard":%d}'
_TOKENS = b'{"easy":%s,"medium":%s,"hard":%s}'
_TEMPLATE = (
    b'{"user_id":%d,"sub_topic_id":%d,"learning_mode":%s,"version":%d,'
    b'"total_attempts":%d,"total_correct_attempts":%d,'
    b'"attempts":' + _TRIPLE + b',"correct_attempts":' + _TRIPLE + b","
    b'"difficulty_scores":' + _TRIPLE + b',"average_attempts":' + _TOKENS + b","
    b'"accuracy":' + _TOKENS + b',"difficulty_completion":' + _TOKENS + b","
    b'"passed_difficulties":%s,"failed_difficulties":%s,"difficulty_ranking":%s,'
    b'"first_attempt_at":%s,"last_attempt_at":%s,"custom_metrics":{}}'
)
_COMPLETION = np.array(  # index: 1 if complete
    [
        msgspec.json.encode(s)
        for s in (CompletionStatusEnum.INCOMPLETE, CompletionStatusEnum.COMPLETE)
    ],
    dtype=object,
)
_BITS = np.array([1, 2, 4], dtype=np.int64)
_NOT_RANKED = 3  # a difficulty's rank digit when it has no attempt
_PRODUCT_LIMIT = 1 << 62  # cross-multiplied counts must stay exact in int64


def builtin_stats_json(
    scopes: Sequence[ScopeKey],
    states: Sequence[ScopeState],
    rules: Mapping[str, tuple[int, int, int]],
) -> list[bytes] | None:
    """The stats JSON of each scope, or None if its counts are too large for this path."""
    n = len(states)
    if n == 0:
        return []
    attempts = np.array([s.attempts for s in states], dtype=np.int64).reshape(n, 3)
    correct = np.array([s.correct for s in states], dtype=np.int64).reshape(n, 3)
    questions = _counts([b for s in states for b in s.questions], n)
    solved = _counts([b for s in states for b in s.solved], n)
    if int(attempts.max()) * max(int(questions.max()), 1) >= _PRODUCT_LIMIT:
        return None
    required = np.array([rules[scope.learning_mode] for scope in scopes], dtype=np.int64)
    done = solved >= required
    tried = attempts > 0
    passed = _names_by_mask((done * _BITS).sum(axis=1))
    failed = _names_by_mask(((tried & ~done) * _BITS).sum(axis=1))
    ranking = _ranking(attempts, questions, tried)
    average = _float_tokens(attempts, questions)
    accuracy = _float_tokens(correct, attempts)
    completion = _COMPLETION[done.astype(np.int64)].reshape(-1).tolist()
    firsts = _timestamps([s.first_at for s in states])
    lasts = _timestamps([s.last_at for s in states])
    modes = {mode: msgspec.json.encode(mode) for mode in {scope.learning_mode for scope in scopes}}
    average_t, accuracy_t, completion_t = (
        np.array(tokens, dtype=object).reshape(n, 3).T.tolist()
        for tokens in (average, accuracy, completion)
    )
    columns = (
        [scope.user_id for scope in scopes],
        [scope.sub_topic_id for scope in scopes],
        [modes[scope.learning_mode] for scope in scopes],
        [state.version for state in states],
        attempts.sum(axis=1).tolist(),
        correct.sum(axis=1).tolist(),
        *attempts.T.tolist(),
        *correct.T.tolist(),
        *solved.T.tolist(),
        *average_t,
        *accuracy_t,
        *completion_t,
        passed,
        failed,
        ranking,
        firsts,
        lasts,
    )
    return [_TEMPLATE % values for values in zip(*columns, strict=True)]


def _counts(blobs: list[bytes], n: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Elements of each packed uint64 set, as an (n, 3) array."""
    return (np.fromiter(map(len, blobs), dtype=np.int64, count=3 * n) >> 3).reshape(n, 3)


def _float_tokens(
    numerator: np.ndarray[Any, Any], denominator: np.ndarray[Any, Any]
) -> list[bytes]:
    """``round(numerator / denominator, 4)`` as msgspec writes it, ``null`` where 0 / 0.

    Ratios of small counts repeat a lot: each distinct one is rounded and written once.
    """
    present = (denominator > 0).reshape(-1)
    ratios = (numerator / np.maximum(denominator, 1)).reshape(-1)
    distinct, inverse = np.unique(ratios, return_inverse=True)
    written = msgspec.json.encode([round(r, 4) for r in distinct.tolist()])[1:-1].split(b",")
    tokens = np.array([*written, b"null"], dtype=object)
    return tokens[np.where(present, inverse.reshape(-1), len(written))].tolist()  # type: ignore[no-any-return]


def _names_by_mask(masks: np.ndarray[Any, Any]) -> list[bytes]:
    """The JSON list of difficulties whose bit is set (easy = 1, medium = 2, hard = 4)."""
    return [_mask_names(m) for m in masks.tolist()]


@cache
def _mask_names(mask: int) -> bytes:
    return msgspec.json.encode([d for i, d in enumerate(DIFFICULTIES) if mask >> i & 1])


def _ranking(
    attempts: np.ndarray[Any, Any], questions: np.ndarray[Any, Any], tried: np.ndarray[Any, Any]
) -> list[bytes]:
    """Attempted difficulties by exact average attempts, ties easy < medium < hard.

    A difficulty's position is the number of attempted others ranked before it: those
    with a smaller average (compared as fractions, a_j q_i < a_i q_j) or an equal one and
    a lower index. The three positions form a base-4 code (3 = not attempted).
    """
    position = np.zeros(attempts.shape, dtype=np.int64)
    for i in range(3):
        for j in range(3):
            if i == j:
                continue
            left = attempts[:, j] * questions[:, i]
            right = attempts[:, i] * questions[:, j]
            before = (left < right) | ((left == right) & (j < i))
            position[:, i] += tried[:, j] & before
    digits = np.where(tried, position, _NOT_RANKED)
    codes = digits[:, 0] + 4 * digits[:, 1] + 16 * digits[:, 2]
    return [_ranking_names(code) for code in codes.tolist()]


@cache
def _ranking_names(code: int) -> bytes:
    digits = [(code >> (2 * i)) & 3 for i in range(3)]
    ranked = sorted((pos, i) for i, pos in enumerate(digits) if pos != _NOT_RANKED)
    return msgspec.json.encode([DIFFICULTIES[i] for _, i in ranked])


def _timestamps(values: list[int | None]) -> list[bytes]:
    """Epoch milliseconds as the RFC 3339 JSON strings of ``builtin.format_timestamp``."""
    missing = [v is None for v in values]
    millis = np.array([0 if v is None else v for v in values], dtype=np.int64)
    text = np.datetime_as_string(millis.astype("datetime64[ms]"), unit="ms").tolist()
    return [
        b"null" if gone else b'"%sZ"' % t.encode() for t, gone in zip(text, missing, strict=True)
    ]
