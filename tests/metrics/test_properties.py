"""Properties: incremental == the pandas batch oracle, in any order, with duplicates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from performance_engine.metrics.attempt import MAX_EPOCH_MS, Attempt
from performance_engine.metrics.batch import compute_states, compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import attempts_to_frame
from performance_engine.metrics.history import Entry, decode_entries
from performance_engine.metrics.params import ParameterSet
from performance_engine.metrics.state import ScopeState, decode_state, encode_state
from performance_engine.metrics.types import DifficultyEnum, PerformanceStatsData, ScopeKey
from tests.helpers import SPILL_LIMITS, StreamModel
from tests.strategies import attempts, parameter_sets


def incremental(
    calculator: MetricsCalculator, stream: list[Attempt]
) -> tuple[dict[ScopeKey, ScopeState], dict[ScopeKey, PerformanceStatsData]]:
    model = StreamModel(calculator).apply_each(stream)
    return model.states, model.stats()


@settings(max_examples=300, deadline=None)
@given(
    attempts(),
    st.randoms(use_true_random=False),
    st.sampled_from(SPILL_LIMITS),
    parameter_sets(),
)
def test_incremental_equals_batch_in_any_order(
    stream: list[Attempt], rng: object, limit: int, params: ParameterSet | None
) -> None:
    """With the modes' parameters or a fitted set (groups, question classes)."""
    calculator = MetricsCalculator(history_inline_limit=limit, parameters=params)
    shuffled = list(stream)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    model = StreamModel(calculator).apply_each(shuffled)
    batch = compute_states(attempts_to_frame(stream), calculator)
    assert dict(batch.items()) == model.states  # the very same state, byte for byte
    stored = {scope: h.data for scope, h in zip(batch.scopes, batch.histories, strict=True) if h}
    assert stored == model.blobs  # and the very same stored history
    assert compute_stats(attempts_to_frame(shuffled), calculator) == model.stats()


@settings(max_examples=100, deadline=None)
@given(attempts(), parameter_sets())
def test_applying_everything_twice_changes_nothing(
    stream: list[Attempt], params: ParameterSet | None
) -> None:
    calculator = MetricsCalculator(parameters=params)
    once, stats_once = incremental(calculator, stream)
    twice, stats_twice = incremental(calculator, stream + stream)
    assert (twice, stats_twice) == (once, stats_once)


@settings(max_examples=150, deadline=None)
@given(
    attempts(),
    st.integers(0, 60),
    st.randoms(use_true_random=False),
    st.sampled_from(SPILL_LIMITS),
    parameter_sets(),
)
def test_batch_merge_into_a_base_equals_one_pass(
    stream: list[Attempt], cut: int, rng: object, limit: int, params: ParameterSet | None
) -> None:
    """Backfilling history onto state the stream already holds gives the one-pass result,
    whichever part came first (older history after newer included)."""
    calculator = MetricsCalculator(history_inline_limit=limit, parameters=params)
    shuffled = list(stream)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    head = shuffled[: cut % (len(shuffled) + 1)]
    live = StreamModel(calculator).apply_each(head)

    def load(scopes: Sequence[ScopeKey]) -> list[list[Entry] | None]:
        return [live.history(scope) for scope in scopes]

    merged = compute_states(attempts_to_frame(stream), calculator, live.states, load_history=load)
    one_pass = compute_states(attempts_to_frame(stream), calculator)
    assert dict(merged.items()) == dict(one_pass.items())
    whole = {s: h.data for s, h in zip(one_pass.scopes, one_pass.histories, strict=True) if h}
    for scope, state, write in zip(merged.scopes, merged.states, merged.histories, strict=True):
        if not state.spilled:
            assert write is None
            continue
        kept = live.blobs.get(scope, b"") if write is None or not write.replace else b""
        history = kept + (write.data if write else b"")
        assert decode_entries(history, state.history) == decode_entries(whole[scope], state.history)


@settings(max_examples=100, deadline=None)
@given(attempts())
def test_state_encoding_round_trips(stream: list[Attempt]) -> None:
    states, _ = incremental(MetricsCalculator(), stream)
    for state in states.values():
        assert decode_state(encode_state(state)) == state


