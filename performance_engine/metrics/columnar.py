"""The built-in stats JSON of many scopes at once: a numpy twin of the per-scope path.

``builtin_stats_json(scopes, states, model)`` returns, for every scope, the same bytes as
``MetricsCalculator.stats(scope, state).to_json()`` when no custom metric is registered
(``tests/metrics/test_properties.py`` holds the two together): the numbers of SPEC 3 and the
``learning`` block of SPEC 3.1 (from the folded values in each state) are computed with
numpy over all scopes (the reference definitions are :mod:`metrics.builtin` and
:mod:`metrics.learning`), floats are rounded by Python's ``round`` and written by msgspec
as one list, and each record is one ``bytes`` template filled with ``%``. About four times
faster than building a :class:`PerformanceStatsData` per scope; the backfill uses it, and
the worker for batches of 64 scopes or more.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
import numpy as np

from performance_engine.metrics.learning import LearningParams, logit, sigmoid
from performance_engine.metrics.model import LearningModel
from performance_engine.metrics.state import ScopeState
from performance_engine.metrics.types import (
    DIFFICULTIES,
    CompletionStatusEnum,
    LearningStats,
    PerformanceStatsData,
    ScopeKey,
)

__all__ = [
    "INTEGER",
    "STATS_PRODUCT_LIMIT",
    "TIMESTAMP",
    "TOKEN",
    "StatsColumns",
    "builtin_stats_json",
    "columns_stats_buffer",
    "columns_stats_json",
]

_TRIPLE = b'{"easy":%d,"medium":%d,"hard":%d}'
_TOKENS = b'{"easy":%s,"medium":%s,"hard":%s}'
_TEMPLATE = (
    b'{"scope":"%d:%d:%s","user_id":%d,"sub_topic_id":%d,"learning_mode":%s,"version":%d,"revision":%d,'
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
    b'"longest_streak":%d,"first_attempt_accuracy":' + _TOKENS + b',"params_version":%s}'
)


def _top_level_keys(template: bytes) -> tuple[str, ...]:
    """The keys of a JSON object template's outermost level, in order."""
    keys: list[str] = []
    depth = 0
    for match in re.finditer(rb'[{}\[\]]|"(\w+)":', template):
        token = match.group(0)
        if token in (b"{", b"["):
            depth += 1
        elif token in (b"}", b"]"):
            depth -= 1
        elif depth == 1:
            keys.append(match.group(1).decode())
    return tuple(keys)


def _check_templates() -> None:
    """Refuse to load templates that no longer spell the records they stand for: their
    keys must be the records' fields in order (``PerformanceStatsData`` is the one
    definition of the stats JSON; the values are held equal by the format tests)."""
    for template, record in ((_TEMPLATE, PerformanceStatsData), (_LEARNING, LearningStats)):
        if _top_level_keys(template) != record.__struct_fields__:
            raise ImportError(
                f"metrics.columnar's template writes {_top_level_keys(template)}, but "
                f"{record.__name__} has {record.__struct_fields__}: update the template"
            )


