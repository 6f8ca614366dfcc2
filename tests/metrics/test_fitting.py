"""Fitting BKT by EM (SPEC 3.2) and scoring predictions (SPEC 3.3)."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.errors import ConfigurationError
from performance_engine.metrics.fitting import (
    Bounds,
    ChainParameters,
    Sequences,
    auc,
    fit_groups,
    log_loss,
    predict_sequences,
    question_offsets,
    rmse,
)
from performance_engine.metrics.learning import DEFAULT_LEARNING, LearningParams
from performance_engine.metrics.params import FittedGroup, ParameterSet

TRUTH: list[dict[str, Any]] = [
    {"prior": 0.3, "learn": 0.15, "guess": (0.25, 0.2, 0.1), "slip": (0.05, 0.1, 0.2)},
    {"prior": 0.6, "learn": 0.05, "guess": (0.3, 0.15, 0.2), "slip": (0.1, 0.1, 0.15)},
    {"prior": 0.15, "learn": 0.1, "guess": (0.2, 0.2, 0.2), "slip": (0.2, 0.1, 0.05)},
]


def simulate(truth: list[dict[str, Any]], learners: int, answers: int, seed: int) -> Sequences:
    """Answers drawn from BKT with known parameters, difficulty classes at random."""
    rng = np.random.default_rng(seed)
    offsets, group, difficulty, correct = [0], [], [], []
    for g, p in enumerate(truth):
        guess, slip = p["guess"], p["slip"]
        for _ in range(learners):
            known = rng.random() < p["prior"]
            for _ in range(answers):
                d = int(rng.integers(3))
                right = rng.random() > slip[d] if known else rng.random() < guess[d]
                difficulty.append(d)
                correct.append(bool(right))
                if not known and rng.random() < p["learn"]:
                    known = True
            offsets.append(len(difficulty))
            group.append(g)
    return Sequences(np.array(offsets), np.array(group), np.array(difficulty), np.array(correct))


@pytest.mark.timeout(120)
def test_known_parameters_are_recovered() -> None:
    """Three sub-topics of 400 learners x 40 answers (16,000 each). The fewest answers
    behind a parameter are the unknown state's per difficulty class (a guess): about
    1,000 in the quickest-learning sub-topic, a standard error near 0.013; a slip has
    more; the prior rests on 400 first answers seen through guess and slip (about 0.03);
    learn on the moments of learning (about 0.01). The tolerances are about three
    standard errors."""
    data = simulate(TRUTH, 400, 40, seed=11)
    fits = fit_groups(data, len(TRUTH))
    for truth, found in zip(TRUTH, fits, strict=True):
        assert found.prior == pytest.approx(truth["prior"], abs=0.09)
        assert found.learn == pytest.approx(truth["learn"], abs=0.04)
        assert found.guess == pytest.approx(truth["guess"], abs=0.04)
        assert found.slip == pytest.approx(truth["slip"], abs=0.04)
        assert found.forget == 0.0
        assert (found.sequences, found.attempts) == (400, 16_000)


def test_the_fit_beats_the_truth_and_the_defaults_in_likelihood_on_its_data() -> None:
    """EM's optimum scores its own data at least as well as the generating parameters
    (up to sampling noise: never worse), and far better than the defaults."""
    data = simulate(TRUTH[:1], 300, 30, seed=5)
    (found,) = fit_groups(data, 1)
    truth = TRUTH[0]
    as_truth = LearningParams(
        prior=truth["prior"], learn=truth["learn"], guess=truth["guess"], slip=truth["slip"]
    )
    defaults = DEFAULT_LEARNING

    def likelihood(fit: ChainParameters) -> float:
        p = predict_sequences(data, [fit])
        y = data.correct
        return float(np.sum(np.where(y, np.log(p), np.log1p(-p))))

    assert likelihood(found) == pytest.approx(found.log_likelihood, rel=1e-9)
    assert found.log_likelihood >= likelihood(as_truth) - 1e-6
    assert found.log_likelihood > likelihood(defaults) + 20


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9])), min_size=2))
def test_auc_is_the_share_of_ordered_pairs(pairs: list[tuple[bool, float]]) -> None:
    outcome = np.array([y for y, _ in pairs])
    score = np.array([s for _, s in pairs])
    right = [s for y, s in pairs if y]
    wrong = [s for y, s in pairs if not y]
    if not right or not wrong:
        assert math.isnan(auc(outcome, score))
        return
    wins = sum(1.0 if r > w else 0.5 if r == w else 0.0 for r, w in itertools.product(right, wrong))
    assert auc(outcome, score) == pytest.approx(wins / (len(right) * len(wrong)))


def test_rmse_and_log_loss() -> None:
    y = np.array([True, False, True, True])
    p = np.array([0.9, 0.2, 0.6, 0.5])
    assert rmse(y, p) == pytest.approx(math.sqrt((0.01 + 0.04 + 0.16 + 0.25) / 4))
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.5)) / 4
    assert log_loss(y, p) == pytest.approx(expected)


def parameter_set() -> ParameterSet:
    group = FittedGroup(
        "standard", 7, 0.4, 0.09, 0.0, (0.2, 0.18, 0.12), (0.08, 0.1, 0.15), 312, 9120, -4810.2
    )
    return ParameterSet(
        {("standard", 7): group},
        ({"learning_mode": "standard", "sub_topic_id": 9, "reason": "fewer than 50 learners"},),
        {1001: 2, 1002: 0},
        {"history": "h.parquet", "attempts": 9260},
        {1001: -0.75, 1002: 0.5},
    )


def test_a_parameter_file_round_trips_with_its_version() -> None:
    found = parameter_set()
    again = ParameterSet.from_dict(found.to_dict())
    assert again == found
    assert again.version == found.version
    assert found.version.startswith("p-")
    assert found.params("standard", 7, DEFAULT_LEARNING).guess == (0.2, 0.18, 0.12)
    assert found.params("standard", 8, DEFAULT_LEARNING) == DEFAULT_LEARNING
    assert found.params("standard", 7, DEFAULT_LEARNING).mastery_threshold == 0.95
    assert (found.question_class(1001, 0), found.question_class(5, 1)) == (2, 1)
    assert (found.question_offset(1001), found.question_offset(5)) == (-0.75, 0.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prior": 1.5}, "group standard/7: prior must be a number from 0 to 1, got 1.5"),
        ({"guess": {"easy": 0.95, "medium": 0.2, "hard": 0.1}}, "guess.easy + slip.easy"),
        ({"slip": {"easy": 0.1}}, "group standard/7: slip must give easy, medium and hard"),
        ({"learn": "fast"}, "group standard/7: learn must be a number"),
    ],
)
def test_a_bad_parameter_file_is_refused_naming_the_group_and_parameter(
    change: dict[str, object], message: str
) -> None:
    document = parameter_set().to_dict()
    document.pop("version")
    document["groups"][0].update(change)
    with pytest.raises(ConfigurationError, match=message.replace("+", r"\+")):
        ParameterSet.from_dict(document, "parameter file p.json")


def test_question_offsets_find_each_questions_own_difficulty() -> None:
    """Answers whose true log-odds are the model's plus a per-question offset: the fitted
    offsets recover them (shrunk a little towards 0 by their prior), and a question seen
    twice stays near 0."""
    rng = np.random.default_rng(9)
    true = {q: float(rng.normal(0, 1)) for q in range(40)}
    question = np.array([q for q in range(40) for _ in range(500)] + [99, 99])
    base = rng.uniform(0.2, 0.8, len(question))
    logit = np.log(base / (1 - base)) + np.array([true.get(int(q), 3.0) for q in question])
    right = rng.random(len(question)) < 1 / (1 + np.exp(-logit))
    found = question_offsets(question, right, base)
    for q, b in true.items():
        assert found[q] == pytest.approx(b, abs=0.3)
    assert abs(found[99]) < 1.0  # two right answers: pulled towards 0, not to +3
    shifted = 1 / (1 + np.exp(-(np.log(base / (1 - base)) + [found[int(q)] for q in question])))
    assert log_loss(right, shifted) < log_loss(right, base)


def test_a_bad_question_offset_is_refused() -> None:
    document = parameter_set().to_dict()
    document.pop("version")
    document["question_offsets"]["1001"] = "hard"
    with pytest.raises(ConfigurationError, match=r"question_offsets.1001 must map"):
        ParameterSet.from_dict(document, "parameter file p.json")


def test_a_hand_edited_file_must_drop_its_version() -> None:
    document = parameter_set().to_dict()
    document["groups"][0]["prior"] = 0.5
    with pytest.raises(ConfigurationError, match="does not match its version"):
        ParameterSet.from_dict(document)
    document.pop("version")
    assert ParameterSet.from_dict(document).groups[("standard", 7)].prior == 0.5


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_fit_is_no_worse_than_pybkt_where_pybkt_keeps_the_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pyBKT 1.4's EM with ``multigs`` per difficulty, on the same small data (two skills,
    5,400 answers): the engine's fit reaches at least pyBKT's log-likelihood (both scored
    by the same forward pass) for every skill whose pyBKT solution lies within the
    engine's bounds. pyBKT runs without bounds; a solution outside them is not comparable
    and is said so."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyBKT.fit.EM_fit as em_fit
        import pyBKT.models as pybkt

    run = em_fit.run

    def run_with_a_scalar_likelihood(*args: Any, **kwargs: Any) -> Any:
        """pyBKT 1.4 stores a one-element array where it wants a number, which NumPy 2
        refuses ("setting an array element with a sequence"): hand it the number."""
        result = run(*args, **kwargs)
        result["total_loglike"] = float(np.sum(result["total_loglike"]))
        return result

    monkeypatch.setattr(em_fit, "run", run_with_a_scalar_likelihood)
    import pandas as pd

    data = simulate(TRUTH[:2], 150, 18, seed=21)
    names = ("easy", "medium", "hard")
    rows = []
    for i, g in enumerate(data.group.tolist()):
        for r in range(int(data.offsets[i]), int(data.offsets[i + 1])):
            rows.append(
                {
                    "order_id": r,
                    "user_id": i,
                    "skill_name": f"s{g}",
                    "correct": int(data.correct[r]),
                    "difficulty": names[int(data.difficulty[r])],
                }
            )
    with warnings.catch_warnings():  # pyBKT sets pandas options that pandas deprecated
        warnings.simplefilter("ignore")
        model = pybkt.Model(seed=7, num_fits=3, parallel=False)
        model.fit(data=pd.DataFrame(rows), multigs="difficulty")
        values = model.params()["value"]
    ours = fit_groups(data, 2)
    compared = 0
    for g, found in enumerate(ours):
        skill = f"s{g}"

        def value(param: str, label: str = "default", skill: str = skill) -> float:
            return float(values[(skill, param, label)])

        theirs = LearningParams(
            prior=value("prior"),
            learn=value("learns"),
            guess=(value("guesses", "easy"), value("guesses", "medium"), value("guesses", "hard")),
            slip=(value("slips", "easy"), value("slips", "medium"), value("slips", "hard")),
        )
        bounds = Bounds()
        within = (
            bounds.prior[0] <= theirs.prior <= bounds.prior[1]
            and theirs.learn <= bounds.learn[1]
            and all(bounds.guess[0] <= x <= bounds.guess[1] for x in theirs.guess)
            and all(bounds.slip[0] <= x <= bounds.slip[1] for x in theirs.slip)
        )
        if not within:
            print(f"skill {skill}: pyBKT's solution leaves the bounds: {theirs}")
            continue
        mine = group_likelihood(data, g, found)
        assert mine >= group_likelihood(data, g, theirs) - 1e-6
        compared += 1
    assert compared >= 1  # the truths lie well inside the bounds: pyBKT finds them too


def group_likelihood(data: Sequences, g: int, fit: ChainParameters) -> float:
    """The log-likelihood of group ``g``'s answers under ``fit`` (the forward pass)."""
    p = predict_sequences(data, [fit, fit])  # the same parameters for either group
    rows = np.repeat(data.group == g, np.diff(data.offsets))
    y = data.correct[rows]
    q = p[rows]
    return float(np.sum(np.where(y, np.log(q), np.log1p(-q))))
