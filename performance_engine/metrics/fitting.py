"""Fitting the learning parameters to a platform's history, and scoring predictions.

The model is SPEC 3.1's Bayesian Knowledge Tracing with a guess and a slip per difficulty
class (pyBKT's "multiple guess and slip", KT-IDEM): per (learning mode, sub-topic) a
``prior``, ``learn`` (T), optionally ``forget`` (F), and ``guess[d]``, ``slip[d]``. Each
scope (learner, sub-topic, mode) is one sequence of answers in learning order; the latent
"skill learned" is a two-state hidden Markov chain whose emission depends on the answer's
difficulty class. Parameters are fitted by expectation-maximisation (Baum-Welch): a
forward pass (the filtered belief, as the engine folds it), a backward pass (the smoothed
belief), and closed-form updates from the expected counts. Every group is fitted at once:
one compiled pass over all answers per iteration (:func:`em_pass`).

Difficulty classes: an attempt's own ``difficulty``, or, with per-question difficulty
(:func:`question_classes`), a class learned from the answers: each question's success
rate among the training learners, shrunk towards its sub-topic's, cut at the terciles
of all questions (hard, medium, easy). A platform whose difficulty labels are missing or
untrustworthy still gets item-aware predictions.

Also here: the next-answer prediction of every attempt from the earlier ones
(:func:`predict_sequences`, what ``perf-engine evaluate`` scores) and the scores (AUC,
RMSE, log-loss). numba is imported by this module only: the worker never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numba
import numpy as np

__all__ = [
    "Bounds",
    "ChainParameters",
    "FitOptions",
    "GroupFit",
    "Sequences",
    "auc",
    "em_pass",
    "fit_groups",
    "log_loss",
    "predict_sequences",
    "question_classes",
    "question_offsets",
    "rmse",
]

Array = np.ndarray[Any, Any]

_jit = numba.njit(cache=True, nogil=True)


@dataclass(frozen=True, slots=True)
class Bounds:
    """Where each fitted parameter may lie (inclusive). Guess and slip below 0.5 each keep
    ``guess + slip < 1``: a learned skill answers better than an unlearned one."""

    prior: tuple[float, float] = (0.01, 0.99)
    learn: tuple[float, float] = (0.001, 0.5)
    forget: tuple[float, float] = (0.0, 0.2)
    guess: tuple[float, float] = (0.01, 0.45)  # tools.learning_cli.MAX_GUESS_OR_SLIP
    slip: tuple[float, float] = (0.01, 0.45)


@dataclass(frozen=True, slots=True)
class FitOptions:
    """How the fit runs. ``starts``: (prior, learn, guess, slip) starting points, the best
    log-likelihood kept per group; ``forget``: fit F (else it stays 0)."""

    bounds: Bounds = field(default_factory=Bounds)
    forget: bool = False
    iterations: int = 300
    tolerance: float = 1e-9
    starts: tuple[tuple[float, float, float, float], ...] = (
        (0.3, 0.1, 0.2, 0.1),
        (0.1, 0.3, 0.3, 0.05),
        (0.6, 0.05, 0.15, 0.2),
    )


@dataclass(frozen=True, slots=True)
class Sequences:
    """Answers grouped into sequences (one per scope, in learning order): sequence i is
    rows ``offsets[i]:offsets[i + 1]`` and belongs to group ``group[i]``; each row has a
    difficulty class 0-2 and a 0/1 outcome."""

    offsets: Array
    group: Array
    difficulty: Array
    correct: Array

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.group) + 1:
            raise ValueError("offsets must have one more element than group")


@dataclass(frozen=True, slots=True)
class GroupFit:
    """One group's fitted parameters and the data behind them."""

    prior: float
    learn: float
    forget: float
    guess: tuple[float, float, float]
    slip: tuple[float, float, float]
    log_likelihood: float
    sequences: int
    attempts: int
    iterations: int


@_jit
def _answer(
    known: float, right: bool, guess: float, slip: float, learn: float, forget: float
) -> tuple[float, float, float]:
    """One answer seen by the chain: its probability given the belief ``known`` before
    it, the belief after it (the posterior), and the belief before the next answer."""
    if right:
        a1 = known * (1.0 - slip)
        z = a1 + (1.0 - known) * guess
    else:
        a1 = known * slip
        z = a1 + (1.0 - known) * (1.0 - guess)
    q = a1 / z
    return z, q, q * (1.0 - forget) + (1.0 - q) * learn