@settings(max_examples=100, deadline=None)
@given(attempts())
def test_stats_json_round_trips(stream: list[Attempt]) -> None:
    _, stats = incremental(MetricsCalculator(), stream)
    for record in stats.values():
        assert PerformanceStatsData.from_json(record.to_json()) == record


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=20), max_size=20), st.booleans())
def test_vectorised_fingerprints_equal_the_streams(ids: list[str], surrogate: bool) -> None:
    """Also for ids that are not valid UTF-8 (lone surrogates take the slow path)."""
    import pandas as pd

    from performance_engine.metrics.batch import fingerprints
    from performance_engine.metrics.state import fingerprint

    assert fingerprints(pd.Series(ids, dtype="str")).tolist() == [fingerprint(i) for i in ids]
    if surrogate:
        ids = [*ids, "a\ud800"]
    want = [fingerprint(i) for i in ids]
    assert fingerprints(ids).tolist() == want
    assert fingerprints(pd.Series(ids, dtype=object)).tolist() == want


def _reference_distinct(codes: list[int], fps: list[int]) -> list[tuple[int, int, int]]:
    """(scope, fingerprint, first row) of each distinct pair, sorted: the plain definition."""
    first: dict[tuple[int, int], int] = {}
    for row, pair in enumerate(zip(codes, fps, strict=True)):
        first.setdefault(pair, row)
    return sorted((c, f, row) for (c, f), row in first.items())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5),
            # Few fingerprints, near each other and at the ends of the uint64 range, so
            # that pairs repeat within a scope and sort by their low bits.
            st.sampled_from([0, 1, 2, 2**63, 2**63 + 1, 2**64 - 1, 12345 << 40]),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(6, 2**20),
)
def test_distinct_attempts_matches_its_definition(
    pairs: list[tuple[int, int]], n_scopes: int
) -> None:
    from performance_engine.metrics.batch import _distinct_attempts

    codes = np.array([c for c, _ in pairs], dtype=np.int64)
    fps = np.array([f for _, f in pairs], dtype=np.uint64)
    rows, sc, fp = _distinct_attempts(codes, fps, n_scopes)
    got = list(zip(sc.tolist(), fp.tolist(), rows.tolist(), strict=True))
    assert got == _reference_distinct(codes.tolist(), fps.tolist())


@settings(max_examples=300, deadline=None)
@given(attempts(), parameter_sets())
def test_columnar_stats_json_is_byte_equal_to_the_record(
    stream: list[Attempt], params: ParameterSet | None
) -> None:
    """The columnar stats writer and PerformanceStatsData.to_json agree exactly.

    Called directly: ``stats_json_many`` would take the per-scope path for fewer than
    COLUMNAR_MIN_SCOPES scopes, which these small streams have.
    """
    from performance_engine.metrics.columnar import builtin_stats_json

    calculator = MetricsCalculator(parameters=params)
    result = compute_states(attempts_to_frame(stream), calculator)
    expected = [calculator.stats(scope, state).to_json() for scope, state in result.items()]
    assert builtin_stats_json(result.scopes, result.states, calculator.model) == expected
    assert result.stats_json(calculator) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 40), min_size=3, max_size=3),  # attempts per difficulty
            st.lists(st.integers(0, 40), min_size=3, max_size=3),  # distinct questions
            st.lists(st.integers(0, 40), min_size=3, max_size=3),  # correct, solved
            st.sampled_from(["standard", "practice", "mastery", "tuned"]),
            st.one_of(st.none(), st.integers(0, 253_402_300_799_999)),
            st.one_of(
                st.none(),  # a format-1 state: no history, learning unknown
                st.tuples(
                    st.floats(0, 1),
                    st.floats(0, 1),
                    st.integers(0, 50),
                    st.integers(0, 50),
                    st.lists(st.integers(0, 40), min_size=3, max_size=3),
                ),
            ),
        ),
        min_size=1,
        max_size=30,
    )
)
@example(  # no attempt left (all voided), learning folded over nothing: the prior
    rows=[([0, 0, 0], [0, 0, 0], [0, 0, 0], "standard", None, (0.0, 0.0, 0, 0, [0, 0, 0]))]
)
def test_columnar_stats_json_on_arbitrary_counts(rows: list[Any]) -> None:
    """Ties, unattempted difficulties, every threshold, timestamp and learning value (also
    near the mastery and target thresholds, and unknown), byte for byte."""
    from performance_engine.metrics.columnar import builtin_stats_json
    from performance_engine.metrics.learning import LearningState
    from performance_engine.metrics.modes import LearningModes

    modes = LearningModes.default().merged(
        {"modes": {"tuned": {"required": 1, "guess": {"hard": 0.4}, "target_success": 0.5}}}
    )
    calculator = MetricsCalculator(learning_modes=modes)
    scopes, states = [], []
    for i, (tries, distinct, right, mode, at, learning) in enumerate(rows):
        questions = [min(q, a) if a else 0 for a, q in zip(tries, distinct, strict=True)]
        questions = [max(q, 1) if a else 0 for a, q in zip(tries, questions, strict=True)]
        correct = [min(c, a) for c, a in zip(right, tries, strict=True)]
        solved = [min(c, q) for c, q in zip(correct, questions, strict=True)]
        folded = None
        if learning is not None:
            p, e, current, longest, first = learning
            first = [min(f, q) for f, q in zip(first, questions, strict=True)]
            folded = LearningState(p, e, current, longest, (first[0], first[1], first[2]))
        states.append(
            ScopeState(
                version=sum(tries),
                first_at=at,
                last_at=at,
                attempts=list(tries),
                correct=correct,
                questions=[b"\0" * 8 * q for q in questions],
                solved=[b"\0" * 8 * s for s in solved],
                history=sum(tries) if learning is not None else 0,
                learning=folded,
                signature=calculator.signature(mode, 7),
            )
        )
        scopes.append(ScopeKey(i + 1, 7, mode))
    expected = [
        calculator.stats(s, state).to_json() for s, state in zip(scopes, states, strict=True)
    ]
    assert builtin_stats_json(scopes, states, calculator.model) == expected


