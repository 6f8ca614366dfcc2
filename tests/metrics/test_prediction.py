"""The next-answer prediction (SPEC 3.3) is one number wherever it is computed: what
``evaluate`` scores for an attempt is what the stream's calculator (the worker, the read
API, ``/predict``) and the backfill's predict after the attempts before it, bit for bit,
under any arrival order, with fitted groups, question classes and offsets."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.batch import compute_states
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import normalise_frame
from performance_engine.metrics.learning import (
    DEFAULT_LEARNING,
    LearningParams,
    learning_stats,
    predict_correct,
)
from performance_engine.metrics.model import LearningModel
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.params import FittedGroup, ParameterSet
from performance_engine.metrics.types import DIFFICULTIES, ScopeKey
from performance_engine.tools.learning import history_of, predictions
from tests.helpers import StreamModel, attempt, attempts_frame_of

MODES = LearningModes.default()


def fitted_set() -> ParameterSet:
    """A group fitted for sub-topic 1 (sub-topic 2 keeps the mode's), classes for some
    questions (question 3 is "hard" whatever its attempts say) and offsets for others."""
    group = FittedGroup(
        "standard", 1, 0.35, 0.12, 0.02, (0.3, 0.2, 0.1), (0.1, 0.15, 0.2), 60, 900, -500.0
    )
    return ParameterSet({("standard", 1): group}, (), {3: 2, 4: 0}, {}, {2: -0.6, 4: 0.8})


_answers = st.lists(
    st.tuples(
        st.integers(1, 2),  # user
        st.integers(1, 2),  # sub-topic
        st.integers(1, 5),  # question
        st.sampled_from(DIFFICULTIES),
        st.booleans(),
        st.integers(0, 20),  # seconds: ties of time are sorted by attempt_id
    ),
    min_size=1,
    max_size=25,
)


def attempts_of(rows: list[tuple[int, int, int, object, bool, int]]) -> list[Attempt]:
    return [
        attempt(
            attempt_id=f"a{i:03d}",
            user_id=u,
            sub_topic_id=s,
            question_id=q,
            difficulty=d,
            is_correct=c,
            occurred_at=1_800_000_000_000 + 1000 * t,
        )
        for i, (u, s, q, d, c, t) in enumerate(rows)
    ]


@settings(max_examples=60, deadline=None)
@given(_answers, st.booleans(), st.randoms(use_true_random=False))
def test_evaluate_stream_and_backfill_predict_the_same_number(
    rows: list[tuple[int, int, int, object, bool, int]], fitted: bool, rng: random.Random
) -> None:
    parameters = fitted_set() if fitted else None
    attempts = attempts_of(rows)
    frame = normalise_frame(attempts_frame_of(attempts), MODES).frame
    history = history_of(frame)
    scored = predictions(history, LearningModel(MODES, parameters))
    ordered = history.frame
    for i in range(len(history.offsets) - 1):
        lo, hi = int(history.offsets[i]), int(history.offsets[i + 1])
        ids = ordered["attempt_id"].iloc[lo:hi].tolist()
        by_id = {a.attempt_id: a for a in attempts}
        for k in range(hi - lo):
            target = by_id[ids[k]]
            earlier = [by_id[j] for j in ids[:k]]
            rng.shuffle(earlier)  # any arrival order
            d = DIFFICULTIES.index(target.difficulty)
            calculator = MetricsCalculator(parameters=parameters)
            stream = StreamModel(calculator)
            for at in range(0, len(earlier), 3):  # batches of up to three
                stream.apply(earlier[at : at + 3])
            state = stream.states.get(target.scope) or calculator.new_state()
            live = calculator.predict(target.scope, state, target.question_id, d)
            assert live == scored[lo + k]
            if earlier:
                batch = compute_states(
                    normalise_frame(attempts_frame_of(earlier), MODES).frame, calculator
                )
                backfilled = dict(batch.items())[target.scope]
                assert calculator.predict(target.scope, backfilled, target.question_id, d) == live


def test_a_new_scope_gets_the_priors_prediction_and_an_unseen_question_its_difficultys() -> None:
    parameters = fitted_set()
    calculator = MetricsCalculator(parameters=parameters)
    new = calculator.new_state()
    group = parameters.params("standard", 1, DEFAULT_LEARNING)
    expected = group.prior * (1 - group.slip[1]) + (1 - group.prior) * group.guess[1]
    got = calculator.predict(ScopeKey(7, 1, "standard"), new, 99, 1)
    assert got == pytest.approx(expected, abs=1e-15)
    # Question 3's fitted class is hard, whatever difficulty it is asked at.
    hard = group.prior * (1 - group.slip[2]) + (1 - group.prior) * group.guess[2]
    assert calculator.predict(ScopeKey(7, 1, "standard"), new, 3, 0) == pytest.approx(hard)
    # Sub-topic 2 was not fitted: the mode's parameters, still the set's classes.
    mode = DEFAULT_LEARNING
    expected = mode.prior * (1 - mode.slip[0]) + (1 - mode.prior) * mode.guess[0]
    assert calculator.predict(ScopeKey(7, 2, "standard"), new, 99, 0) == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(st.floats(-40, 40), st.integers(0, 2), st.floats(-3, 3))
def test_without_an_offset_the_prediction_is_the_stats_predicted_correct(
    x: float, d: int, offset: float
) -> None:
    from performance_engine.metrics.learning import LearningState

    params = LearningParams()
    k = params.coefficients
    stats = learning_stats(LearningState(x, 0.5), params, (0, 0, 0))
    assert round(predict_correct(x, k, d), 4) == stats.predicted_correct[DIFFICULTIES[d]]
    # An offset moves the prediction's log-odds by exactly that much.
    base = predict_correct(x, k, d)
    shifted = predict_correct(x, k, d, offset)
    moved = math.log(shifted / (1 - shifted)) - math.log(base / (1 - base))
    assert moved == pytest.approx(offset, abs=1e-6)