@_jit
def em_pass(
    offsets: Array,
    group: Array,
    difficulty: Array,
    correct: Array,
    prior: Array,
    learn: Array,
    forget: Array,
    guess: Array,
    slip: Array,
    counts: Array,
    per_class: Array,
    log_likelihood: Array,
) -> None:
    """One E-step over every sequence: accumulates each group's expected counts and
    log-likelihood (all zeroed by the caller).

    ``counts[g]``: first-answer belief sum, sequences, expected unknown-to-known and
    unknown-before-a-next-answer, known-to-unknown and known-before-a-next-answer.
    ``per_class[g, d]``: expected unknown-and-right, unknown, known-and-wrong, known.
    """
    longest = 0
    for i in range(len(offsets) - 1):
        longest = max(longest, offsets[i + 1] - offsets[i])
    filtered = np.empty(longest, dtype=np.float64)
    predicted = np.empty(longest + 1, dtype=np.float64)
    for i in range(len(offsets) - 1):
        g = group[i]
        lo = offsets[i]
        n = offsets[i + 1] - lo
        if n == 0:
            continue
        t_learn = learn[g]
        t_forget = forget[g]
        known = prior[g]
        for t in range(n):
            d = difficulty[lo + t]
            predicted[t] = known
            z, filtered[t], known = _answer(
                known, correct[lo + t], guess[g, d], slip[g, d], t_learn, t_forget
            )
            log_likelihood[g] += math.log(z)
        predicted[n] = known
        # Backward: the smoothed belief, from the last answer to the first.
        smooth = filtered[n - 1]
        for t in range(n - 1, -1, -1):
            if t < n - 1:
                q = filtered[t]
                nxt = predicted[t + 1]
                to_known = smooth / nxt if nxt > 0.0 else 0.0
                to_unknown = (1.0 - smooth) / (1.0 - nxt) if nxt < 1.0 else 0.0
                learned = (1.0 - q) * t_learn * to_known  # unknown at t, known at t + 1
                forgot = q * t_forget * to_unknown  # known at t, unknown at t + 1
                stayed = q * (1.0 - t_forget) * to_known
                smooth = stayed + forgot
                counts[g, 2] += learned
                counts[g, 3] += 1.0 - smooth
                counts[g, 4] += forgot
                counts[g, 5] += smooth
            d = difficulty[lo + t]
            unknown = 1.0 - smooth
            per_class[g, d, 1] += unknown
            per_class[g, d, 3] += smooth
            if correct[lo + t]:
                per_class[g, d, 0] += unknown
            else:
                per_class[g, d, 2] += smooth
        counts[g, 0] += smooth
        counts[g, 1] += 1.0


