"""The stored value of a scope: one owner for its bytes.

``{prefix}:{u<user_id>}:<sub_topic_id>:<learning_mode>`` (see :mod:`.keyspace`) holds::

    bytes 0-7     revision: how many times the stored stats changed (unsigned, big-endian;
                  the compare-and-set compares it; values written before revisions
                  existed hold their version here, which then counts as their revision)
    bytes 8-11    n, the length of the state (unsigned, big-endian)
    next n bytes  rolling state (msgpack of ``metrics.state.ScopeState``, format 3)

The scope's stats JSON lives in its learner's stats hash (``KeySpace.stats``), written in
the same compare-and-set. Layout 1 (releases before the stats hash) appended the stats
JSON to this value; such a value still decodes (the tail is ignored, :func:`legacy_stats`
reads it) and ``perf-engine upgrade-store`` moves the tails into the stats hashes.

:func:`pack_scope` is the reference writer; the backfill's compiled writer
(:mod:`.bulk`) checks its field order against ``ScopeState`` when it is imported and is
held byte-equal to :func:`pack_scope` by ``tests/store/test_formats.py``.
"""

from __future__ import annotations

import struct

from performance_engine.metrics.state import ScopeState, decode_state, encode_state

__all__ = [
    "HEADER",
    "LAYOUT_VERSION",
    "expected_header",
    "legacy_stats",
    "pack_scope",
    "revision_of",
    "unpack_scope",
]

#: The version of the Redis layout (docs/redis-layout.md): 2 since the stats hashes.
LAYOUT_VERSION = 2

#: The value's header: revision, length of the state.
HEADER = struct.Struct(">QI")


def pack_scope(state: ScopeState) -> bytes:
    """A scope's stored value: revision and state length, then the state."""
    encoded = encode_state(state)
    return HEADER.pack(state.revision, len(encoded)) + encoded


def unpack_scope(value: bytes) -> ScopeState:
    """The state of a stored value. A state written before revisions existed takes its
    header's number (its version then) as its revision."""
    revision, length = HEADER.unpack_from(value)
    start = HEADER.size
    state = decode_state(value[start : start + length])
    if not state.revision:
        state.revision = revision
    return state


def legacy_stats(value: bytes) -> bytes:
    """The stats JSON a layout-1 value carries after its state (empty in layout 2)."""
    _revision, length = HEADER.unpack_from(value)
    return value[HEADER.size + length :]


def revision_of(value: bytes) -> int:
    """A stored value's revision, from its header alone."""
    revision: int = HEADER.unpack_from(value)[0]
    return revision


def expected_header(revision: int) -> bytes:
    """What a compare-and-set expects to find in bytes 0-7 (empty: no value yet)."""
    return revision.to_bytes(8, "big") if revision else b""