_check_templates()
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
    learning fold's log-odds, e, current and longest runs and first-try corrects per
    difficulty, the log-odds NaN where the block is null.
    """

    versions: np.ndarray[Any, np.dtype[np.int64]]
    revisions: np.ndarray[Any, np.dtype[np.int64]]
    attempts: np.ndarray[Any, np.dtype[np.int64]]
    correct: np.ndarray[Any, np.dtype[np.int64]]
    questions: np.ndarray[Any, np.dtype[np.int64]]
    solved: np.ndarray[Any, np.dtype[np.int64]]
    first_at: np.ndarray[Any, np.dtype[np.int64]]
    last_at: np.ndarray[Any, np.dtype[np.int64]]
    learning: np.ndarray[Any, np.dtype[np.float64]]

    @classmethod
    def of_states(
        cls, scopes: Sequence[ScopeKey], states: Sequence[ScopeState], model: LearningModel
    ) -> StatsColumns:
        n = len(states)
        unknown = (math.nan, 0.0, 0, 0, 0, 0, 0)
        learning = [
            _initial_row(model.params(scope.learning_mode, scope.sub_topic_id))
            if s.version == 0  # as the per-scope path: no attempt, the prior (a scope
            # whose every attempt was voided is one)
            else (f.logit, f.e, f.current, f.longest, *f.first_correct)
            if s.history == s.version and (f := s.learning) is not None
            else unknown
            for s, scope in zip(states, scopes, strict=True)
        ]
        return cls(
            np.fromiter((s.version for s in states), np.int64, n),
            np.fromiter((s.revision for s in states), np.int64, n),
            np.array([s.attempts for s in states], dtype=np.int64).reshape(n, 3),
            np.array([s.correct for s in states], dtype=np.int64).reshape(n, 3),
            _counts([b for s in states for b in s.questions], n),
            _counts([b for s in states for b in s.solved], n),
            np.fromiter((-1 if s.first_at is None else s.first_at for s in states), np.int64, n),
            np.fromiter((-1 if s.last_at is None else s.last_at for s in states), np.int64, n),
            np.array(learning, dtype=np.float64).reshape(n, 7),
        )


def builtin_stats_json(
    scopes: Sequence[ScopeKey], states: Sequence[ScopeState], model: LearningModel
) -> list[bytes] | None:
    """The stats JSON of each scope, or None if its counts are too large for this path.
    The states' learning values are taken as folded with the current parameters
    (the calculator sends others through the per-scope path, which folds them again)."""
    if not states:
        return []
    return columns_stats_json(scopes, StatsColumns.of_states(scopes, states, model), model)


def columns_stats_json(
    scopes: Sequence[ScopeKey], columns: StatsColumns, model: LearningModel
) -> list[bytes] | None:
    """:func:`builtin_stats_json` of scopes given column-wise (in Python: the worker's
    path, which does without the compiled loops)."""
    found = _stats_rows(scopes, columns, model)
    if found is None:
        return None
    row, tokens = found
    table = np.array(tokens, dtype=object)
    values = [
        row[:, j].tolist()
        if kind == INTEGER
        else table[row[:, j]].tolist()
        if kind == TOKEN
        else _timestamps(row[:, j])
        for j, kind in enumerate(_KINDS.tolist())
    ]
    return [_TEMPLATE % record for record in zip(*values, strict=True)]


def columns_stats_buffer(
    scopes: Sequence[ScopeKey], columns: StatsColumns, model: LearningModel
) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], np.ndarray[Any, np.dtype[np.int64]]] | None:
    """:func:`columns_stats_json` joined, by a compiled loop
    (``metrics.kernels.fill_templates``: the backfill's path): one buffer, and the end of
    each scope's JSON in it (``ends[0]`` is 0); None if the counts are too large."""
    from performance_engine.metrics.kernels import fill_templates

    found = _stats_rows(scopes, columns, model)
    if found is None:
        return None
    row, tokens = found
    token_ends = np.zeros(len(tokens) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, tokens), np.int64, len(tokens)), out=token_ends[1:])
    return fill_templates(
        _PIECES,
        _PIECE_ENDS,
        _KINDS,
        row,
        np.frombuffer(b"".join(tokens), dtype=np.uint8),
        token_ends,
    )


def _stats_rows(
    scopes: Sequence[ScopeKey], columns: StatsColumns, model: LearningModel
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], list[bytes]] | None:
    """What fills each scope's record (a row of numbers, one per placeholder of
    :data:`_TEMPLATE`, see :data:`_KINDS`) and the table of texts the row's tokens point
    into; None if the counts are too large for this path.

    Every value of the record is a number or one of few distinct texts (names, rounded
    floats, difficulty lists, learning blocks), each text written once.
    """
    rules = model.rules
    n = len(scopes)
    attempts, correct = columns.attempts, columns.correct
    questions, solved = columns.questions, columns.solved
    tokens: list[bytes] = []
    row = np.empty((n, len(_KINDS)), dtype=np.int64)
    if n == 0:
        return row, tokens
    if int(attempts.max()) * max(int(questions.max()), 1) >= STATS_PRODUCT_LIMIT:
        return None
    names = sorted({scope.learning_mode for scope in scopes})
    code = {name: i for i, name in enumerate(names)}
    mode = np.fromiter((code[scope.learning_mode] for scope in scopes), np.int64, n)
    required = np.array([rules[name] for name in names], dtype=np.int64)[mode]
    done = solved >= required
    tried = attempts > 0

    def table(texts: Sequence[bytes]) -> int:
        """Add texts to the token table; returns the index of the first."""
        tokens.extend(texts)
        return len(tokens) - len(texts)

    row[:, 3] = np.fromiter((scope.user_id for scope in scopes), np.int64, n)
    row[:, 4] = np.fromiter((scope.sub_topic_id for scope in scopes), np.int64, n)
    row[:, 5] = table([msgspec.json.encode(name) for name in names]) + mode
    row[:, 0:3] = row[:, 3:6]  # the scope string: the same ids, the mode's bare name
    row[:, 2] = table([name.encode() for name in names]) + mode
    row[:, 6] = columns.versions
    row[:, 7] = columns.revisions
    row[:, 8] = attempts.sum(axis=1)
    row[:, 9] = correct.sum(axis=1)
    row[:, 10:13] = attempts
    row[:, 13:16] = correct
    row[:, 16:19] = solved
    for at, (numerator, denominator) in ((19, (attempts, questions)), (22, (correct, attempts))):
        texts, index = _float_token_indices(numerator, denominator)
        row[:, at : at + 3] = table(texts) + index
    row[:, 25:28] = table(_COMPLETION.tolist()) + done
    masks = table(_MASK_NAMES)
    row[:, 28] = masks + (done * _BITS).sum(axis=1)
    row[:, 29] = masks + ((tried & ~done) * _BITS).sum(axis=1)
    row[:, 30] = table(_RANKINGS) + _ranking(attempts, questions, tried)
    row[:, 31] = columns.first_at
    row[:, 32] = columns.last_at
    params, versions, _, group = model.groups(scopes)
    blocks, which = _learning_blocks(group, params, versions, columns.learning, questions)
    row[:, 33] = table(blocks) + which
    return row, tokens


