"""The stored value of a scope: one owner for its bytes.

``{prefix}:{u<user_id>}:<sub_topic_id>:<learning_mode>`` (see :mod:`.keyspace`) holds::

    bytes 0-7     revision: how many times the stored stats changed (unsigned, big-endian;
                  the compare-and-set compares it; values written before revisions
                  existed hold their version here, which then counts as their revision)
    bytes 8-11    n, the length of the state (unsigned, big-endian)
    next n bytes  rolling state (msgpack of ``metrics.state.ScopeState``, format 3)
    the rest      latest PerformanceStatsData as JSON (SPEC 4)

:func:`pack_scope` is the reference writer; the backfill's compiled writer
(:mod:`.bulk`) checks its field order against ``ScopeState`` when it is imported and is
held byte-equal to :func:`pack_scope` by ``tests/store/test_formats.py``.
"""

from __future__ import annotations

import struct

from performance_engine.metrics.state import ScopeState, decode_state, encode_state

__all__ = [
    "HEADER",
    "expected_header",
    "pack_scope",
    "revision_of",
    "stats_of",
    "unpack_scope",
]

#: The value's header: revision, length of the state.
HEADER = struct.Struct(">QI")


def pack_scope(state: ScopeState, stats_json: bytes) -> bytes:
    """A scope's stored value: revision and state length, the state, then the stats JSON."""
    encoded = encode_state(state)
    return HEADER.pack(state.revision, len(encoded)) + encoded + stats_json


def unpack_scope(value: bytes) -> tuple[ScopeState, bytes]:
    """The state and the stats JSON of a stored value. A state written before revisions
    existed takes its header's number (its version then) as its revision."""
    revision, length = HEADER.unpack_from(value)
    start = HEADER.size
    state = decode_state(value[start : start + length])
    if not state.revision:
        state.revision = revision
    return state, value[start + length :]


def stats_of(value: bytes) -> bytes:
    """Only the stats JSON of a stored value (the state is not decoded)."""
    _revision, length = HEADER.unpack_from(value)
    return value[HEADER.size + length :]


def revision_of(value: bytes) -> int:
    """A stored value's revision, from its header alone."""
    revision: int = HEADER.unpack_from(value)[0]
    return revision


def expected_header(revision: int) -> bytes:
    """What a compare-and-set expects to find in bytes 0-7 (empty: no value yet)."""
    return revision.to_bytes(8, "big") if revision else b""
