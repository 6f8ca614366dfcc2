"""Custom metrics registered the seed's way appear in custom_metrics in both paths."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.errors import ConfigurationError
from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.batch import compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import attempts_to_frame
from performance_engine.metrics.types import PerformanceStatsData, ScopeKey
from performance_engine.plugins import build_calculator
from performance_engine.settings import Settings
from tests.example_metrics import LatestTimes, MostTriedQuestion, TimeSpent
from tests.helpers import SPILL_LIMITS, StreamModel, attempt
from tests.strategies import attempts


def calculator(**options: Any) -> MetricsCalculator:
    calc = MetricsCalculator(**options)
    calc.register_metrics([MostTriedQuestion(), TimeSpent()])
    return calc


def stream(calc: MetricsCalculator, items: list[Attempt]) -> dict[ScopeKey, PerformanceStatsData]:
    return StreamModel(calc).apply_each(items).stats()


def test_both_metrics_in_both_paths() -> None:
    items = [
        attempt(question_id=1, time_spent_ms=1000),
        attempt(question_id=2, time_spent_ms=500),
        attempt(question_id=2),
        attempt(question_id=9, difficulty="hard", time_spent_ms=20),
    ]
    calc = calculator()
    expected = {
        "most_tried_question": {"easy": 2, "hard": 9},
        "time_spent": {"total_ms": 1520, "reported": 3},
    }
    (incremental,) = stream(calc, items).values()
    (batch,) = compute_stats(attempts_to_frame(items), calc).values()
    assert incremental.custom_metrics == expected
    assert batch == incremental


@settings(max_examples=60, deadline=None)
@given(attempts(max_size=30), st.sampled_from(SPILL_LIMITS))
def test_custom_metrics_agree_between_paths(items: list[Attempt], limit: int) -> None:
    # a small log: both paths give frame metrics the same 5 latest
    calc = calculator(attempt_log_limit=5, history_inline_limit=limit)
    assert compute_stats(attempts_to_frame(items), calc) == stream(calc, list(reversed(items)))


T0 = 1_795_510_800_000  # 2026-11-24T09:00:00Z


def test_frame_metrics_see_the_latest_attempts_in_learning_order() -> None:
    calc = MetricsCalculator(attempt_log_limit=3)
    calc.register_metrics([LatestTimes()])
    items = [attempt(occurred_at=T0 + 1_000 * second) for second in (5, 1, 4, 2, 3)]
    (stats,) = stream(calc, items).values()
    assert stats.custom_metrics == {"latest_times": [T0 + 3000, T0 + 4000, T0 + 5000]}


def test_only_frame_metrics_read_a_history_kept_in_its_own_key_at_every_write() -> None:
    items = [attempt(occurred_at=T0 + 1_000 * second) for second in range(1, 6)]
    framed = calculator(history_inline_limit=0)  # a frame-based metric among them
    plain = MetricsCalculator(history_inline_limit=0)
    plain.register_metrics([TimeSpent()])
    assert StreamModel(framed).apply_each(items).history_reads == 4  # not for the first
    assert StreamModel(plain).apply_each(items).history_reads == 0
    inline = calculator()  # small histories are kept in the state: nothing to read
    assert StreamModel(inline).apply_each(items).history_reads == 0


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([object()], "not a BaseMetric"),
        ([TimeSpent(), TimeSpent()], "already registered"),
        ([type("Nameless", (TimeSpent,), {"name": ""})()], "non-empty"),
    ],
)
def test_registration_errors(metrics: list[Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MetricsCalculator().register_metrics(metrics)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.example_metrics", "package.module:ClassName"),
        ("tests.nowhere:Metric", "cannot import"),
        ("tests.example_metrics:Missing", "has no Missing"),
        ("tests.example_metrics:NeedsArguments", "failed to instantiate"),
        ("tests.helpers:raw", "not a BaseMetric"),
    ],
)
def test_metric_paths_are_checked(path: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build_calculator(Settings(metrics=(path,)))


def test_settings_name_the_metrics() -> None:
    calc = build_calculator(
        Settings(
            metrics=("tests.example_metrics:TimeSpent", "tests.example_metrics:MostTriedQuestion")
        )
    )
    assert sorted(calc.metrics) == ["most_tried_question", "time_spent"]


@pytest.mark.timeout(120)  # hundreds of generated cases; slower on a loaded box
@settings(max_examples=100, deadline=None)
@given(attempts(), st.sampled_from(SPILL_LIMITS))
def test_custom_metrics_ride_the_columnar_stats_path(items: list[Attempt], limit: int) -> None:
    """Many scopes' stats with custom metrics of every kind registered: the columnar path
    writes the same bytes as the per-scope records."""
    from performance_engine.metrics import calculator as calculator_module
    from performance_engine.metrics.batch import compute_states
    from performance_engine.metrics.history import decode_entries
    from tests.example_metrics import WrongInARow

    calc = MetricsCalculator(history_inline_limit=limit)
    calc.register_metrics([MostTriedQuestion(), TimeSpent(), WrongInARow(), LatestTimes()])
    result = compute_states(attempts_to_frame(items), calc)
    histories = [state.inline_entries() if not state.spilled else None for state in result.states]
    spilled = [i for i, state in enumerate(result.states) if state.spilled]
    for i in spilled:  # a spilled history is what the backfill wrote for it
        write = result.histories[i]
        assert write is not None
        histories[i] = decode_entries(write.data, result.states[i].history)
    expected = [
        calc.stats(scope, state, history).to_json()
        for scope, state, history in zip(result.scopes, result.states, histories, strict=True)
    ]
    minimum = calculator_module.COLUMNAR_MIN_SCOPES
    calculator_module.COLUMNAR_MIN_SCOPES = 1  # every batch takes the columnar path
    try:
        got = calc.stats_json_many(result.scopes, result.states, histories)
    finally:
        calculator_module.COLUMNAR_MIN_SCOPES = minimum
    assert got == expected
    assert all(b'"custom_metrics":{}' not in js for js in got)
