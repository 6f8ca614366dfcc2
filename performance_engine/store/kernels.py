"""Compiled writers of the store's bytes (numba): the backfill's new scopes, from arrays.

:func:`pack_scope_rows` writes stored values (``store.layout.pack_scope``) and
:func:`create_commands` the compare-and-set script's commands that create them (with their
histories and stats), in Redis's wire protocol, with keys and fields built from the
literal pieces ``KeySpace`` gives (``store.bulk.key_pieces``). Neither defines a layout
of its own: the field order they write is checked against ``ScopeState`` and
``LearningState`` and the header against ``store.layout.HEADER`` when this module is
imported (:func:`_check_layouts`), and ``tests/store/test_formats.py`` holds
their bytes equal to the reference writers' (the commands parsed back with a RESP reader).
The msgpack building blocks are shared with the metrics' kernels.
"""

from __future__ import annotations

import numba
import numpy as np

from performance_engine.metrics.kernels import (
    BIN_CODES,
    STR_CODES,
    Array,
    decimal_size,
    header_size,
    put_bytes,
    put_decimal,
    put_uint,
    uint_size,
)
from performance_engine.metrics.learning import LearningState
from performance_engine.metrics.state import ScopeState
from performance_engine.store.layout import HEADER

__all__ = ["compile_all", "create_commands", "pack_scope_rows"]

_jit = numba.njit(cache=True, nogil=True)

#: The fields :func:`pack_scope_rows` writes, in its order.
PACKED_STATE_FIELDS = (
    "version",
    "first_at",
    "last_at",
    "attempts",
    "correct",
    "questions",
    "solved",
    "seen",
    "custom",
    "log",
    "history",
    "spilled",
    "inline",
    "tail_id",
    "learning",
    "sequential",
    "signature",
    "revision",
)
PACKED_LEARNING_FIELDS = ("logit", "e", "current", "longest", "first_correct")


def _check_layouts() -> None:
    """Refuse to load writers that no longer match the layouts they write."""
    if ScopeState.__struct_fields__ != PACKED_STATE_FIELDS:
        raise ImportError(
            "store.kernels.pack_scope_rows writes the fields "
            f"{PACKED_STATE_FIELDS}, but ScopeState has {ScopeState.__struct_fields__}: "
            "update the compiled writer with the state"
        )
    if LearningState.__struct_fields__ != PACKED_LEARNING_FIELDS:
        raise ImportError(
            "store.kernels.pack_scope_rows writes the learning fields "
            f"{PACKED_LEARNING_FIELDS}, but LearningState has {LearningState.__struct_fields__}"
        )
    if HEADER.format != ">QI":
        raise ImportError(f"store.kernels writes a '>QI' header, the layout's is {HEADER.format}")


