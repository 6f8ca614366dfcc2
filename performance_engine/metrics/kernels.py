"""Compiled loops of the batch path (numba): one pass over the rows where numpy needs many.

Each kernel is the inner loop of a function of the batch path, which prepares its arrays:
:func:`metrics.sequence.fold_learning_columns` and
:func:`metrics.sequence.encode_history_buffer` (held equal to their references,
``metrics.learning.fold_learning`` and ``metrics.history.encode_entries``, by
``tests/metrics/test_sequence.py`` and ``tests/store/test_formats.py``), the distinct and
not yet seen attempts of :mod:`metrics.batch` (held to their definitions and to the
stream by ``tests/metrics/test_properties.py``), and the stats JSON's template filler
(:func:`fill_templates`, for :mod:`metrics.columnar`). The msgpack and decimal building
blocks here are shared with the store's compiled writers (``store.kernels``).
The kernels are compiled on first use and cached
beside this file (where it is not writable: in ``NUMBA_CACHE_DIR`` or the user's cache
directory); compiling them all takes several seconds, once. ``python -m
performance_engine.metrics.kernels`` compiles them ahead (the Dockerfile does). They
release the GIL.

Floating-point operations are written in the reference's order and compiled without
fast-math, so they give the same bits.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

__all__ = [
    "BIN_CODES",
    "STR_CODES",
    "compile_all",
    "decimal_size",
    "distinct_attempts",
    "encode_history_rows",
    "fill_templates",
    "fold_learning_scopes",
    "header_size",
    "predict_scopes",
    "put_bytes",
    "put_decimal",
    "put_header",
    "put_uint",
    "uint_size",
    "unseen",
]

Array = np.ndarray[Any, Any]

_jit = numba.njit(cache=True, nogil=True)


@_jit
def distinct_attempts(scope_codes: Array, fingerprints: Array, n_scopes: int) -> Array:
    """The rows of the distinct (scope, fingerprint) pairs, sorted by both; of equal pairs
    the first row in frame order.

    A counting sort by scope (stable, so each scope's rows stay in frame order), then a
    stable sort of each scope's fingerprints: no sort of the whole frame.
    """
    n = len(scope_codes)
    starts = np.zeros(n_scopes + 1, dtype=np.int64)
    for r in range(n):
        starts[scope_codes[r] + 1] += 1
    for s in range(n_scopes):
        starts[s + 1] += starts[s]
    at = starts[:-1].copy()
    by_scope = np.empty(n, dtype=np.int64)
    for r in range(n):
        s = scope_codes[r]
        by_scope[at[s]] = r
        at[s] += 1
    rows = np.empty(n, dtype=np.int64)
    m = 0
    for s in range(n_scopes):
        segment = by_scope[starts[s] : starts[s + 1]]
        order = np.argsort(fingerprints[segment], kind="mergesort")
        for j in range(len(segment)):
            r = segment[order[j]]
            if j == 0 or fingerprints[r] != fingerprints[rows[m - 1]]:
                rows[m] = r
                m += 1
    return rows[:m]


@_jit
def unseen(offsets: Array, fingerprints: Array, seen_offsets: Array, seen: Array) -> Array:
    """Which rows hold a fingerprint their scope has not seen.

    Scope i's rows are ``offsets[i]:offsets[i + 1]``, their fingerprints sorted; what it
    has seen is ``seen[seen_offsets[i]:seen_offsets[i + 1]]`` (any order).
    """
    new = np.ones(len(fingerprints), dtype=np.bool_)
    for i in range(len(offsets) - 1):
        known = np.sort(seen[seen_offsets[i] : seen_offsets[i + 1]])
        k = 0
        for r in range(offsets[i], offsets[i + 1]):
            while k < len(known) and known[k] < fingerprints[r]:
                k += 1
            if k < len(known) and known[k] == fingerprints[r]:
                new[r] = False
    return new


@_jit
def _softplus(x: float) -> float:
    """``metrics.learning.softplus``, the same operations."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@_jit
def _log_sum_exp(a: float, b: float) -> float:
    """``metrics.learning.log_sum_exp``, the same operations."""
    top = max(a, b)
    if top == -math.inf:
        return top
    return top + math.log1p(math.exp(-abs(a - b)))


@_jit
def _mastery_step(x: float, keep: float, forget: float, learn: float, stay: float) -> float:
    """The log-odds before the next answer from ``x``, the posterior's log-odds
    (``metrics.learning.learning_step``'s transition, the same operations)."""
    known = -_softplus(-x)
    unknown = -_softplus(x)
    return _log_sum_exp(known + keep, unknown + learn) - _log_sum_exp(
        known + forget, unknown + stay
    )


@_jit
def _sigmoid(x: float) -> float:
    """``metrics.learning.sigmoid``, the same operations."""
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    z = math.exp(x)
    return z / (1 + z)


@_jit
def predict_scopes(
    offsets: Array,
    evidence_class: Array,
    correct: Array,
    question_offset: Array,
    which: Array,
    prior_logit: Array,
    evidence: Array,
    transition: Array,
    guess: Array,
    one_minus_slip: Array,
) -> Array:
    """Per row, P(right) predicted from the scope's earlier rows only (SPEC 3.3):
    ``metrics.learning.predict_correct`` before ``learning_step`` takes the row, the same
    operations. Arrays as in :func:`fold_learning_scopes`; ``guess[w, c]`` and
    ``one_minus_slip[w, c]`` per class, ``question_offset[r]`` the row's question's."""
    out = np.empty(len(evidence_class), dtype=np.float64)
    for i in range(len(offsets) - 1):
        w = which[i]
        logit = prior_logit[w]
        keep, forget = transition[w, 0], transition[w, 1]
        learn, stay = transition[w, 2], transition[w, 3]
        for r in range(offsets[i], offsets[i + 1]):
            k = evidence_class[r]
            p = _sigmoid(logit)
            q = _sigmoid(-logit)
            base = p * one_minus_slip[w, k] + q * guess[w, k]
            b = question_offset[r]
            if b == 0.0:
                out[r] = base
            else:
                out[r] = _sigmoid(math.log(base) - math.log1p(-base) + b)
            c = 1 if correct[r] else 0
            logit = _mastery_step(logit + evidence[w, k, c], keep, forget, learn, stay)
    return out


@_jit
def fold_learning_scopes(
    offsets: Array,
    difficulty: Array,
    evidence_class: Array,
    correct: Array,
    question: Array,
    which: Array,
    prior_logit: Array,
    ewma_prior: Array,
    evidence: Array,
    transition: Array,
    ewma: Array,
    one_minus_alpha: Array,
) -> tuple[Array, Array, Array, Array, Array]:
    """Per scope (rows ``offsets[i]:offsets[i + 1]``, in learning order, parameters row
    ``which[i]`` of the coefficient arrays): the mastery's log-odds, recent accuracy, the
    current and longest runs of correct answers, and per difficulty the questions whose
    first try was correct; ``metrics.learning.learning_step``, the same operations.

    ``evidence[w, d, c]``, ``transition[w]`` (ln(1 - F), ln F, ln T, ln(1 - T)) and
    ``ewma[w, c]`` are the terms of ``learning.Coefficients``; ``evidence_class[r]`` is the
    class whose guess and slip weigh row r's answer (its question's fitted class).
    """
    n = len(offsets) - 1
    logit_out = np.empty(n, dtype=np.float64)
    e_out = np.empty(n, dtype=np.float64)
    current_out = np.zeros(n, dtype=np.int64)
    longest_out = np.zeros(n, dtype=np.int64)
    first_out = np.zeros((n, 3), dtype=np.int64)
    seen = np.zeros(3, dtype=np.bool_)
    for i in range(n):
        w = which[i]
        logit = prior_logit[w]
        e = ewma_prior[w]
        keep, forget = transition[w, 0], transition[w, 1]
        learn, stay = transition[w, 2], transition[w, 3]
        current = 0
        longest = 0
        lo = offsets[i]
        hi = offsets[i + 1]
        for r in range(lo, hi):
            c = 1 if correct[r] else 0
            x = logit + evidence[w, evidence_class[r], c]
            logit = _mastery_step(x, keep, forget, learn, stay)
            e = ewma[w, c] + one_minus_alpha[w] * e
            if c:
                current += 1
                longest = max(longest, current)
            else:
                current = 0
        logit_out[i] = logit
        e_out[i] = e
        current_out[i] = current
        longest_out[i] = longest
        # First tries: the rows of each question in learning order (a stable sort), the
        # first of each difficulty among them.
        order = np.argsort(question[lo:hi], kind="mergesort")
        j = 0
        m = hi - lo
        while j < m:
            asked = question[lo + order[j]]
            seen[:] = False
            while j < m and question[lo + order[j]] == asked:
                r = lo + order[j]
                d = difficulty[r]
                if not seen[d]:
                    seen[d] = True
                    if correct[r]:
                        first_out[i, d] += 1
                j += 1
    return logit_out, e_out, current_out, longest_out, first_out


@_jit
def uint_size(value: np.uint64) -> int:
    if value < 128:
        return 1
    if value < 256:
        return 2
    if value < 65536:
        return 3
    if value < 4294967296:
        return 5
    return 9


@_jit
def put_uint(out: Array, at: int, value: np.uint64) -> int:
    """msgpack's smallest form of an unsigned integer at ``out[at:]``; returns the end."""
    if value < 128:
        out[at] = value
        return at + 1
    if value < 256:
        out[at] = 0xCC
        width = 1
    elif value < 65536:
        out[at] = 0xCD
        width = 2
    elif value < 4294967296:
        out[at] = 0xCE
        width = 4
    else:
        out[at] = 0xCF
        width = 8
    for k in range(width):
        out[at + width - k] = (value >> np.uint64(8 * k)) & np.uint64(0xFF)
    return at + 1 + width


@_jit
def header_size(length: int, small: int) -> int:
    """The size of a msgpack str or bin header (see :func:`put_header`)."""
    if length <= small:
        return 1
    if length <= 255:
        return 2
    if length <= 65535:
        return 3
    return 5


@_jit
def put_header(out: Array, at: int, length: int, small: int, codes: Array) -> int:
    """A msgpack str or bin header (``codes``: its 8-, 16- and 32-bit length markers;
    ``small``: the longest length of the one-byte form, -1 if the type has none)."""
    if length <= small:
        out[at] = 0xA0 | length
        return at + 1
    if length <= 255:
        out[at] = codes[0]
        out[at + 1] = length
        return at + 2
    if length <= 65535:
        out[at] = codes[1]
        out[at + 1] = length >> 8
        out[at + 2] = length & 0xFF
        return at + 3
    out[at] = codes[2]
    for k in range(4):
        out[at + 4 - k] = (length >> (8 * k)) & 0xFF
    return at + 5


BIN_CODES = np.array([0xC4, 0xC5, 0xC6], dtype=np.uint8)
STR_CODES = np.array([0xD9, 0xDA, 0xDB], dtype=np.uint8)


@_jit
def put_bytes(out: Array, at: int, data: Array, lo: int, hi: int, small: int, codes: Array) -> int:
    at = put_header(out, at, hi - lo, small, codes)
    out[at : at + hi - lo] = data[lo:hi]
    return at + hi - lo


@_jit
def encode_history_rows(
    occurred: Array,
    id_offsets: Array,
    id_data: Array,
    question: Array,
    difficulty: Array,
    correct: Array,
    number: Array,
    number_missing: Array,
    spent: Array,
    spent_missing: Array,
) -> tuple[Array, Array]:
    """Each row as the msgpack array ``encode_entries`` writes for it, all joined; and the
    end of each row in the result (``ends[0]`` is 0, ``ends[i + 1]`` row i's end).

    The id of row i is ``id_data[id_offsets[i]:id_offsets[i + 1]]`` (UTF-8); absent
    numbers (``*_missing``) are nil.
    """
    n = len(occurred)
    ends = np.zeros(n + 1, dtype=np.int64)
    size = 0
    for i in range(n):
        length = id_offsets[i + 1] - id_offsets[i]
        size += 3 + uint_size(np.uint64(occurred[i])) + header_size(length, 31) + length
        size += uint_size(np.uint64(question[i]))
        size += 1 if number_missing[i] else uint_size(np.uint64(number[i]))
        size += 1 if spent_missing[i] else uint_size(np.uint64(spent[i]))
        ends[i + 1] = size
    out = np.empty(size, dtype=np.uint8)
    for i in range(n):
        at = ends[i]
        out[at] = 0x97  # an array of 7
        at = put_uint(out, at + 1, np.uint64(occurred[i]))
        at = put_bytes(out, at, id_data, id_offsets[i], id_offsets[i + 1], 31, STR_CODES)
        at = put_uint(out, at, np.uint64(question[i]))
        out[at] = difficulty[i]
        out[at + 1] = 0xC3 if correct[i] else 0xC2
        at += 2
        if number_missing[i]:
            out[at] = 0xC0
            at += 1
        else:
            at = put_uint(out, at, np.uint64(number[i]))
        if spent_missing[i]:
            out[at] = 0xC0
        else:
            put_uint(out, at, np.uint64(spent[i]))
    return out, ends


@_jit
def decimal_size(value: int) -> int:
    size = 1
    while value >= 10:
        value //= 10
        size += 1
    return size


@_jit
def put_decimal(out: Array, at: int, value: int) -> int:
    """``value`` (>= 0) in ASCII decimal at ``out[at:]``; returns the end."""
    end = at + decimal_size(value)
    k = end
    while True:
        k -= 1
        out[k] = 48 + value % 10
        value //= 10
        if value == 0:
            return end


@_jit
def _timestamp_size(millis: int) -> int:
    return 4 if millis < 0 else 26  # null, or "YYYY-MM-DDTHH:MM:SS.mmmZ" with its quotes


@_jit
def _put_digits(out: Array, at: int, value: int, width: int) -> int:
    for k in range(width - 1, -1, -1):
        out[at + k] = 48 + value % 10
        value //= 10
    return at + width


@_jit
def _put_timestamp(out: Array, at: int, millis: int) -> int:
    """Epoch milliseconds (0 to the end of year 9999) as a JSON string in RFC 3339 UTC with
    milliseconds, or ``null`` if negative (the civil date: H. Hinnant's algorithm)."""
    if millis < 0:
        for c in b"null":
            out[at] = c
            at += 1
        return at
    days = millis // 86_400_000
    rest = millis % 86_400_000
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    out[at] = 34  # "
    at = _put_digits(out, at + 1, year, 4)
    out[at] = 45  # -
    at = _put_digits(out, at + 1, month, 2)
    out[at] = 45
    at = _put_digits(out, at + 1, day, 2)
    out[at] = 84  # T
    at = _put_digits(out, at + 1, rest // 3_600_000, 2)
    out[at] = 58  # :
    at = _put_digits(out, at + 1, rest // 60_000 % 60, 2)
    out[at] = 58
    at = _put_digits(out, at + 1, rest // 1000 % 60, 2)
    out[at] = 46  # .
    at = _put_digits(out, at + 1, rest % 1000, 3)
    out[at] = 90  # Z
    out[at + 1] = 34
    return at + 2


@_jit
def _signed_size(value: int) -> int:
    return 1 + decimal_size(-value) if value < 0 else decimal_size(value)


@_jit
def fill_templates(
    pieces: Array, piece_ends: Array, kinds: Array, columns: Array, tokens: Array, token_ends: Array
) -> tuple[Array, Array]:
    """One text per row of ``columns``: a template's literal pieces
    (``pieces[piece_ends[j]:piece_ends[j + 1]]``, one more than there are placeholders)
    with placeholder j filled from ``columns[i, j]``: an integer in decimal, a token
    (``tokens[token_ends[t]:token_ends[t + 1]]`` for ``t = columns[i, j]``) or a
    timestamp (see ``_put_timestamp``), as ``kinds[j]`` says: 0, 1 or 2
    (``metrics.columnar.INTEGER``, ``TOKEN``, ``TIMESTAMP``). All joined; ``ends[i + 1]``
    is the end of row i's text (``ends[0]`` is 0)."""
    n, k = columns.shape
    literal = piece_ends[-1] - piece_ends[0]
    ends = np.zeros(n + 1, dtype=np.int64)
    size = 0
    for i in range(n):
        size += literal
        for j in range(k):
            value = columns[i, j]
            if kinds[j] == 0:
                size += _signed_size(value)
            elif kinds[j] == 1:
                size += token_ends[value + 1] - token_ends[value]
            else:
                size += _timestamp_size(value)
        ends[i + 1] = size
    out = np.empty(size, dtype=np.uint8)
    for i in range(n):
        at = ends[i]
        for j in range(k + 1):
            lo = piece_ends[j]
            hi = piece_ends[j + 1]
            out[at : at + hi - lo] = pieces[lo:hi]
            at += hi - lo
            if j == k:
                break
            value = columns[i, j]
            if kinds[j] == 0:
                if value < 0:
                    out[at] = 45
                    at = put_decimal(out, at + 1, -value)
                else:
                    at = put_decimal(out, at, value)
            elif kinds[j] == 1:
                lo = token_ends[value]
                hi = token_ends[value + 1]
                out[at : at + hi - lo] = tokens[lo:hi]
                at += hi - lo
            else:
                at = _put_timestamp(out, at, value)
    return out, ends


def compile_all() -> None:
    """Compile (and cache) every kernel for the types the batch path calls them with
    (the store's bulk writers: ``performance_engine.store.kernels.compile_all``)."""
    i64 = np.zeros(1, dtype=np.int64)
    u64 = np.zeros(1, dtype=np.uint64)
    f64 = np.zeros(1, dtype=np.float64)
    no = np.zeros(1, dtype=np.bool_)
    two = np.array([0, 1], dtype=np.int64)
    distinct_attempts(i64, u64, 1)
    unseen(two, u64, two, np.frombuffer(bytes(8), dtype=np.uint64))  # read-only, as given
    fold_learning_scopes(
        two,
        i64,
        i64,
        no,
        i64,
        i64,
        f64,
        f64,
        np.ones((1, 3, 2)),
        np.zeros((1, 4)),
        np.zeros((1, 2)),
        f64,
    )
    byte = np.zeros(1, dtype=np.uint8)
    encode_history_rows(i64, two, byte, i64, i64, no, i64, no, i64, no)
    # The template's pieces and the token table are views of bytes (read-only), as here.
    read_only_byte = np.frombuffer(bytes(1), dtype=np.uint8)
    fill_templates(
        read_only_byte, np.zeros(3, np.int64), i64, np.zeros((1, 1), np.int64), read_only_byte, two
    )


if __name__ == "__main__":
    compile_all()
