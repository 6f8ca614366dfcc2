"""The tests' oracle and the engine's batch path agree: two independent computations of
SPEC 3 (the oracle shares no code with the calculator), on the same random attempts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.batch import compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import attempts_to_frame
from performance_engine.metrics.params import ParameterSet
from tests.example_metrics import LatestTimes, MostTriedQuestion, TimeSpent, WrongInARow
from tests.helpers import attempts_frame_of
from tests.oracle import oracle_stats
from tests.strategies import attempts, parameter_sets


@pytest.mark.timeout(120)  # hundreds of generated cases; slower on a loaded box
@settings(max_examples=100, deadline=None)
@given(attempts(), st.booleans(), parameter_sets())
def test_the_oracle_agrees_with_the_batch_path(
    stream: list[Attempt], custom: bool, params: ParameterSet | None
) -> None:
    """With the modes' parameters or a fitted set (the oracle reads the set's groups and
    classes itself, and folds mastery in exact arithmetic)."""
    calculator = MetricsCalculator(parameters=params)
    if custom:
        calculator.register_metrics(
            [TimeSpent(), WrongInARow(), MostTriedQuestion(), LatestTimes()]
        )
    expected = oracle_stats(attempts_frame_of(stream), calculator)
    assert compute_stats(attempts_to_frame(stream), calculator) == expected