_check_layouts()


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
    logit_bits: Array,
    e_bits: Array,
    current: Array,
    longest: Array,
    first_correct: Array,
    signature: Array,
    revision: int,
) -> tuple[Array, Array]:
    """The stored value of each new scope, at ``revision`` (``store.pack_scope``: the
    revision and length header, the state as ``metrics.state.encode_state`` writes it),
    all joined, and the end of each (``ends[0]`` is 0).

    Scope i's byte strings are ranges of the joined buffers: its questions and solved
    sets per difficulty ``questions[question_ends[3i + d]:question_ends[3i + d + 1]]``,
    its seen fingerprints, its encoded history (kept in the state unless ``spilled``) and
    its last attempt's UTF-8 id ``x[x_ends[i]:x_ends[i + 1]]``.
    ``logit_bits`` and ``e_bits`` are the learning fold's floats viewed as uint64.
    """
    n = len(version)
    ends = np.zeros(n + 1, dtype=np.int64)
    size = 0
    for i in range(n):
        size += 12 + 3  # the header; the state's array of 18
        size += uint_size(np.uint64(version[i])) * 2  # version, history (the same)
        size += uint_size(np.uint64(first_at[i])) + uint_size(np.uint64(last_at[i]))
        size += 2  # two arrays of 3
        for d in range(3):
            size += uint_size(np.uint64(attempts[i, d])) + uint_size(np.uint64(correct[i, d]))
        size += 2
        for d in range(3):
            k = 3 * i + d
            length = question_ends[k + 1] - question_ends[k]
            size += header_size(length, -1) + length
            length = solved_ends[k + 1] - solved_ends[k]
            size += header_size(length, -1) + length
        length = seen_ends[i + 1] - seen_ends[i]
        size += header_size(length, -1) + length
        size += 3  # custom {}, log [], spilled
        length = 0 if spilled[i] else history_ends[i + 1] - history_ends[i]
        size += header_size(length, -1) + length
        length = tail_ends[i + 1] - tail_ends[i]
        size += header_size(length, 31) + length
        size += 1 + 9 + 9 + uint_size(np.uint64(current[i])) + uint_size(np.uint64(longest[i]))
        size += 1
        for d in range(3):
            size += uint_size(np.uint64(first_correct[i, d]))
        size += 1 + uint_size(np.uint64(signature[i]))  # sequential nil, signature
        size += uint_size(np.uint64(revision))
        ends[i + 1] = size
    out = np.empty(size, dtype=np.uint8)
    for i in range(n):
        start = ends[i]
        at = _put_big_endian(out, start, revision, 8) + 4  # the state's length: below
        state = at
        out[at] = 0xDC  # an array of 18: PACKED_STATE_FIELDS
        out[at + 1] = 0
        out[at + 2] = 18
        at = put_uint(out, at + 3, np.uint64(version[i]))
        at = put_uint(out, at, np.uint64(first_at[i]))
        at = put_uint(out, at, np.uint64(last_at[i]))
        out[at] = 0x93
        at += 1
        for d in range(3):
            at = put_uint(out, at, np.uint64(attempts[i, d]))
        out[at] = 0x93
        at += 1
        for d in range(3):
            at = put_uint(out, at, np.uint64(correct[i, d]))
        out[at] = 0x93
        at += 1
        for d in range(3):
            k = 3 * i + d
            at = put_bytes(
                out, at, questions, question_ends[k], question_ends[k + 1], -1, BIN_CODES
            )
        out[at] = 0x93
        at += 1
        for d in range(3):
            k = 3 * i + d
            at = put_bytes(out, at, solved, solved_ends[k], solved_ends[k + 1], -1, BIN_CODES)
        at = put_bytes(out, at, seen, seen_ends[i], seen_ends[i + 1], -1, BIN_CODES)
        out[at] = 0x80  # custom: {}
        out[at + 1] = 0x90  # log: []
        at = put_uint(out, at + 2, np.uint64(version[i]))  # history: every attempt
        out[at] = 0xC3 if spilled[i] else 0xC2
        at += 1
        if spilled[i]:
            at = put_bytes(out, at, history, 0, 0, -1, BIN_CODES)
        else:
            at = put_bytes(out, at, history, history_ends[i], history_ends[i + 1], -1, BIN_CODES)
        at = put_bytes(out, at, tails, tail_ends[i], tail_ends[i + 1], 31, STR_CODES)
        out[at] = 0x95  # learning: an array of 5
        at = _put_float(out, at + 1, logit_bits[i])
        at = _put_float(out, at, e_bits[i])
        at = put_uint(out, at, np.uint64(current[i]))
        at = put_uint(out, at, np.uint64(longest[i]))
        out[at] = 0x93
        at += 1
        for d in range(3):
            at = put_uint(out, at, np.uint64(first_correct[i, d]))
        out[at] = 0xC0  # sequential: None
        at = put_uint(out, at + 1, np.uint64(signature[i]))
        at = put_uint(out, at, np.uint64(revision))
        _put_big_endian(out, state - 4, at - state, 4)
    return out, ends


@_jit
def _put_bulk_header(out: Array, at: int, length: int) -> int:
    out[at] = 36  # $
    at = put_decimal(out, at + 1, length)
    out[at] = 13
    out[at + 1] = 10
    return at + 2


@_jit
def _bulk_size(length: int) -> int:
    return 1 + decimal_size(length) + 2 + length + 2


@_jit
def _put_piece(out: Array, at: int, pieces: Array, piece_ends: Array, j: int) -> int:
    lo = piece_ends[j]
    hi = piece_ends[j + 1]
    out[at : at + hi - lo] = pieces[lo:hi]
    return at + int(hi - lo)


#: The literal pieces of what create_commands writes (see ``store.bulk.key_pieces``).
KEY_BEFORE_USER, KEY_BEFORE_SUB, KEY_BEFORE_MODE, KEY_AFTER_MODE = 0, 1, 2, 3
HISTORY_SUFFIX, STATS_BEFORE_USER, STATS_AFTER_USER = 4, 5, 6
FIELD_BEFORE_SUB, FIELD_BEFORE_MODE, FIELD_AFTER_MODE = 7, 8, 9
MARKER_BEFORE_USER, MARKER_AFTER_USER = 10, 11
PIECES = 12


@_jit
def _piece_length(piece_ends: Array, j: int) -> int:
    return int(piece_ends[j + 1] - piece_ends[j])


@_jit
def _key_length(piece_ends: Array, user: int, sub: int, mode: int) -> int:
    """The length of a scope's key without the history suffix."""
    literal = int(piece_ends[KEY_AFTER_MODE + 1] - piece_ends[KEY_BEFORE_USER])
    return literal + decimal_size(user) + decimal_size(sub) + mode