def _learning_blocks(
    mode: np.ndarray[Any, np.dtype[np.int64]],
    params: Sequence[LearningParams],
    versions: Sequence[str],
    learning: np.ndarray[Any, Any],
    questions: np.ndarray[Any, Any],
) -> tuple[list[bytes], np.ndarray[Any, np.dtype[np.int64]]]:
    """The distinct ``learning`` JSON blocks (see ``metrics.learning.learning_stats``, or
    null) of the scopes, and which one is each scope's; scope i's group has the learning
    parameters ``params[mode[i]]``, of version ``versions[mode[i]]``.

    Scopes with few attempts share their values often (every new learner who got one
    easy question right has the same block): each distinct block is written once.
    """
    keys = np.empty((len(mode), 11), dtype=np.float64)
    keys[:, :7] = learning
    keys[:, 7:10] = questions
    keys[:, 10] = mode
    distinct, inverse = _distinct_rows(keys)
    return _distinct_blocks(distinct, params, versions), inverse


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


def _distinct_blocks(
    keys: np.ndarray[Any, Any], params: Sequence[LearningParams], versions: Sequence[str]
) -> list[bytes]:
    """The learning JSON of each row of (log-odds, e, current, longest, first correct x3,
    questions x3, mode); ``null`` where the log-odds are NaN. ``p`` and ``1 - p`` are
    ``learning.sigmoid`` of them, in Python (once per distinct row): the same bits as
    the reference's."""
    u = len(keys)
    logits = keys[:, 0].tolist()
    p = np.array([sigmoid(x) for x in logits], dtype=np.float64)
    not_p = np.array([sigmoid(-x) for x in logits], dtype=np.float64)
    e = keys[:, 1]
    mode = keys[:, 10].astype(np.int64)
    coefficients = [q.coefficients for q in params]
    written = [msgspec.json.encode(v) for v in versions]
    one_minus_slip = np.array([c.one_minus_slip for c in coefficients], dtype=np.float64)[mode]
    guess = np.array([c.guess for c in coefficients], dtype=np.float64)[mode]
    threshold = np.array([q.mastery_threshold for q in params], dtype=np.float64)[mode]
    target = np.array([q.target_success for q in params], dtype=np.float64)[mode]
    predicted = p[:, None] * one_minus_slip + not_p[:, None] * guess
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
        [written[g] for g in mode.tolist()],
        strict=True,
    )
    return [
        b"null" if math.isnan(x) else _LEARNING % values
        for x, values in zip(logits, columns, strict=True)
    ]


def _initial_row(params: LearningParams) -> tuple[float, float, int, int, int, int, int]:
    return (logit(params.prior), params.ewma_prior, 0, 0, 0, 0, 0)


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


