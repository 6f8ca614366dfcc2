"""Learning parameters published to Redis: publish, withdraw, and a follower that takes
a new set, keeps the one in use when the published one cannot be read, and falls back to
the file's set when it is withdrawn."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.params import FittedGroup, ParameterSet
from performance_engine.settings import Settings
from performance_engine.store.params import (
    ParamsFollower,
    publish_params,
    published_params,
    withdraw_params,
)
from performance_engine.store.stats_store import StatsStore

pytestmark = pytest.mark.redis


def a_set(prior: float) -> ParameterSet:
    group = FittedGroup(
        "standard", 7, prior, 0.1, 0.0, (0.2, 0.2, 0.2), (0.1, 0.1, 0.1), 60, 700, -1.0
    )
    return ParameterSet({("standard", 7): group})


def test_publish_follow_refuse_and_withdraw(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from_file, first, second = a_set(0.1), a_set(0.3), a_set(0.5)
    calculator = MetricsCalculator()
    with StatsStore.from_settings(settings) as store:
        follower = ParamsFollower(calculator, store.keys, from_file)
        follower.refresh_sync(store)
        assert calculator.parameters is from_file  # nothing published: the file's
        assert published_params(store) is None

        assert publish_params(store, first) == first.version
        assert published_params(store) == first
        follower.refresh_sync(store)
        assert calculator.parameters == first

        # A published set that cannot be read is refused; the one in use stays.
        store.client.set(store.keys.learning_params(), b'{"format": 1, "groups": [{}]}')
        store.client.set(store.keys.learning_params_version(), b"p-hand-edited")
        with caplog.at_level(logging.ERROR, logger="performance_engine.store.params"):
            follower.refresh_sync(store)
        assert calculator.parameters == first
        assert "the parameter set published to Redis" in caplog.text
        assert "the parameters in use stay" in caplog.text

        publish_params(store, second)
        follower.refresh_sync(store)
        assert calculator.parameters == second

        assert withdraw_params(store) is True
        follower.refresh_sync(store)
        assert calculator.parameters is from_file
        assert withdraw_params(store) is False


def test_a_new_set_changes_the_signature_so_stored_scopes_are_refolded() -> None:
    calculator = MetricsCalculator()
    before = calculator.signature("standard", 7)
    calculator.use_parameters(a_set(0.3))
    fitted = calculator.signature("standard", 7)
    assert fitted != before
    assert calculator.signature("standard", 8) == before  # not fitted, no question classes
    calculator.use_parameters(None)
    assert calculator.signature("standard", 7) == before


def test_a_backfill_uses_the_published_set(settings: Settings) -> None:
    from performance_engine.metrics.frame import normalise_frame
    from performance_engine.metrics.modes import LearningModes
    from performance_engine.tools.backfill import backfill_frame
    from tests.helpers import attempts_frame_of, oracle, results, spec_attempts

    published = a_set(0.3)
    attempts = spec_attempts()  # user 123, sub-topic 456
    fitted = ParameterSet(
        {("standard", 456): dataclasses.replace(published.groups["standard", 7], sub_topic_id=456)}
    )
    with StatsStore.from_settings(settings) as store:
        publish_params(store, fitted)
        frame = normalise_frame(attempts_frame_of(attempts), LearningModes.default()).frame
        backfill_frame(frame, store, MetricsCalculator())
        expected = oracle([a.to_mapping() for a in attempts], MetricsCalculator(parameters=fitted))
        found = results({s: store.stats(s) for s in expected})
    assert found == expected
    assert {s.learning.params_version for s in found.values()} == {fitted.version}


def test_a_prediction_refolds_a_scope_stored_with_other_parameters(settings: Settings) -> None:
    """The scope's history lives in its own key and its values were folded with the
    defaults; with a set in force the read path reads the history and folds it again."""
    from performance_engine.metrics.batch import compute_states
    from performance_engine.metrics.frame import normalise_frame
    from performance_engine.metrics.modes import LearningModes
    from performance_engine.store.predictions import predict
    from performance_engine.tools.backfill import backfill_frame
    from tests.helpers import attempts_frame_of, spec_attempts

    attempts = spec_attempts()  # user 123, sub-topic 456, standard
    frame = normalise_frame(attempts_frame_of(attempts), LearningModes.default()).frame
    fitted = ParameterSet(
        {("standard", 456): dataclasses.replace(a_set(0.3).groups["standard", 7], sub_topic_id=456)}
    )
    with StatsStore.from_settings(settings) as store:
        backfill_frame(frame, store, MetricsCalculator(history_inline_limit=0))
        (stored,) = store.read([attempts[0].scope])
        assert stored is not None
        assert stored.state.spilled
        calculator = MetricsCalculator(parameters=fitted)
        found = predict(store, calculator, attempts[0].scope, 10, "medium")
    assert found is not None
    expected_state = dict(compute_states(frame, calculator).items())[attempts[0].scope]
    assert found.p == calculator.predict(attempts[0].scope, expected_state, 10, 1)
    assert found.params_version == fitted.version
