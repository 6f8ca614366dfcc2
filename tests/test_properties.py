"""Properties: incremental == the pandas batch oracle, in any order, with duplicates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.batch import compute_states, compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.loader import attempts_to_frame
from performance_engine.metrics.state import ScopeState, decode_state, encode_state
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey
from tests.strategies import attempts


def incremental(
    calculator: MetricsCalculator, stream: list[Attempt]
) -> tuple[dict[ScopeKey, ScopeState], dict[ScopeKey, PerformanceStatsData]]:
    states: dict[ScopeKey, ScopeState] = {}
    for a in stream:
        state = states.get(a.scope)
        if state is None:
            state = states[a.scope] = calculator.new_state()
        calculator.apply(state, a)
    return states, {scope: calculator.stats(scope, s) for scope, s in states.items()}


@settings(max_examples=300, deadline=None)
@given(attempts(), st.randoms(use_true_random=False))
def test_incremental_equals_batch_in_any_order(stream: list[Attempt], rng: object) -> None:
    calculator = MetricsCalculator()
    shuffled = list(stream)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    states, stats = incremental(calculator, shuffled)
    batch = compute_states(attempts_to_frame(stream), calculator)
    assert dict(batch.items()) == states  # the very same state, byte for byte
    assert compute_stats(attempts_to_frame(shuffled), calculator) == stats


@settings(max_examples=100, deadline=None)
@given(attempts())
def test_applying_everything_twice_changes_nothing(stream: list[Attempt]) -> None:
    calculator = MetricsCalculator()
    once, stats_once = incremental(calculator, stream)
    twice, stats_twice = incremental(calculator, stream + stream)
    assert (twice, stats_twice) == (once, stats_once)


@settings(max_examples=100, deadline=None)
@given(attempts(), st.integers(0, 60))
def test_batch_merge_into_a_base_equals_one_pass(stream: list[Attempt], cut: int) -> None:
    """Backfilling history onto state the stream already holds gives the one-pass result."""
    calculator = MetricsCalculator()
    head = stream[: cut % (len(stream) + 1)]
    base = dict(compute_states(attempts_to_frame(head), calculator).items()) if head else {}
    merged = compute_states(attempts_to_frame(stream), calculator, base)
    assert dict(merged.items()) == dict(
        compute_states(attempts_to_frame(stream), calculator).items()
    )


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
