"""Compiled loops of the batch path (numba): one pass over the rows where numpy needs many.

Each kernel is the inner loop of a function of the batch path, which prepares its arrays:
:func:`metrics.sequence.fold_learning_columns` and
:func:`metrics.sequence.encode_history_buffer` (held equal to their references,
``metrics.learning.fold_learning`` and ``metrics.history.encode_entries``, by
``tests/test_sequence.py``), and the distinct and not yet seen attempts of
:mod:`metrics.batch` (held to their definitions and to the stream by
``tests/test_properties.py``); the backfill's writers of new scopes' stored values
(:func:`pack_scope_rows`, held byte-equal to ``worker.store.pack_scope`` by
``tests/test_properties.py``) and of their ``MSETNX`` commands (:func:`msetnx_commands`).
The kernels are compiled on first use and cached
beside this file (where it is not writable: in ``NUMBA_CACHE_DIR`` or the user's cache
directory); compiling them all takes several seconds, once. ``python -m
performance_engine.metrics.kernels`` compiles them ahead (the Dockerfile does). They
release the GIL.

Floating-point operations are written in the reference's order and compiled without
fast-math, so they give the same bits.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = [
    "compile_all",
    "distinct_attempts",
    "encode_history_rows",
    "fill_templates",
    "fold_learning_scopes",
    "msetnx_commands",
    "pack_scope_rows",
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
def fold_learning_scopes(
    offsets: Array,
    difficulty: Array,
    correct: Array,
    question: Array,
    which: Array,
    prior: Array,
    ewma_prior: Array,
    posterior: Array,
    ewma: Array,
    one_minus_forget: Array,
    learn: Array,
    one_minus_alpha: Array,
) -> tuple[Array, Array, Array, Array, Array]:
    """Per scope (rows ``offsets[i]:offsets[i + 1]``, in learning order, parameters row
    ``which[i]`` of the coefficient arrays): mastery, recent accuracy, the current and
    longest runs of correct answers, and per difficulty the questions whose first try
    was correct.

    ``posterior[w, d, c]`` is the (A, B) pair and ``ewma[w, c]`` the ``a*c`` term of
    ``learning.Coefficients``.
    """
    n = len(offsets) - 1
    p_out = np.empty(n, dtype=np.float64)
    e_out = np.empty(n, dtype=np.float64)
    current_out = np.zeros(n, dtype=np.int64)
    longest_out = np.zeros(n, dtype=np.int64)
    first_out = np.zeros((n, 3), dtype=np.int64)
    seen = np.zeros(3, dtype=np.bool_)
    for i in range(n):
        w = which[i]
        p = prior[w]
        e = ewma_prior[w]
        current = 0
        longest = 0
        lo = offsets[i]
        hi = offsets[i + 1]
        for r in range(lo, hi):
            d = difficulty[r]
            c = 1 if correct[r] else 0
            num = p * posterior[w, d, c, 0]
            q = num / (num + (1 - p) * posterior[w, d, c, 1])
            p = q * one_minus_forget[w] + (1 - q) * learn[w]
            e = ewma[w, c] + one_minus_alpha[w] * e
            if c:
                current += 1
                longest = max(longest, current)
            else:
                current = 0
        p_out[i] = p
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
    return p_out, e_out, current_out, longest_out, first_out


@_jit
def _uint_size(value: np.uint64) -> int:
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
def _put_uint(out: Array, at: int, value: np.uint64) -> int:
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
def _header_size(length: int, small: int) -> int:
    """The size of a msgpack str or bin header (see :func:`_put_header`)."""
    if length <= small:
        return 1
    if length <= 255:
        return 2
    if length <= 65535:
        return 3
    return 5


@_jit
def _put_header(out: Array, at: int, length: int, small: int, codes: Array) -> int:
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


_BIN = np.array([0xC4, 0xC5, 0xC6], dtype=np.uint8)
_STR = np.array([0xD9, 0xDA, 0xDB], dtype=np.uint8)


@_jit
def _put_bytes(out: Array, at: int, data: Array, lo: int, hi: int, small: int, codes: Array) -> int:
    at = _put_header(out, at, hi - lo, small, codes)
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
        size += 3 + _uint_size(np.uint64(occurred[i])) + _header_size(length, 31) + length
        size += _uint_size(np.uint64(question[i]))
        size += 1 if number_missing[i] else _uint_size(np.uint64(number[i]))
        size += 1 if spent_missing[i] else _uint_size(np.uint64(spent[i]))
        ends[i + 1] = size
    out = np.empty(size, dtype=np.uint8)
    for i in range(n):
        at = ends[i]
        out[at] = 0x97  # an array of 7
        at = _put_uint(out, at + 1, np.uint64(occurred[i]))
        at = _put_bytes(out, at, id_data, id_offsets[i], id_offsets[i + 1], 31, _STR)
        at = _put_uint(out, at, np.uint64(question[i]))
        out[at] = difficulty[i]
        out[at + 1] = 0xC3 if correct[i] else 0xC2
        at += 2
        if number_missing[i]:
            out[at] = 0xC0
            at += 1
        else:
            at = _put_uint(out, at, np.uint64(number[i]))
        if spent_missing[i]:
            out[at] = 0xC0
        else:
            _put_uint(out, at, np.uint64(spent[i]))
    return out, ends


@_jit
def _put_float(out: Array, at: int, bits: np.uint64) -> int:
    """A msgpack float 64 of the given IEEE 754 bits."""
    out[at] = 0xCB
    for k in range(8):
        out[at + 8 - k] = (bits >> np.uint64(8 * k)) & np.uint64(0xFF)
    return at + 9


@_jit
def _put_big_endian(out: Array, at: int, value: int, width: int) -> int:
    for k in range(width):
        out[at + width - 1 - k] = (value >> (8 * k)) & 0xFF
    return at + width


@_jit
def pack_scope_rows(
    version: Array,
    first_at: Array,
    last_at: Array,
    attempts: Array,
    correct: Array,
    questions: Array,
    question_ends: Array,
    solved: Array,
    solved_ends: Array,
    seen: Array,
    seen_ends: Array,
    history: Array,
    history_ends: Array,
    spilled: Array,
    tails: Array,
    tail_ends: Array,
    p_bits: Array,
    e_bits: Array,
    current: Array,
    longest: Array,
    first_correct: Array,
    signature: Array,
    stats: Array,
    stats_ends: Array,
) -> tuple[Array, Array]:
    """The stored value of each new scope (``store.pack_scope``: the version and length
    header, the state as ``metrics.state.encode_state`` writes it, the stats JSON), all
    joined, and the end of each (``ends[0]`` is 0).

    Scope i's byte strings are ranges of the joined buffers: its questions and solved
    sets per difficulty ``questions[question_ends[3i + d]:question_ends[3i + d + 1]]``,
    its seen fingerprints, its encoded history (kept in the state unless ``spilled``),
    its last attempt's UTF-8 id and its stats JSON ``x[x_ends[i]:x_ends[i + 1]]``.
    ``p_bits`` and ``e_bits`` are the learning fold's floats viewed as uint64.
    """
    n = len(version)
    ends = np.zeros(n + 1, dtype=np.int64)
    size = 0
    for i in range(n):
        size += 12 + 3  # the header; the state's array of 17
        size += _uint_size(np.uint64(version[i])) * 2  # version, history (the same)
        size += _uint_size(np.uint64(first_at[i])) + _uint_size(np.uint64(last_at[i]))
        size += 2  # two arrays of 3
        for d in range(3):
            size += _uint_size(np.uint64(attempts[i, d])) + _uint_size(np.uint64(correct[i, d]))
        size += 2
        for d in range(3):
            k = 3 * i + d
            length = question_ends[k + 1] - question_ends[k]
            size += _header_size(length, -1) + length
            length = solved_ends[k + 1] - solved_ends[k]
            size += _header_size(length, -1) + length
        length = seen_ends[i + 1] - seen_ends[i]
        size += _header_size(length, -1) + length
        size += 3  # custom {}, log [], spilled
        length = 0 if spilled[i] else history_ends[i + 1] - history_ends[i]
        size += _header_size(length, -1) + length
        length = tail_ends[i + 1] - tail_ends[i]
        size += _header_size(length, 31) + length
        size += 1 + 9 + 9 + _uint_size(np.uint64(current[i])) + _uint_size(np.uint64(longest[i]))
        size += 1
        for d in range(3):
            size += _uint_size(np.uint64(first_correct[i, d]))
        size += 1 + _uint_size(np.uint64(signature[i]))  # sequential nil, signature
        size += stats_ends[i + 1] - stats_ends[i]
        ends[i + 1] = size
    out = np.empty(size, dtype=np.uint8)
    for i in range(n):
        start = ends[i]
        at = _put_big_endian(out, start, version[i], 8) + 4  # the state's length: below
        state = at
        out[at] = 0xDC  # an array of 17
        out[at + 1] = 0
        out[at + 2] = 17
        at = _put_uint(out, at + 3, np.uint64(version[i]))
        at = _put_uint(out, at, np.uint64(first_at[i]))
        at = _put_uint(out, at, np.uint64(last_at[i]))
        out[at] = 0x93
        at += 1
        for d in range(3):
            at = _put_uint(out, at, np.uint64(attempts[i, d]))
        out[at] = 0x93
        at += 1
        for d in range(3):
            at = _put_uint(out, at, np.uint64(correct[i, d]))
        out[at] = 0x93
        at += 1
        for d in range(3):
            k = 3 * i + d
            at = _put_bytes(out, at, questions, question_ends[k], question_ends[k + 1], -1, _BIN)
        out[at] = 0x93
        at += 1
        for d in range(3):
            k = 3 * i + d
            at = _put_bytes(out, at, solved, solved_ends[k], solved_ends[k + 1], -1, _BIN)
        at = _put_bytes(out, at, seen, seen_ends[i], seen_ends[i + 1], -1, _BIN)
        out[at] = 0x80  # custom: {}
        out[at + 1] = 0x90  # log: []
        at = _put_uint(out, at + 2, np.uint64(version[i]))  # history: every attempt
        out[at] = 0xC3 if spilled[i] else 0xC2
        at += 1
        if spilled[i]:
            at = _put_bytes(out, at, history, 0, 0, -1, _BIN)
        else:
            at = _put_bytes(out, at, history, history_ends[i], history_ends[i + 1], -1, _BIN)
        at = _put_bytes(out, at, tails, tail_ends[i], tail_ends[i + 1], 31, _STR)
        out[at] = 0x95  # learning: an array of 5
        at = _put_float(out, at + 1, p_bits[i])
        at = _put_float(out, at, e_bits[i])
        at = _put_uint(out, at, np.uint64(current[i]))
        at = _put_uint(out, at, np.uint64(longest[i]))
        out[at] = 0x93
        at += 1
        for d in range(3):
            at = _put_uint(out, at, np.uint64(first_correct[i, d]))
        out[at] = 0xC0  # sequential: None
        at = _put_uint(out, at + 1, np.uint64(signature[i]))
        _put_big_endian(out, state - 4, at - state, 4)
        length = stats_ends[i + 1] - stats_ends[i]
        out[at : at + length] = stats[stats_ends[i] : stats_ends[i + 1]]
    return out, ends


@_jit
def _decimal_size(value: int) -> int:
    size = 1
    while value >= 10:
        value //= 10
        size += 1
    return size


@_jit
def _put_decimal(out: Array, at: int, value: int) -> int:
    """``value`` (>= 0) in ASCII decimal at ``out[at:]``; returns the end."""
    end = at + _decimal_size(value)
    k = end
    while True:
        k -= 1
        out[k] = 48 + value % 10
        value //= 10
        if value == 0:
            return end


@_jit
def _put_bulk_header(out: Array, at: int, length: int) -> int:
    out[at] = 36  # $
    at = _put_decimal(out, at + 1, length)
    out[at] = 13
    out[at + 1] = 10
    return at + 2


@_jit
def _bulk_size(length: int) -> int:
    return 1 + _decimal_size(length) + 2 + length + 2


@_jit
def _key_length(prefix: int, user: int, sub: int, mode: int) -> int:
    """The length of ``{prefix}:{u{user}}:{sub}:{mode}`` (see ``worker.keyspace``)."""
    return prefix + 3 + _decimal_size(user) + 2 + _decimal_size(sub) + 1 + mode


@_jit
def _put_key(
    out: Array, at: int, prefix: Array, user: int, sub: int, mode: Array, history: bool
) -> int:
    out[at : at + len(prefix)] = prefix
    at += len(prefix)
    out[at] = 58  # :
    out[at + 1] = 123  # {
    out[at + 2] = 117  # u
    at = _put_decimal(out, at + 3, user)
    out[at] = 125  # }
    out[at + 1] = 58
    at = _put_decimal(out, at + 2, sub)
    out[at] = 58
    at += 1
    out[at : at + len(mode)] = mode
    at += len(mode)
    if history:  # worker.keyspace.KeySpace.history_of
        for c in b":history":
            out[at] = c
            at += 1
    return at


@_jit
def msetnx_commands(
    prefix: Array,
    user: Array,
    sub: Array,
    mode: Array,
    mode_names: Array,
    mode_ends: Array,
    values: Array,
    value_ends: Array,
    histories: Array,
    history_starts: Array,
    history_ends: Array,
    group: int,
) -> tuple[Array, int]:
    """``MSETNX`` commands in Redis's wire protocol, one per ``group`` scopes, all joined;
    and how many there are.

    Scope i sets its key (``worker.keyspace.KeySpace.for_scope``: the ``prefix``, its
    user and sub-topic, the UTF-8 name ``mode_names[mode_ends[m]:mode_ends[m + 1]]`` of
    its mode ``m = mode[i]``) to ``values[value_ends[i]:value_ends[i + 1]]``, and, if the
    range is not empty, its history key to ``histories[history_starts[i]:history_ends[i]]``.
    """
    n = len(user)
    size = 0
    commands = 0
    for lo in range(0, n, group):
        hi = min(n, lo + group)
        args = 1
        for i in range(lo, hi):
            m = mode[i]
            key = _key_length(len(prefix), user[i], sub[i], mode_ends[m + 1] - mode_ends[m])
            size += _bulk_size(key) + _bulk_size(value_ends[i + 1] - value_ends[i])
            args += 2
            length = history_ends[i] - history_starts[i]
            if length:
                size += _bulk_size(key + 8) + _bulk_size(length)
                args += 2
        size += 1 + _decimal_size(args) + 2 + _bulk_size(6)
        commands += 1
    out = np.empty(size, dtype=np.uint8)
    at = 0
    for lo in range(0, n, group):
        hi = min(n, lo + group)
        args = 1
        for i in range(lo, hi):
            args += 2 if history_ends[i] == history_starts[i] else 4
        out[at] = 42  # *
        at = _put_decimal(out, at + 1, args)
        out[at] = 13
        out[at + 1] = 10
        at = _put_bulk_header(out, at + 2, 6)
        for c in b"MSETNX\r\n":
            out[at] = c
            at += 1
        for i in range(lo, hi):
            m = mode[i]
            name = mode_names[mode_ends[m] : mode_ends[m + 1]]
            key = _key_length(len(prefix), user[i], sub[i], len(name))
            at = _put_bulk_header(out, at, key)
            at = _put_key(out, at, prefix, user[i], sub[i], name, False)
            out[at] = 13
            out[at + 1] = 10
            start = value_ends[i]
            length = value_ends[i + 1] - start
            at = _put_bulk_header(out, at + 2, length)
            out[at : at + length] = values[start : start + length]
            out[at + length] = 13
            out[at + length + 1] = 10
            at += length + 2
            start = history_starts[i]
            length = history_ends[i] - start
            if length:
                at = _put_bulk_header(out, at, key + 8)
                at = _put_key(out, at, prefix, user[i], sub[i], name, True)
                out[at] = 13
                out[at + 1] = 10
                at = _put_bulk_header(out, at + 2, length)
                out[at : at + length] = histories[start : start + length]
                out[at + length] = 13
                out[at + length + 1] = 10
                at += length + 2
    return out, commands


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
    return 1 + _decimal_size(-value) if value < 0 else _decimal_size(value)


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
                    at = _put_decimal(out, at + 1, -value)
                else:
                    at = _put_decimal(out, at, value)
            elif kinds[j] == 1:
                lo = token_ends[value]
                hi = token_ends[value + 1]
                out[at : at + hi - lo] = tokens[lo:hi]
                at += hi - lo
            else:
                at = _put_timestamp(out, at, value)
    return out, ends


def compile_all() -> None:
    """Compile (and cache) every kernel for the types the batch path calls them with."""
    i64 = np.zeros(1, dtype=np.int64)
    u64 = np.zeros(1, dtype=np.uint64)
    f64 = np.zeros(1, dtype=np.float64)
    no = np.zeros(1, dtype=np.bool_)
    two = np.array([0, 1], dtype=np.int64)
    distinct_attempts(i64, u64, 1)
    unseen(two, u64, two, np.frombuffer(bytes(8), dtype=np.uint64))  # read-only, as given
    fold_learning_scopes(
        two, i64, no, i64, i64, f64, f64, np.ones((1, 3, 2, 2)), np.zeros((1, 2)), f64, f64, f64
    )
    byte = np.zeros(1, dtype=np.uint8)
    encode_history_rows(i64, two, byte, i64, i64, no, i64, no, i64, no)
    three = np.zeros((1, 3), dtype=np.int64)
    four = np.zeros(4, dtype=np.int64)
    # The tails' and stats' buffers are passed read-only (see metrics.batch), as here.
    read_only_byte = np.frombuffer(bytes(1), dtype=np.uint8)
    read_only_two = np.frombuffer(two.tobytes(), dtype=np.int64)
    pack_scope_rows(
        i64, i64, i64, three, three, byte, four, byte, four, byte, two, byte, two, no,
        read_only_byte, read_only_two, u64, u64, i64, i64, three, u64, read_only_byte, two,
    )  # fmt: skip
    msetnx_commands(byte, i64, i64, i64, byte, two, byte, two, byte, i64, i64, 1)
    fill_templates(byte, np.zeros(3, dtype=np.int64), i64, np.zeros((1, 1), np.int64), byte, two)


if __name__ == "__main__":
    compile_all()
