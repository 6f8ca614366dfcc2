"""The built-in stats JSON of many scopes at once: a numpy twin of the per-scope path.

``builtin_stats_json(scopes, states, modes)`` returns, for every scope, the same bytes as
``MetricsCalculator.stats(scope, state).to_json()`` when no custom metric is registered
(``tests/test_properties.py`` holds the two together): the numbers of SPEC 3 and the
``learning`` block of SPEC 3.1 (from the folded values in each state) are computed with
numpy over all scopes (the reference definitions are :mod:`metrics.builtin` and
:mod:`metrics.learning`), floats are rounded by Python's ``round`` and written by msgspec
as one list, and each record is one ``bytes`` template filled with ``%``. About four times
faster than building a :class:`PerformanceStatsData` per scope; the backfill uses it, and
the worker for batches of 64 scopes or more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
import numpy as np

from performance_engine.metrics.learning import LearningParams
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.state import ScopeState
from performance_engine.metrics.types import DIFFICULTIES, CompletionStatusEnum, ScopeKey

__all__ = [
    "STATS_PRODUCT_LIMIT",
    "StatsColumns",
    "builtin_stats_json",
    "columns_stats_json",
]

_TRIPLE = b'{"easy":%d,"medium":%d,"hard":%d}'
_TOKENS = b'{"easy":%s,"medium":%s,"hard":%s}'
_TEMPLATE = (
    b'{"user_id":%d,"sub_topic_id":%d,"learning_mode":%s,"version":%d,'
    b'"total_attempts":%d,"total_correct_attempts":%d,'
    b'"attempts":' + _TRIPLE + b',"correct_attempts":' + _TRIPLE + b","
    b'"difficulty_scores":' + _TRIPLE + b',"average_attempts":' + _TOKENS + b","
    b'"accuracy":' + _TOKENS + b',"difficulty_completion":' + _TOKENS + b","
    b'"passed_difficulties":%s,"failed_difficulties":%s,"difficulty_ranking":%s,'
    b'"first_attempt_at":%s,"last_attempt_at":%s,"learning":%s,"custom_metrics":{}}'
)
_LEARNING = (
    b'{"mastery_probability":%s,"mastered":%s,"predicted_correct":' + _TOKENS + b","
    b'"recommended_difficulty":%s,"recent_accuracy":%s,"current_streak":%d,'
    b'"longest_streak":%d,"first_attempt_accuracy":' + _TOKENS + b"}"
)
_BOOLEANS = np.array([b"false", b"true"], dtype=object)
_DIFFICULTY_TOKENS = np.array([msgspec.json.encode(d) for d in DIFFICULTIES], dtype=object)
_COMPLETION = np.array(  # index: 1 if complete
    [
        msgspec.json.encode(s)
        for s in (CompletionStatusEnum.INCOMPLETE, CompletionStatusEnum.COMPLETE)
    ],
    dtype=object,
)
_BITS = np.array([1, 2, 4], dtype=np.int64)
_NOT_RANKED = 3  # a difficulty's rank digit when it has no attempt
#: Counts whose cross products reach this cannot take the columnar path (int64 exactness).
STATS_PRODUCT_LIMIT = 1 << 62
_MIX = np.uint64(0x100000001B3)  # the multiplier of the row hash of _distinct_rows


@dataclass(frozen=True, slots=True)
class StatsColumns:
    """What the built-in stats of n scopes derive from, column-wise.

    ``attempts``, ``correct`` and the distinct ``questions`` and ``solved`` counts are
    n x 3; ``first_at`` and ``last_at`` are -1 where unknown; ``learning`` is n x 7: the
    learning fold's p, e, current and longest runs and first-try corrects per difficulty,
    p = -1 where the block is null.
    """

    versions: np.ndarray[Any, np.dtype[np.int64]]
    attempts: np.ndarray[Any, np.dtype[np.int64]]
    correct: np.ndarray[Any, np.dtype[np.int64]]
    questions: np.ndarray[Any, np.dtype[np.int64]]
    solved: np.ndarray[Any, np.dtype[np.int64]]
    first_at: np.ndarray[Any, np.dtype[np.int64]]
    last_at: np.ndarray[Any, np.dtype[np.int64]]
    learning: np.ndarray[Any, np.dtype[np.float64]]

    @classmethod
    def of_states(
        cls, scopes: Sequence[ScopeKey], states: Sequence[ScopeState], modes: LearningModes
    ) -> StatsColumns:
        n = len(states)
        params = {name: modes.params(name) for name in {scope.learning_mode for scope in scopes}}
        unknown = (-1.0, 0.0, 0, 0, 0, 0, 0)
        learning = [
            (f.p, f.e, f.current, f.longest, *f.first_correct)
            if s.history == s.version and (f := s.learning) is not None
            else _initial_row(params[scope.learning_mode])
            if s.version == 0
            else unknown
            for s, scope in zip(states, scopes, strict=True)
        ]
        return cls(
            np.fromiter((s.version for s in states), np.int64, n),
            np.array([s.attempts for s in states], dtype=np.int64).reshape(n, 3),
            np.array([s.correct for s in states], dtype=np.int64).reshape(n, 3),
            _counts([b for s in states for b in s.questions], n),
            _counts([b for s in states for b in s.solved], n),
            np.fromiter((-1 if s.first_at is None else s.first_at for s in states), np.int64, n),
            np.fromiter((-1 if s.last_at is None else s.last_at for s in states), np.int64, n),
            np.array(learning, dtype=np.float64).reshape(n, 7),
        )


def builtin_stats_json(
    scopes: Sequence[ScopeKey], states: Sequence[ScopeState], modes: LearningModes
) -> list[bytes] | None:
    """The stats JSON of each scope, or None if its counts are too large for this path."""
    if not states:
        return []
    return columns_stats_json(scopes, StatsColumns.of_states(scopes, states, modes), modes)


def columns_stats_json(
    scopes: Sequence[ScopeKey], columns: StatsColumns, modes: LearningModes
) -> list[bytes] | None:
    """:func:`builtin_stats_json` of scopes given column-wise."""
    rules = modes.rules
    n = len(scopes)
    if n == 0:
        return []
    attempts, correct = columns.attempts, columns.correct
    questions, solved = columns.questions, columns.solved
    if int(attempts.max()) * max(int(questions.max()), 1) >= STATS_PRODUCT_LIMIT:
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
    names = {mode: msgspec.json.encode(mode) for mode in {scope.learning_mode for scope in scopes}}
    average_t, accuracy_t, completion_t = (
        np.array(tokens, dtype=object).reshape(n, 3).T.tolist()
        for tokens in (average, accuracy, completion)
    )
    columns_out = (
        [scope.user_id for scope in scopes],
        [scope.sub_topic_id for scope in scopes],
        [names[scope.learning_mode] for scope in scopes],
        columns.versions.tolist(),
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
        _timestamps(columns.first_at),
        _timestamps(columns.last_at),
        _learning_blocks(scopes, columns.learning, modes, questions),
    )
    return [_TEMPLATE % values for values in zip(*columns_out, strict=True)]


def _learning_blocks(
    scopes: Sequence[ScopeKey],
    learning: np.ndarray[Any, Any],
    modes: LearningModes,
    questions: np.ndarray[Any, Any],
) -> list[bytes]:
    """Each scope's ``learning`` JSON (see ``metrics.learning.learning_stats``), or null.

    Scopes with few attempts share their values often (every new learner who got one
    easy question right has the same block): each distinct block is written once.
    """
    n = len(scopes)
    names = sorted({scope.learning_mode for scope in scopes})
    index = {name: i for i, name in enumerate(names)}
    params = [modes.params(name) for name in names]
    mode = np.fromiter((index[scope.learning_mode] for scope in scopes), np.int64, n)
    keys = np.empty((n, 11), dtype=np.float64)
    keys[:, :7] = learning
    keys[:, 7:10] = questions
    keys[:, 10] = mode
    distinct, inverse = _distinct_rows(keys)
    blocks = _distinct_blocks(distinct, params)
    return [blocks[i] for i in inverse.tolist()]


def _distinct_rows(
    keys: np.ndarray[Any, Any],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The distinct rows of ``keys`` and where each row is among them: grouped by a hash
    of the row's bits (one sort of n numbers, not of n rows), then checked row for row;
    on a hash collision every row stands alone."""
    bits = keys.view(np.uint64)
    digest = np.zeros(len(keys), dtype=np.uint64)
    for column in range(keys.shape[1]):
        digest = digest * _MIX ^ bits[:, column]
    _, first, inverse = np.unique(digest, return_index=True, return_inverse=True)
    distinct = keys[first]
    if not (distinct[inverse] == keys).all():
        return keys, np.arange(len(keys))
    return distinct, inverse