@_jit
def _field_length(piece_ends: Array, sub: int, mode: int) -> int:
    """The length of a scope's field in its learner's stats hash."""
    literal = int(piece_ends[FIELD_AFTER_MODE + 1] - piece_ends[FIELD_BEFORE_SUB])
    return literal + decimal_size(sub) + mode


@_jit
def _user_key_length(piece_ends: Array, before: int, user: int) -> int:
    """The length of a learner's key built from pieces ``before`` and ``before + 1``
    around the user id (the stats hash's, the erasure marker's)."""
    literal = int(piece_ends[before + 2] - piece_ends[before])
    return literal + decimal_size(user)


@_jit
def _put_crlf(out: Array, at: int) -> int:
    out[at] = 13
    out[at + 1] = 10
    return at + 2


@_jit
def _put_key(
    out: Array,
    at: int,
    pieces: Array,
    piece_ends: Array,
    user: int,
    sub: int,
    mode: Array,
    history: bool,
) -> int:
    """A scope's key (or its history key), as a bulk string."""
    at = _put_bulk_header(
        out,
        at,
        _key_length(piece_ends, user, sub, len(mode))
        + (_piece_length(piece_ends, HISTORY_SUFFIX) if history else 0),
    )
    at = _put_piece(out, at, pieces, piece_ends, KEY_BEFORE_USER)
    at = put_decimal(out, at, user)
    at = _put_piece(out, at, pieces, piece_ends, KEY_BEFORE_SUB)
    at = put_decimal(out, at, sub)
    at = _put_piece(out, at, pieces, piece_ends, KEY_BEFORE_MODE)
    out[at : at + len(mode)] = mode
    at = _put_piece(out, at + len(mode), pieces, piece_ends, KEY_AFTER_MODE)
    if history:
        at = _put_piece(out, at, pieces, piece_ends, HISTORY_SUFFIX)
    return _put_crlf(out, at)


@_jit
def _put_user_key(
    out: Array, at: int, pieces: Array, piece_ends: Array, before: int, user: int
) -> int:
    """A learner's key (see :func:`_user_key_length`), as a bulk string."""
    at = _put_bulk_header(out, at, _user_key_length(piece_ends, before, user))
    at = _put_piece(out, at, pieces, piece_ends, before)
    at = put_decimal(out, at, user)
    at = _put_piece(out, at, pieces, piece_ends, before + 1)
    return _put_crlf(out, at)


@_jit
def _put_field(out: Array, at: int, pieces: Array, piece_ends: Array, sub: int, mode: Array) -> int:
    """A scope's field in its learner's stats hash, as a bulk string."""
    at = _put_bulk_header(out, at, _field_length(piece_ends, sub, len(mode)))
    at = _put_piece(out, at, pieces, piece_ends, FIELD_BEFORE_SUB)
    at = put_decimal(out, at, sub)
    at = _put_piece(out, at, pieces, piece_ends, FIELD_BEFORE_MODE)
    out[at : at + len(mode)] = mode
    at = _put_piece(out, at + len(mode), pieces, piece_ends, FIELD_AFTER_MODE)
    return _put_crlf(out, at)


@_jit
def _put_bulk(out: Array, at: int, data: Array, lo: int, hi: int) -> int:
    """``data[lo:hi]`` as a bulk string."""
    at = _put_bulk_header(out, at, hi - lo)
    out[at : at + hi - lo] = data[lo:hi]
    return _put_crlf(out, at + hi - lo)


