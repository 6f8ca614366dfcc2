"""The backfill's bulk writes of new scopes: their stored values and the compare-and-set
commands that create them, packed from the batch path's arrays, without an object per scope.

The bytes are written by compiled loops (:mod:`.kernels`) and are those of the reference
writers: ``store.layout.pack_scope`` for a value, ``KeySpace`` for the keys and fields,
the store's own write plan for the commands (``tests/store/test_formats.py``). numpy is
imported here and by the backfill only: the worker and the read API do without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from performance_engine.metrics.batch import FreshScopes
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.types import ScopeKey
from performance_engine.store.kernels import PIECES, create_commands, pack_scope_rows
from performance_engine.store.keyspace import KeySpace

__all__ = ["FIRST_REVISION", "PackedScopes", "create_payload", "key_pieces", "pack_fresh"]

_U8 = np.dtype("<u8")


@dataclass(frozen=True, slots=True)
class PackedScopes:
    """New scopes' stored values, packed: scope i (``versions[i]`` attempts)'s value
    (``store.layout.pack_scope``) is ``values[value_ends[i]:value_ends[i + 1]]``
    (``value_ends[0]`` is 0); its history,
    when it has a key of its own, ``histories[history_starts[i]:history_ends[i]]`` (an
    empty range: none); its stats JSON ``stats[stats_ends[i]:stats_ends[i + 1]]``."""

    scopes: list[ScopeKey]
    versions: list[int]
    values: bytes
    value_ends: list[int]
    histories: bytes
    history_starts: list[int]
    history_ends: list[int]
    stats: bytes
    stats_ends: list[int]


#: The revision of a scope's first stored value.
FIRST_REVISION = 1


def pack_fresh(fresh: FreshScopes, calculator: MetricsCalculator, lo: int, hi: int) -> PackedScopes:
    """The stored values and histories of new scopes ``lo:hi``, written from the batch
    path's arrays (only where ``fresh.packable(calculator)``), at their first revision."""
    stats, stats_ends = fresh.stats_buffer(calculator, lo, hi, FIRST_REVISION)
    tails = fresh.tails
    tail_ends = np.frombuffer(tails.buffers()[1], dtype=np.int64)[tails.offset :]
    learning = fresh.learning
    history_ends = fresh.history_ends[lo : hi + 1]
    spilled = fresh.spilled[lo:hi]
    values, value_ends = pack_scope_rows(
        fresh.versions[lo:hi],
        fresh.first_at[lo:hi],
        fresh.last_at[lo:hi],
        fresh.attempts[lo:hi],
        fresh.correct[lo:hi],
        _bytes_of(fresh.questions),
        fresh.question_ends[3 * lo : 3 * hi + 1] * 8,
        _bytes_of(fresh.solved),
        fresh.solved_ends[3 * lo : 3 * hi + 1] * 8,
        _bytes_of(fresh.seen),
        fresh.seen_ends[lo : hi + 1],
        fresh.history,
        history_ends,
        spilled,
        _read_only(np.frombuffer(tails.buffers()[2] or b"", dtype=np.uint8)),
        _read_only(tail_ends[lo : hi + 1]),
        learning.logit[lo:hi].view(np.uint64),
        learning.e[lo:hi].view(np.uint64),
        learning.current[lo:hi],
        learning.longest[lo:hi],
        learning.first_correct[lo:hi],
        np.array(fresh.signatures, dtype=np.uint64)[fresh.scope_groups[lo:hi]],
        FIRST_REVISION,
    )
    base = int(history_ends[0])
    starts = history_ends[:-1] - base
    return PackedScopes(
        fresh.scopes[lo:hi],
        fresh.versions[lo:hi].tolist(),
        values.tobytes(),
        value_ends.tolist(),
        fresh.history[base : int(history_ends[-1])].tobytes(),
        starts.tolist(),
        np.where(spilled, history_ends[1:] - base, starts).tolist(),
        stats.tobytes(),
        stats_ends.tolist(),
    )


def key_pieces(keys: KeySpace) -> list[bytes]:
    """The literal pieces of a scope's key, its history key's suffix, its learner's stats
    hash's key, its field there and its learner's erasure marker's key, in the order
    ``store.kernels.PIECES`` names them."""
    before, between, after = keys.stats_field("\x00s\x00", "\x00m\x00").encode().split(b"\x00")[::2]
    pieces = [
        *keys.scope_pieces(),
        *keys.stats_pieces(),
        before,
        between,
        after,
        *keys.erased_pieces(),
    ]
    if len(pieces) != PIECES:
        raise AssertionError(f"store.kernels writes {PIECES} pieces, KeySpace gives {len(pieces)}")
    return pieces


def create_payload(
    keys: KeySpace, packed: PackedScopes, script: str, group: int
) -> tuple[bytes, int]:
    """Packed new scopes as calls of the compare-and-set ``script`` (each creating
    ``group`` scopes) in Redis's wire protocol; and how many calls."""
    scopes = packed.scopes
    n = len(scopes)
    names = sorted({scope.learning_mode for scope in scopes})
    code = {name: i for i, name in enumerate(names)}
    encoded = [name.encode() for name in names]
    pieces = key_pieces(keys)
    out, count = create_commands(
        np.frombuffer(script.encode(), dtype=np.uint8),
        np.frombuffer(b"".join(pieces), dtype=np.uint8),
        np.cumsum([0, *map(len, pieces)], dtype=np.int64),
        np.fromiter((scope.user_id for scope in scopes), np.int64, n),
        np.fromiter((scope.sub_topic_id for scope in scopes), np.int64, n),
        np.fromiter((code[scope.learning_mode] for scope in scopes), np.int64, n),
        np.frombuffer(b"".join(encoded), dtype=np.uint8),
        np.cumsum([0, *map(len, encoded)], dtype=np.int64),
        np.frombuffer(packed.values, dtype=np.uint8),
        np.array(packed.value_ends, dtype=np.int64),
        np.frombuffer(packed.histories, dtype=np.uint8),
        np.array(packed.history_starts, dtype=np.int64),
        np.array(packed.history_ends, dtype=np.int64),
        np.frombuffer(packed.stats, dtype=np.uint8),
        np.array(packed.stats_ends, dtype=np.int64),
        group,
    )
    return out.tobytes(), count


def _read_only(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A read-only view: buffers from Arrow or ``bytes`` may be either, and the compiled
    kernel is compiled (and cached) for one kind."""
    view = array.view()
    view.flags.writeable = False
    return view


def _bytes_of(values: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The little-endian bytes of packed uint64 values, as a uint8 array (no copy)."""
    return np.ascontiguousarray(values, dtype=_U8).view(np.uint8)
