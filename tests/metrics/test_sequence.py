"""The batch path's numpy twins (metrics.sequence) against their references."""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import pairwise
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.metrics.attempt import MAX_EPOCH_MS
from performance_engine.metrics.columnar import _written
from performance_engine.metrics.history import Entry, decode_entries, encode_entries
from performance_engine.metrics.learning import LearningParams, fold_learning
from performance_engine.metrics.sequence import (
    encode_history_buffer,
    fold_learning_columns,
    learning_order,
)

MAX_ID = 2**63 - 1
_entry = st.tuples(
    st.integers(0, MAX_EPOCH_MS),
    st.text(min_size=1, max_size=128),
    st.integers(1, MAX_ID) | st.integers(1, 300),
    st.integers(0, 2),
    st.booleans(),
    st.none() | st.integers(1, MAX_ID) | st.integers(1, 70_000),
    st.none() | st.integers(0, MAX_ID) | st.integers(0, 70_000),
)


def _columns(scopes: list[list[Entry]]) -> dict[str, Any]:
    rows = [entry for scope in scopes for entry in scope]
    offsets = np.cumsum([0, *map(len, scopes)]).astype(np.int64)
    number = [e[5] for e in rows]
    spent = [e[6] for e in rows]
    return {
        "offsets": offsets,
        "occurred": np.array([e[0] for e in rows], dtype=np.int64),
        "ids": pa.array([e[1] for e in rows], type=pa.large_string()),
        "question": np.array([e[2] for e in rows], dtype=np.int64),
        "difficulty": np.array([e[3] for e in rows], dtype=np.int64),
        "correct": np.array([e[4] for e in rows], dtype=bool),
        "number": np.array([0 if v is None else v for v in number], dtype=np.int64),
        "number_missing": np.array([v is None for v in number], dtype=bool),
        "spent": np.array([0 if v is None else v for v in spent], dtype=np.int64),
        "spent_missing": np.array([v is None for v in spent], dtype=bool),
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_entry, min_size=1, max_size=12), min_size=1, max_size=8))
def test_history_columns_encode_like_the_entries(scopes: list[list[Entry]]) -> None:
    """Every msgpack form: fixint to uint64, fixstr/str8/str16 ids (multi-byte UTF-8), nil."""
    c = _columns(scopes)
    buffer, ends = encode_history_buffer(
        c["offsets"],
        c["occurred"],
        c["ids"],
        c["question"],
        c["difficulty"],
        c["correct"],
        c["number"],
        c["number_missing"],
        c["spent"],
        c["spent_missing"],
    )
    data = buffer.tobytes()
    got = [data[a:b] for a, b in pairwise(ends.tolist())]
    assert got == [encode_entries(scope) for scope in scopes]
    assert [decode_entries(blob, len(scope)) for blob, scope in zip(got, scopes, strict=True)] == [
        sorted(scope, key=lambda e: (e[0], e[1])) for scope in scopes
    ]