@_jit
def create_commands(
    script: Array,
    pieces: Array,
    piece_ends: Array,
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
    stats: Array,
    stats_ends: Array,
    group: int,
) -> tuple[Array, int]:
    """``EVAL`` commands of the compare-and-set ``script`` (``store.stats_store``'s, whose
    arguments they follow) in Redis's wire protocol, one per ``group`` new scopes, all
    joined; and how many there are.

    Scope i (user ``user[i]``, sub-topic ``sub[i]``, the UTF-8 name
    ``mode_names[mode_ends[m]:mode_ends[m + 1]]`` of its mode ``m = mode[i]``) is written
    if it is not stored yet and its learner was never erased (the writer knows of no
    erasure: an erased learner's scopes go through the store's own writes): its key to
    ``values[value_ends[i]:value_ends[i + 1]]``, its history key (if the range is not
    empty) to ``histories[history_starts[i]:history_ends[i]]``, its field in its learner's
    stats hash to ``stats[stats_ends[i]:stats_ends[i + 1]]``. Keys and fields are built from
    the literal ``pieces[piece_ends[j]:piece_ends[j + 1]]`` (see :data:`PIECES`).
    """
    n = len(user)
    size = 0
    commands = 0
    for lo in range(0, n, group):
        hi = min(n, lo + group)
        size += 1 + decimal_size(3 + 11 * (hi - lo)) + 2 + _bulk_size(4) + _bulk_size(len(script))
        size += _bulk_size(decimal_size(4 * (hi - lo)))
        for i in range(lo, hi):
            m = mode[i]
            name = mode_ends[m + 1] - mode_ends[m]
            key = _key_length(piece_ends, user[i], sub[i], name)
            size += _bulk_size(key) + _bulk_size(key + _piece_length(piece_ends, HISTORY_SUFFIX))
            size += _bulk_size(_user_key_length(piece_ends, STATS_BEFORE_USER, user[i]))
            size += _bulk_size(_user_key_length(piece_ends, MARKER_BEFORE_USER, user[i]))
            size += 2 * _bulk_size(0) + _bulk_size(value_ends[i + 1] - value_ends[i])
            history = history_ends[i] - history_starts[i]
            size += _bulk_size(1 if history else 0) + _bulk_size(history)
            size += _bulk_size(_field_length(piece_ends, sub[i], name))
            size += _bulk_size(stats_ends[i + 1] - stats_ends[i])
        commands += 1
    out = np.empty(size, dtype=np.uint8)
    at = 0
    for lo in range(0, n, group):
        hi = min(n, lo + group)
        out[at] = 42  # *
        at = _put_crlf(out, put_decimal(out, at + 1, 3 + 11 * (hi - lo)))
        at = _put_bulk_header(out, at, 4)
        for c in b"EVAL\r\n":
            out[at] = c
            at += 1
        at = _put_bulk(out, at, script, 0, len(script))
        numkeys = 4 * (hi - lo)
        at = _put_bulk_header(out, at, decimal_size(numkeys))
        at = _put_crlf(out, put_decimal(out, at, numkeys))
        for i in range(lo, hi):
            m = mode[i]
            name = mode_names[mode_ends[m] : mode_ends[m + 1]]
            at = _put_key(out, at, pieces, piece_ends, user[i], sub[i], name, False)
            at = _put_key(out, at, pieces, piece_ends, user[i], sub[i], name, True)
            at = _put_user_key(out, at, pieces, piece_ends, STATS_BEFORE_USER, user[i])
            at = _put_user_key(out, at, pieces, piece_ends, MARKER_BEFORE_USER, user[i])
        for i in range(lo, hi):
            m = mode[i]
            name = mode_names[mode_ends[m] : mode_ends[m + 1]]
            at = _put_bulk(out, at, values, 0, 0)  # expected: not stored yet
            at = _put_bulk(out, at, values, value_ends[i], value_ends[i + 1])
            if history_ends[i] > history_starts[i]:
                at = _put_bulk_header(out, at, 1)
                out[at] = 114  # r: replace
                at = _put_crlf(out, at + 1)
            else:
                at = _put_bulk(out, at, values, 0, 0)
            at = _put_bulk(out, at, histories, history_starts[i], history_ends[i])
            at = _put_field(out, at, pieces, piece_ends, sub[i], name)
            at = _put_bulk(out, at, stats, stats_ends[i], stats_ends[i + 1])
            at = _put_bulk(out, at, values, 0, 0)  # no erasure known: none may have happened
    return out, commands


def compile_all() -> None:
    """Compile (and cache) the store's kernels for the types the backfill calls them with."""
    i64 = np.zeros(1, dtype=np.int64)
    u64 = np.zeros(1, dtype=np.uint64)
    no = np.zeros(1, dtype=np.bool_)
    two = np.array([0, 1], dtype=np.int64)
    byte = np.zeros(1, dtype=np.uint8)
    three = np.zeros((1, 3), dtype=np.int64)
    four = np.zeros(4, dtype=np.int64)
    # The tails' and stats' buffers are passed read-only (see store.bulk), as here.
    read_only_byte = np.frombuffer(bytes(1), dtype=np.uint8)
    read_only_two = np.frombuffer(two.tobytes(), dtype=np.int64)
    pack_scope_rows(
        i64, i64, i64, three, three, byte, four, byte, four, byte, two, byte, two, no,
        read_only_byte, read_only_two, u64, u64, i64, i64, three, u64, 1,
    )  # fmt: skip
    ends = np.zeros(PIECES + 1, dtype=np.int64)
    # The script, key pieces, mode names, values, histories and stats are views of bytes
    # (read-only).
    create_commands(
        read_only_byte, read_only_byte, ends, i64, i64, i64, read_only_byte, two,
        read_only_byte, two, read_only_byte, i64, i64, read_only_byte, two, 1,
    )  # fmt: skip


if __name__ == "__main__":
    compile_all()