def _distinct_blocks(keys: np.ndarray[Any, Any], params: Sequence[LearningParams]) -> list[bytes]:
    """The learning JSON of each row of (p, e, current, longest, first correct x3,
    questions x3, mode); ``null`` where p is -1."""
    u = len(keys)
    p, e = keys[:, 0], keys[:, 1]
    mode = keys[:, 10].astype(np.int64)
    coefficients = [q.coefficients for q in params]
    one_minus_slip = np.array([c.one_minus_slip for c in coefficients], dtype=np.float64)[mode]
    guess = np.array([c.guess for c in coefficients], dtype=np.float64)[mode]
    threshold = np.array([q.mastery_threshold for q in params], dtype=np.float64)[mode]
    target = np.array([q.target_success for q in params], dtype=np.float64)[mode]
    predicted = p[:, None] * one_minus_slip + (1 - p)[:, None] * guess
    reaches = predicted >= target[:, None]
    recommended = np.where(reaches[:, 2], 2, np.where(reaches[:, 1], 1, 0))
    rounded = _written(np.concatenate([p, e, predicted.reshape(-1)]))
    counts = keys[:, 2:10].astype(np.int64)
    first = _float_tokens(counts[:, 2:5], counts[:, 5:8])
    columns = zip(
        rounded[:u],
        _BOOLEANS[(p >= threshold).astype(np.int64)].tolist(),
        *(rounded[2 * u + d :: 3] for d in range(3)),
        _DIFFICULTY_TOKENS[recommended].tolist(),
        rounded[u : 2 * u],
        counts[:, 0].tolist(),
        counts[:, 1].tolist(),
        *(first[d::3] for d in range(3)),
        strict=True,
    )
    return [
        b"null" if known < 0 else _LEARNING % values
        for known, values in zip(p.tolist(), columns, strict=True)
    ]