def _float_token_indices(
    numerator: np.ndarray[Any, Any], denominator: np.ndarray[Any, Any]
) -> tuple[list[bytes], np.ndarray[Any, np.dtype[np.int64]]]:
    """:func:`_float_tokens` as distinct texts and, per value, the index of its text
    (``null``, where 0 / 0, is the last)."""
    texts, inverse = _distinct_texts(numerator / np.maximum(denominator, 1))
    index = np.where(denominator > 0, inverse.reshape(denominator.shape), len(texts))
    return [*texts, b"null"], index


def _written(values: np.ndarray[Any, Any]) -> list[bytes]:
    """``round(value, 4)`` of each value as msgspec writes it."""
    return _token_array(values).tolist()  # type: ignore[no-any-return]


def _token_array(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``round(value, 4)`` of each value as msgspec writes it, as an object array.

    Rounded stats repeat a lot (ratios of small counts, probabilities to four places):
    each distinct rounded value is written once.
    """
    texts, inverse = _distinct_texts(values)
    tokens = np.empty(len(texts), dtype=object)
    tokens[:] = texts
    expanded: np.ndarray[Any, Any] = tokens[inverse]
    return expanded


def _distinct_texts(values: np.ndarray[Any, Any]) -> tuple[list[bytes], np.ndarray[Any, Any]]:
    """The distinct ``round(value, 4)`` of the values (flattened) as msgspec writes them,
    and which one is each value's."""
    rounded = _round4(values.reshape(-1))
    bits, inverse = np.unique(rounded.view(np.uint64), return_inverse=True)  # -0.0 != 0.0
    texts: list[bytes] = msgspec.json.encode(bits.view(np.float64).tolist())[1:-1].split(b",")
    return texts, inverse.reshape(-1)


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


@cache
def _mask_names(mask: int) -> bytes:
    return msgspec.json.encode([d for i, d in enumerate(DIFFICULTIES) if mask >> i & 1])


def _ranking(
    attempts: np.ndarray[Any, Any], questions: np.ndarray[Any, Any], tried: np.ndarray[Any, Any]
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Attempted difficulties by exact average attempts, ties easy < medium < hard: the
    code of each scope's order (see :data:`_RANKINGS`).

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
    return digits[:, 0] + 4 * digits[:, 1] + 16 * digits[:, 2]  # type: ignore[no-any-return]


@cache
def _ranking_names(code: int) -> bytes:
    digits = [(code >> (2 * i)) & 3 for i in range(3)]
    ranked = sorted((pos, i) for i, pos in enumerate(digits) if pos != _NOT_RANKED)
    return msgspec.json.encode([DIFFICULTIES[i] for _, i in ranked])


#: What fills a placeholder of the template: an integer, a text of the token table or a
#: timestamp (``metrics.kernels.fill_templates`` takes the same codes).
INTEGER, TOKEN, TIMESTAMP = 0, 1, 2
#: The JSON list of difficulties of each bit mask (easy = 1, medium = 2, hard = 4).
_MASK_NAMES = [_mask_names(mask) for mask in range(8)]
#: The ranking JSON of each base-4 code of :func:`_ranking`.
_RANKINGS = [_ranking_names(code) for code in range(64)]


def _template_parts(template: bytes) -> tuple[Any, Any, Any]:
    """The literal pieces of a ``%d``/``%s`` template (joined, and their ends) and what
    fills each placeholder: an integer (``%d``), a text of the token table, or a
    timestamp (the ``%s`` after a ``..._at`` key)."""
    pieces = re.split(rb"%[ds]", template)
    kinds = [
        INTEGER if marker == b"%d" else TIMESTAMP if piece.endswith(b'_at":') else TOKEN
        for piece, marker in zip(pieces, re.findall(rb"%[ds]", template), strict=False)
    ]
    ends = np.cumsum([0, *map(len, pieces)], dtype=np.int64)
    return np.frombuffer(b"".join(pieces), dtype=np.uint8), ends, np.array(kinds, dtype=np.int64)


_PIECES, _PIECE_ENDS, _KINDS = _template_parts(_TEMPLATE)


def _timestamps(values: np.ndarray[Any, np.dtype[np.int64]]) -> list[bytes]:
    """Epoch milliseconds as the RFC 3339 JSON strings of ``builtin.format_timestamp``
    (``null`` where negative: unknown)."""
    missing = (values < 0).tolist()
    text = np.datetime_as_string(np.maximum(values, 0).astype("datetime64[ms]"), unit="ms")
    return [
        b"null" if gone else b'"%sZ"' % t.encode()
        for t, gone in zip(text.tolist(), missing, strict=True)
    ]