_params = st.builds(
    LearningParams,
    prior=st.floats(0, 1),
    learn=st.floats(0, 1),
    forget=st.floats(0, 1),
    guess=st.tuples(*[st.floats(0.01, 0.49)] * 3),
    slip=st.tuples(*[st.floats(0.01, 0.49)] * 3),
    ewma_alpha=st.floats(0, 1),
    ewma_prior=st.floats(0, 1),
)
_answer = st.tuples(st.integers(1, 6), st.integers(0, 2), st.booleans())  # question, d, c


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(_answer, min_size=1, max_size=20), min_size=1, max_size=12),
    st.lists(_params, min_size=1, max_size=3),
    st.data(),
    st.integers(0, 200),
)
def test_learning_columns_fold_like_the_reference(
    scopes: list[list[tuple[int, int, bool]]],
    params: list[LearningParams],
    data: st.DataObject,
    long_tail: int,
) -> None:
    """Float for float, for mixed parameters and for a scope long enough that the last
    steps run one scope at a time."""
    scopes = [*scopes, [(1 + i % 5, i % 3, i % 4 != 0) for i in range(long_tail)] or [(1, 0, True)]]
    which = [data.draw(st.integers(0, len(params) - 1)) for _ in scopes]
    # Some questions with a fitted class of their own (SPEC 3.3).
    classes = data.draw(st.dictionaries(st.integers(0, 5), st.integers(0, 2), max_size=4))
    entries: list[list[Entry]] = [
        [(i, "x", q, d, c, None, None) for i, (q, d, c) in enumerate(scope)] for scope in scopes
    ]
    c = _columns(entries)
    got = fold_learning_columns(
        c["offsets"],
        c["difficulty"],
        c["correct"],
        c["question"],
        params,
        np.array(which, dtype=np.int64),
        np.array([classes.get(q, d) for q, d in zip(c["question"], c["difficulty"], strict=True)]),
    ).states()
    assert got == [
        fold_learning(scope, params[w], classes) for scope, w in zip(entries, which, strict=True)
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 4),
            st.integers(0, 3) | st.integers(0, MAX_EPOCH_MS),
            st.text(min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=40,
        unique_by=lambda row: (row[0], row[2]),
    )
)
def test_learning_order_sorts_by_scope_time_and_id_bytes(
    rows: list[tuple[int, int, str]],
) -> None:
    scope = np.array([r[0] for r in rows], dtype=np.int64)
    occurred = np.array([r[1] for r in rows], dtype=np.int64)
    ids = pa.array([r[2] for r in rows], type=pa.large_string())
    order = learning_order(scope, occurred, ids).tolist()
    want = sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1], rows[i][2].encode()))
    assert order == want


_halves = st.integers(0, 10**6).map(lambda k: (k + 0.5) / 1e4)  # ties in decimal, near in binary


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(0, 1),
            st.floats(allow_nan=False, allow_infinity=False),
            _halves,
            st.just(-0.0),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_vectorised_rounding_writes_what_round_writes(values: list[float]) -> None:
    """The columnar stats round many floats at once; each must read as ``round(v, 4)``."""
    got = _written(np.array(values, dtype=np.float64))
    assert got == [msgspec.json.encode(round(v, 4)) for v in values]


_BATCH_PATH = """
from performance_engine.metrics.batch import compute_states
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import normalise_frame
from performance_engine.tools.simulator import attempts_frame

calculator = MetricsCalculator()
frame = normalise_frame(attempts_frame(400, 20), calculator.learning_modes).frame
first = compute_states(frame.iloc[:200], calculator)
compute_states(frame, calculator, dict(first.items()), load_history=lambda s: [[]] * len(s))

from performance_engine.metrics.batch import compute_parts
from performance_engine.store.bulk import create_payload, pack_fresh
from performance_engine.store.keyspace import KeySpace

fresh, _ = compute_parts(frame, calculator)
from performance_engine.store.stats_store import WRITE_SCOPES_LUA

packed = pack_fresh(fresh, calculator, 0, len(fresh))
create_payload(KeySpace("pe"), packed, WRITE_SCOPES_LUA, 256)
"""


@pytest.mark.slow
@pytest.mark.timeout(120)  # compiles every kernel in a fresh interpreter
def test_every_kernel_compiles_ahead_for_the_types_the_batch_path_uses(tmp_path: Any) -> None:
    """What the Dockerfile runs: a fresh interpreter with an empty cache compiles each
    kernel and caches it; the batch path (new scopes and a merge, and the backfill's
    packing of new scopes and their commands) then only loads them."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_DEBUG_CACHE": "1"}

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    compiled = run("-m", "performance_engine.metrics.kernels")
    compiled += run("-m", "performance_engine.store.kernels")
    assert "data saved" in compiled
    cached = {path.name.split(".")[1].split("-")[0] for path in tmp_path.rglob("*.nbi")}
    assert {
        "distinct_attempts",
        "unseen",
        "fold_learning_scopes",
        "encode_history_rows",
        "fill_templates",
        "pack_scope_rows",
        "create_commands",
    } <= cached
    used = run("-c", _BATCH_PATH)
    assert "data loaded" in used
    assert "data saved" not in used