def _initial_row(params: LearningParams) -> tuple[float, float, int, int, int, int, int]:
    return (params.prior, params.ewma_prior, 0, 0, 0, 0, 0)


def _counts(blobs: list[bytes], n: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Elements of each packed uint64 set, as an (n, 3) array."""
    return (np.fromiter(map(len, blobs), dtype=np.int64, count=3 * n) >> 3).reshape(n, 3)


def _float_tokens(
    numerator: np.ndarray[Any, Any], denominator: np.ndarray[Any, Any]
) -> list[bytes]:
    """``round(numerator / denominator, 4)`` as msgspec writes it, ``null`` where 0 / 0."""
    present = (denominator > 0).reshape(-1)
    tokens = _token_array((numerator / np.maximum(denominator, 1)).reshape(-1))
    tokens[~present] = b"null"
    return tokens.tolist()  # type: ignore[no-any-return]


def _written(values: np.ndarray[Any, Any]) -> list[bytes]:
    """``round(value, 4)`` of each value as msgspec writes it."""
    return _token_array(values).tolist()  # type: ignore[no-any-return]


def _token_array(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``round(value, 4)`` of each value as msgspec writes it, as an object array.

    Rounded stats repeat a lot (ratios of small counts, probabilities to four places):
    each distinct rounded value is written once.
    """
    rounded = _round4(values.reshape(-1))
    bits, inverse = np.unique(rounded.view(np.uint64), return_inverse=True)  # -0.0 != 0.0
    tokens = np.empty(len(bits), dtype=object)
    tokens[:] = msgspec.json.encode(bits.view(np.float64).tolist())[1:-1].split(b",")
    expanded: np.ndarray[Any, Any] = tokens[inverse.reshape(-1)]
    return expanded


def _round4(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Python's ``round(value, 4)`` of each value, vectorised.

    ``rint(value * 1e4) / 1e4`` picks the same ten-thousandth as Python's correctly
    rounded ``round`` unless ``value * 1e4`` lies within an ulp of a half; those
    few values (and any too large for the product to be exact enough) go through
    ``round`` itself. Dividing the integer by 1e4 gives the nearest double, as ``round``.
    """
    small = np.abs(values) < 2.0**26  # every value of the stats, and the product exact enough
    scaled = np.where(small, values, 0.0) * 1e4
    rounded: np.ndarray[Any, Any] = np.rint(scaled) / 1e4
    # The product is within half an ulp of the exact one: only that close to a half can
    # the exact value lie on the other side of it.
    unsure = ~small | (np.abs(scaled - np.floor(scaled) - 0.5) <= 2 * np.spacing(np.abs(scaled)))
    if unsure.any():
        rounded[unsure] = [round(v, 4) for v in values[unsure].tolist()]
    return rounded


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


def _timestamps(values: np.ndarray[Any, np.dtype[np.int64]]) -> list[bytes]:
    """Epoch milliseconds as the RFC 3339 JSON strings of ``builtin.format_timestamp``
    (``null`` where negative: unknown)."""
    missing = (values < 0).tolist()
    text = np.datetime_as_string(np.maximum(values, 0).astype("datetime64[ms]"), unit="ms")
    return [
        b"null" if gone else b'"%sZ"' % t.encode()
        for t, gone in zip(text.tolist(), missing, strict=True)
    ]
