"""Mastery (SPEC 3.1) is exact BKT, for sequences of any length: the SPEC's test vectors,
and random sequences and parameters against exact arithmetic (``decimal``, 300 digits)."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.metrics.learning import (
    DEFAULT_LEARNING,
    LearningParams,
    fold_learning,
    initial_learning,
    learning_stats,
    learning_step,
    sigmoid,
)
from performance_engine.metrics.sequence import fold_learning_columns
from performance_engine.metrics.types import Entry

EASY, MEDIUM, HARD = 0, 1, 2


def entries(answers: list[tuple[int, bool]]) -> list[Entry]:
    """A history of the answers, in learning order, each question new."""
    return [(i, f"a{i:06d}", i, d, c, None, None) for i, (d, c) in enumerate(answers)]


def mastery(answers: list[tuple[int, bool]], params: LearningParams = DEFAULT_LEARNING) -> float:
    return sigmoid(fold_learning(entries(answers), params).logit)


def exact(answers: list[tuple[int, bool]], params: LearningParams) -> Decimal:
    """BKT in exact arithmetic: the SPEC's formulas carried as odds ``o = p / (1 - p)``
    (divided through by ``1 - q``: the same values, exactly), in ``decimal`` with 300
    significant digits. Odds keep their relative precision however close ``p`` comes to 1
    (after 1,000 right answers ``1 - p`` is about 1e-580)."""
    with decimal.localcontext() as context:
        context.prec = 300
        one = Decimal(1)
        prior = Decimal(params.prior)
        odds: Decimal | None = None if prior == 1 else prior / (one - prior)  # None: p is 1
        learn, forget = Decimal(params.learn), Decimal(params.forget)
        for d, correct in answers:
            if odds is None:  # q is 1 whatever the answer; then p = 1 - F
                odds = None if forget == 0 else (one - forget) / forget
                continue
            g, s = Decimal(params.guess[d]), Decimal(params.slip[d])
            odds *= (one - s) / g if correct else s / (one - g)  # the posterior q, as odds
            # p = q(1 - F) + (1 - q)T, and 1 - p = qF + (1 - q)(1 - T), both over 1 - q:
            below = odds * forget + (one - learn)
            odds = None if below == 0 else (odds * (one - forget) + learn) / below
        return one if odds is None else odds / (one + odds)


def literal(answers: list[tuple[int, bool]], params: LearningParams) -> Decimal:
    """The SPEC's formulas as written, in ``p``, with enough digits for the sequence."""
    with decimal.localcontext() as context:
        context.prec = 300 + 3 * len(answers)  # each answer can move 1 - p 2 digits
        p = Decimal(params.prior)
        learn, forget = Decimal(params.learn), Decimal(params.forget)
        for d, correct in answers:
            g, s = Decimal(params.guess[d]), Decimal(params.slip[d])
            if correct:
                q = p * (1 - s) / (p * (1 - s) + (1 - p) * g)
            else:
                q = p * s / (p * s + (1 - p) * (1 - g))
            p = q * (1 - forget) + (1 - q) * learn
        return +p


@pytest.mark.parametrize(
    ("answers", "params", "expected"),
    [
        ([(EASY, True)] * 30 + [(HARD, False)] * 25, DEFAULT_LEARNING, 0.7795),
        ([(EASY, True)] * 1000 + [(HARD, False)] * 900, DEFAULT_LEARNING, 0.1214),
        (
            [(EASY, True)] * 200 + [(EASY, False)] * 250,
            LearningParams(guess=(0.02, 0.2, 0.15), slip=(0.02, 0.1, 0.15)),
            0.1021,
        ),
    ],
    ids=["30-right-25-wrong", "1000-right-900-wrong", "sharp-easy-200-250"],
)
def test_the_spec_vectors(
    answers: list[tuple[int, bool]], params: LearningParams, expected: float
) -> None:
    state = fold_learning(entries(answers), params)
    stats = learning_stats(state, params, (len(answers), 0, 0))
    assert stats.mastery_probability == expected
    assert not stats.mastered
    assert abs(mastery(answers, params) - float(literal(answers, params))) < 1e-12
    assert abs(float(exact(answers, params)) - float(literal(answers, params))) < 1e-15


def test_mastery_comes_down_after_any_run_of_right_answers() -> None:
    """The naive form sticks at 1.0 after a few dozen right answers; here p prints as 1.0
    after a long run, yet wrong answers bring it down as exact BKT does."""
    for run in (50, 500, 5000):
        answers = [(EASY, True)] * run
        assert mastery(answers) > 0.999
        after = [*answers, *[(HARD, False)] * run]
        assert mastery(after) < 0.95, run
        assert abs(mastery(after) - float(exact(after, DEFAULT_LEARNING))) < 1e-12


@st.composite
def parameter_sets(draw: st.DrawFn) -> LearningParams:
    guess = tuple(draw(st.floats(0.01, 0.45)) for _ in range(3))
    slip = tuple(draw(st.floats(0.01, 0.45)) for _ in range(3))
    return LearningParams(
        prior=draw(st.floats(0.0, 1.0)),
        learn=draw(st.floats(0.0, 1.0)),
        forget=draw(st.sampled_from([0.0, 0.0, 0.01, 0.2, 1.0])),
        guess=guess,  # type: ignore[arg-type]
        slip=slip,  # type: ignore[arg-type]
    )


def runs(max_run: int) -> st.SearchStrategy[list[tuple[int, bool]]]:
    """Answers in runs (long runs of one kind are where the naive form failed)."""
    run = st.tuples(st.integers(0, 2), st.booleans(), st.integers(1, max_run))
    return st.lists(run, max_size=12).map(
        lambda parts: [(d, c) for d, c, n in parts for _ in range(n)]
    )


@settings(max_examples=150, deadline=None)
@given(runs(400), parameter_sets())
def test_the_fold_is_exact_bkt(answers: list[tuple[int, bool]], params: LearningParams) -> None:
    assert abs(mastery(answers, params) - float(exact(answers, params))) <= 1e-9


@settings(max_examples=100, deadline=None)
@given(runs(300), parameter_sets(), st.integers(1, 4))
def test_the_compiled_fold_gives_the_references_bits(
    answers: list[tuple[int, bool]], params: LearningParams, scopes: int
) -> None:
    """The compiled fold (the backfill's) against the step (the stream's), bit for bit,
    over several scopes at once."""
    import numpy as np

    cut = [len(answers) * i // scopes for i in range(scopes + 1)]
    folded = fold_learning_columns(
        np.array(cut),
        np.array([d for d, _ in answers], dtype=np.int64),
        np.array([c for _, c in answers], dtype=np.bool_),
        np.arange(len(answers), dtype=np.int64),
        [params],
        np.zeros(scopes, dtype=np.int64),
    )
    for i in range(scopes):
        state = initial_learning(params)
        k = params.coefficients
        for d, c in answers[cut[i] : cut[i + 1]]:
            learning_step(state, k, d, c, True)
        assert folded.states()[i] == state