def test_columnar_learning_blocks_on_a_hash_collision(monkeypatch: Any) -> None:
    """Rows that share a hash but differ are told apart (every row stands alone)."""
    from performance_engine.metrics import columnar

    calculator = MetricsCalculator()
    stream = [
        Attempt(
            attempt_id=f"a{i}",
            user_id=1 + i % 7,
            sub_topic_id=1,
            learning_mode="standard",
            question_id=1 + i % 3,
            difficulty=DifficultyEnum.EASY,
            is_correct=i % 2 == 0,
            occurred_at=1_000 * i,
        )
        for i in range(60)
    ]
    result = compute_states(attempts_to_frame(stream), calculator)
    expected = [calculator.stats(scope, state).to_json() for scope, state in result.items()]
    monkeypatch.setattr(columnar, "_MIX", np.uint64(0))  # the hash: the last column only
    got = columnar.builtin_stats_json(result.scopes, result.states, calculator.model)
    assert got == expected


def test_packing_gives_way_to_custom_metrics() -> None:
    """With a custom metric registered the new scopes take the per-scope path."""
    from performance_engine.metrics.batch import compute_parts
    from tests.example_metrics import TimeSpent

    calculator = MetricsCalculator()
    attempt = Attempt(
        attempt_id="a",
        user_id=1,
        sub_topic_id=2,
        learning_mode="practice",
        question_id=7,
        difficulty=DifficultyEnum.EASY,
        is_correct=True,
        occurred_at=1_700_000_000_000,
    )
    stream = [attempt]
    fresh, _ = compute_parts(attempts_to_frame(stream), calculator)
    assert fresh.packable(calculator)
    calculator.register_metrics([TimeSpent()])
    fresh, _ = compute_parts(attempts_to_frame(stream), calculator)
    assert not fresh.packable(calculator)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.integers(0, MAX_EPOCH_MS) | st.sampled_from([0, 951_782_400_000, MAX_EPOCH_MS]),
        min_size=1,
        max_size=20,
    )
)
def test_the_compiled_timestamps_read_as_the_records(stamps: list[int]) -> None:
    """The compiled stats writer's timestamps, 1970 to the end of 9999 (leap days,
    centuries), are the record's, and an unknown one is null."""
    from performance_engine.metrics.builtin import format_timestamp
    from performance_engine.metrics.columnar import TIMESTAMP
    from performance_engine.metrics.kernels import fill_templates

    pieces = np.frombuffer(b"[,]", dtype=np.uint8)
    ends = np.array([0, 1, 2, 3], dtype=np.int64)
    kinds = np.array([TIMESTAMP, TIMESTAMP], dtype=np.int64)
    rows = np.array([[stamp, -1] for stamp in stamps], dtype=np.int64)
    out, row_ends = fill_templates(
        pieces, ends, kinds, rows, np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64)
    )
    data = out.tobytes()
    got = [json.loads(data[a:b]) for a, b in pairwise(row_ends.tolist())]
    assert got == [[format_timestamp(stamp), None] for stamp in stamps]