def fit_groups(
    data: Sequences,
    n_groups: int,
    options: FitOptions | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[GroupFit]:
    """Maximum-likelihood parameters of every group, by EM from each starting point; the
    best log-likelihood kept. ``progress(done, total)`` is called once per iteration."""
    options = options or FitOptions()
    offsets = np.asarray(data.offsets, dtype=np.int64)
    group = np.asarray(data.group, dtype=np.int64)
    difficulty = np.asarray(data.difficulty, dtype=np.int64)
    correct = np.asarray(data.correct, dtype=np.bool_)
    lengths = np.diff(offsets)
    sequences = np.bincount(group, minlength=n_groups)
    attempts = np.bincount(group, weights=lengths, minlength=n_groups).astype(np.int64)
    b = options.bounds
    best: list[GroupFit | None] = [None] * n_groups
    total = options.iterations * len(options.starts)
    done = 0
    for start_prior, start_learn, start_guess, start_slip in options.starts:
        prior = np.full(n_groups, start_prior)
        learn = np.full(n_groups, start_learn)
        forget = np.full(n_groups, 0.01 if options.forget else 0.0)
        guess = np.full((n_groups, 3), start_guess)
        slip = np.full((n_groups, 3), start_slip)
        previous = np.full(n_groups, -np.inf)
        active = np.ones(n_groups, dtype=bool)
        used = np.zeros(n_groups, dtype=np.int64)
        answers = (offsets, group, difficulty, correct)
        for _ in range(options.iterations):
            counts, per_class, ll = _e_step(answers, prior, learn, forget, guess, slip)
            done += 1
            progress(done, total)
            improved = ll - previous
            converged = improved <= options.tolerance * np.maximum(np.abs(ll), 1.0)
            active &= ~converged
            if not active.any():
                break
            used += active
            previous = np.where(active, ll, previous)
            # M-step (only where still improving): the expected counts' ratios, bounded.
            new_prior = _ratio(counts[:, 0], counts[:, 1], prior)
            new_learn = _ratio(counts[:, 2], counts[:, 3], learn)
            new_forget = _ratio(counts[:, 4], counts[:, 5], forget) if options.forget else forget
            new_guess = _ratio(per_class[:, :, 0], per_class[:, :, 1], guess)
            new_slip = _ratio(per_class[:, :, 2], per_class[:, :, 3], slip)
            prior = np.where(active, np.clip(new_prior, *b.prior), prior)
            learn = np.where(active, np.clip(new_learn, *b.learn), learn)
            if options.forget:
                forget = np.where(active, np.clip(new_forget, *b.forget), forget)
            guess = np.where(active[:, None], np.clip(new_guess, *b.guess), guess)
            slip = np.where(active[:, None], np.clip(new_slip, *b.slip), slip)
        # The log-likelihood of the parameters as they ended (the last pass's E-step ran
        # on them where the group converged; a last pass scores the rest).
        _, _, ll = _e_step(answers, prior, learn, forget, guess, slip)
        for g in range(n_groups):
            found = best[g]
            if found is None or ll[g] > found.log_likelihood:
                best[g] = GroupFit(
                    float(prior[g]),
                    float(learn[g]),
                    float(forget[g]),
                    (float(guess[g, 0]), float(guess[g, 1]), float(guess[g, 2])),
                    (float(slip[g, 0]), float(slip[g, 1]), float(slip[g, 2])),
                    float(ll[g]),
                    int(sequences[g]),
                    int(attempts[g]),
                    int(used[g]),
                )
    progress(total, total)
    return [fit for fit in best if fit is not None]


def _e_step(
    answers: tuple[Array, Array, Array, Array],
    prior: Array,
    learn: Array,
    forget: Array,
    guess: Array,
    slip: Array,
) -> tuple[Array, Array, Array]:
    """:func:`em_pass` with fresh accumulators: (counts, per-class counts, log-likelihood)."""
    n_groups = len(prior)
    counts = np.zeros((n_groups, 6))
    per_class = np.zeros((n_groups, 3, 4))
    ll = np.zeros(n_groups)
    em_pass(*answers, prior, learn, forget, guess, slip, counts, per_class, ll)
    return counts, per_class, ll


def _ratio(numerator: Array, denominator: Array, keep: Array) -> Array:
    """``numerator / denominator``, the old value where there is nothing to divide."""
    safe = denominator > 1e-12
    return np.where(safe, numerator / np.where(safe, denominator, 1.0), keep)


def question_offsets(
    question: Array, correct: Array, predicted: Array, *, spread: float = 1.0, steps: int = 10
) -> dict[int, float]:
    """Per question, the offset ``b`` to the log-odds of the model's predictions that fits
    its answers best: ``P = sigmoid(logit(p) + b)``, ``b`` maximising the answers'
    likelihood times a normal prior of standard deviation ``spread`` (so a question seen
    a few times stays near 0). Newton steps, every question at once."""
    question = np.asarray(question, dtype=np.int64)
    right = np.asarray(correct, dtype=np.float64)
    p = np.clip(np.asarray(predicted, dtype=np.float64), 1e-9, 1 - 1e-9)
    base = np.log(p) - np.log1p(-p)
    ids, inverse = np.unique(question, return_inverse=True)
    offset = np.zeros(len(ids))
    precision = 1.0 / spread**2
    for _ in range(steps):
        q = 1.0 / (1.0 + np.exp(-(base + offset[inverse])))
        gradient = np.bincount(inverse, weights=right - q, minlength=len(ids)) - precision * offset
        curvature = np.bincount(inverse, weights=q * (1 - q), minlength=len(ids)) + precision
        offset += gradient / curvature
    return dict(zip(ids.tolist(), offset.tolist(), strict=True))


def question_classes(
    question: Array, group: Array, correct: Array, *, shrink: float = 10.0
) -> dict[int, int]:
    """A difficulty class per question (0 easy, 1 medium, 2 hard) from the answers: its
    success rate shrunk towards its group's by ``shrink`` pseudo-answers, cut at the
    terciles over all questions."""
    question = np.asarray(question, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    right = np.asarray(correct, dtype=np.float64)
    group_rate = np.bincount(group, weights=right) / np.maximum(np.bincount(group), 1)
    ids, inverse = np.unique(question, return_inverse=True)
    answers = np.bincount(inverse)
    rights = np.bincount(inverse, weights=right)
    # A question's group: that of its first answer (questions belong to one sub-topic).
    first = np.full(len(ids), -1, dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    base = group_rate[group[first]]
    rate = (rights + shrink * base) / (answers + shrink)
    low, high = np.quantile(rate, [1 / 3, 2 / 3])
    classes = np.where(rate >= high, 0, np.where(rate >= low, 1, 2))
    return dict(zip(ids.tolist(), classes.tolist(), strict=True))


@_jit
def _predict(
    offsets: Array,
    group: Array,
    difficulty: Array,
    correct: Array,
    prior: Array,
    learn: Array,
    forget: Array,
    guess: Array,
    slip: Array,
) -> Array:
    out = np.empty(len(difficulty), dtype=np.float64)
    for i in range(len(offsets) - 1):
        g = group[i]
        known = prior[g]
        for r in range(offsets[i], offsets[i + 1]):
            d = difficulty[r]
            out[r] = known * (1.0 - slip[g, d]) + (1.0 - known) * guess[g, d]
            _, _, known = _answer(known, correct[r], guess[g, d], slip[g, d], learn[g], forget[g])
    return out


class ChainParameters(Protocol):
    """What a prediction needs of a group's parameters (a ``GroupFit``, or the
    ``LearningParams`` of a mode or of a fitted sub-topic)."""

    @property
    def prior(self) -> float: ...
    @property
    def learn(self) -> float: ...
    @property
    def forget(self) -> float: ...
    @property
    def guess(self) -> tuple[float, float, float]: ...
    @property
    def slip(self) -> tuple[float, float, float]: ...


def predict_sequences(data: Sequences, fits: Sequence[ChainParameters]) -> Array:
    """Each answer's predicted probability of being right, from the earlier answers of
    its sequence only, with its group's parameters (``fits[group]``)."""
    return _predict(
        np.asarray(data.offsets, dtype=np.int64),
        np.asarray(data.group, dtype=np.int64),
        np.asarray(data.difficulty, dtype=np.int64),
        np.asarray(data.correct, dtype=np.bool_),
        np.array([f.prior for f in fits]),
        np.array([f.learn for f in fits]),
        np.array([f.forget for f in fits]),
        np.array([f.guess for f in fits]).reshape(len(fits), 3),
        np.array([f.slip for f in fits]).reshape(len(fits), 3),
    )


def auc(outcome: Array, score: Array) -> float:
    """The area under the ROC curve: the chance that a random right answer scores above a
    random wrong one (ties count half); NaN with one class only."""
    outcome = np.asarray(outcome, dtype=bool)
    ranks = _average_ranks(np.asarray(score, dtype=np.float64))
    right = int(outcome.sum())
    wrong = len(outcome) - right
    if right == 0 or wrong == 0:
        return math.nan
    return float((ranks[outcome].sum() - right * (right + 1) / 2) / (right * wrong))


def _average_ranks(values: Array) -> Array:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2  # ranks are 1-based
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def rmse(outcome: Array, p: Array) -> float:
    return float(np.sqrt(np.mean((np.asarray(outcome, dtype=np.float64) - p) ** 2)))


def log_loss(outcome: Array, p: Array, eps: float = 1e-15) -> float:
    y = np.asarray(outcome, dtype=np.float64)
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))
