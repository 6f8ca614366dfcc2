"""The built-in learning metrics (SPEC 3.1): mastery, predictions, streaks, first tries.

They are folded over a scope's distinct attempts in learning order (``occurred_at``, then
``attempt_id``). :func:`learning_step` is the one definition of a step; the stream calls
it for each attempt that comes after everything applied, :func:`fold_learning` calls it
over a whole history (a refold, after an attempt arrived out of order), and the pandas
batch path has a numpy twin (:mod:`metrics.sequence`) that the property tests hold equal
to it, float for float.

Per attempt of difficulty ``d`` (index 0, 1, 2), correct (``c`` = 1) or not (``c`` = 0):

* mastery, Bayesian Knowledge Tracing with a guess ``G[d]`` and slip ``S[d]`` per
  difficulty: the posterior ``q`` that the skill is known given the answer, then one
  learn/forget transition, ``p = q(1 - F) + (1 - q)T``. The fold carries the log-odds
  ``l = ln(p / (1 - p))`` rather than ``p`` (SPEC 3.1): in doubles ``p`` itself reaches
  exactly 1.0 after a few dozen right answers and then no wrong answer can lower it,
  while ``l`` stays finite for sequences of any length. In log-odds the answer adds its
  evidence, ``ln((1 - S)/G)`` or ``ln(S/(1 - G))``, and the transition is
  ``l = lse(lp + ln(1 - F), ln + ln T) - lse(lp + ln F, ln + ln(1 - T))`` with
  ``lp = ln p = -softplus(-l)`` and ``ln = ln(1 - p) = -softplus(l)``;
* ``recent_accuracy``: ``e = a*c + (1 - a)*e``;
* ``current_streak`` / ``longest_streak``: runs of correct answers across difficulties;
* ``first_attempt_accuracy[d]``: of the distinct questions attempted at ``d``, the share
  whose first attempt (in learning order) was correct.

Floats are IEEE doubles computed in exactly the order written in :func:`learning_step`
(``exp`` and ``log1p`` from the C library), so every path gives the same bits; the stats
round them to 4 decimals. The fold agrees with exact-arithmetic BKT to 1e-9 (tested
against ``decimal`` at 300 digits).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import msgspec

from performance_engine.errors import ConfigurationError
from performance_engine.metrics.types import DIFFICULTIES, Entry, LearningStats

__all__ = [
    "DEFAULT_LEARNING",
    "FOLD_FORMAT",
    "LEARNING_KEYS",
    "Coefficients",
    "LearningParams",
    "LearningState",
    "fold_learning",
    "initial_learning",
    "learning_stats",
    "learning_step",
    "log_sum_exp",
    "logit",
    "predict_correct",
    "sigmoid",
    "softplus",
]

E, M, H = DIFFICULTIES

#: What a stored ``LearningState`` holds: 1, ``p`` itself (the first releases); 2, its
#: log-odds. Part of every state's signature, so a state of another form is folded again.
FOLD_FORMAT = 2
_PER_DIFFICULTY = ("guess", "slip")
_SCALARS = (
    "prior",
    "learn",
    "forget",
    "mastery_threshold",
    "target_success",
    "ewma_alpha",
    "ewma_prior",
)
#: The parameters a mode's table in the learning-mode file may set.
LEARNING_KEYS = (*_SCALARS, *_PER_DIFFICULTY)


@dataclass(frozen=True)
class LearningParams:
    """The parameters of one learning mode's learning metrics (SPEC 3.1 defaults)."""

    prior: float = 0.2
    learn: float = 0.1
    forget: float = 0.0
    guess: tuple[float, float, float] = (0.25, 0.2, 0.15)
    slip: tuple[float, float, float] = (0.05, 0.1, 0.15)
    mastery_threshold: float = 0.95
    target_success: float = 0.7
    ewma_alpha: float = 0.3
    ewma_prior: float = 0.5

    def merged(self, table: Mapping[str, Any], where: str) -> LearningParams:
        """These parameters with those of a mode's TOML table (``where`` names it in errors).

        ``guess`` and ``slip`` take one number for every difficulty or a table of some
        difficulties (``guess = { hard = 0.1 }``).
        """
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in _SCALARS:
            if name in table:
                values[name] = _probability(table[name], f"{where}.{name}", open_interval=False)
        for name in _PER_DIFFICULTY:
            if name not in table:
                continue
            raw = table[name]
            triple = list(values[name])
            if isinstance(raw, dict):
                unknown = set(raw) - {d.value for d in DIFFICULTIES}
                if unknown:
                    raise ConfigurationError(
                        f"{where}.{name} has unknown difficulties {sorted(unknown)}; "
                        "use easy, medium, hard"
                    )
                for i, d in enumerate(DIFFICULTIES):
                    if d.value in raw:
                        triple[i] = _probability(raw[d.value], f"{where}.{name}.{d.value}")
            else:
                triple = [_probability(raw, f"{where}.{name}")] * 3
            values[name] = (triple[0], triple[1], triple[2])
        for i, d in enumerate(DIFFICULTIES):
            guess, slip = values["guess"][i], values["slip"][i]
            if not guess + slip < 1:
                raise ConfigurationError(
                    f"{where}: guess.{d.value} + slip.{d.value} must be below 1, "
                    f"got {guess} + {slip}"
                )
        return LearningParams(**values)

    @cached_property
    def coefficients(self) -> Coefficients:
        return Coefficients.of(self)

    def as_tuple(self) -> tuple[float, ...]:
        """Every parameter as one flat tuple (what a state's signature is hashed from)."""
        return (
            self.prior,
            self.learn,
            self.forget,
            *self.guess,
            *self.slip,
            self.mastery_threshold,
            self.target_success,
            self.ewma_alpha,
            self.ewma_prior,
        )


DEFAULT_LEARNING = LearningParams()

_INF = math.inf


def logit(p: float) -> float:
    """``ln(p / (1 - p))``; -inf at 0 and inf at 1."""
    if p <= 0:
        return -_INF
    if p >= 1:
        return _INF
    return math.log(p) - math.log1p(-p)


def sigmoid(x: float) -> float:
    """``1 / (1 + exp(-x))``, written so that neither side overflows; 0 and 1 at the
    infinities. ``sigmoid(-x)`` is ``1 - sigmoid(x)`` without the cancellation."""
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    z = math.exp(x)
    return z / (1 + z)


def softplus(x: float) -> float:
    """``ln(1 + exp(x))`` without overflow."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def log_sum_exp(a: float, b: float) -> float:
    """``ln(exp(a) + exp(b))``; -inf when both are."""
    top = max(a, b)
    if top == -_INF:
        return top
    return top + math.log1p(math.exp(-abs(a - b)))


def _log(x: float) -> float:
    """``ln x`` with ``ln 0 = -inf``."""
    return math.log(x) if x > 0 else -_INF


def _log1m(x: float) -> float:
    """``ln(1 - x)`` with ``ln 0 = -inf``."""
    return math.log1p(-x) if x < 1 else -_INF


def _probability(value: object, where: str, *, open_interval: bool = True) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    number = float(value) if ok else math.nan  # type: ignore[arg-type]
    inside = 0 < number < 1 if open_interval else 0 <= number <= 1
    if not inside:
        rule = "strictly between 0 and 1" if open_interval else "from 0 to 1"
        raise ConfigurationError(f"{where} must be a number {rule}, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class Coefficients:
    """A mode's parameters as the terms the step adds (computed once).

    ``evidence[d][c]`` is what an answer at difficulty ``d``, correct (``c`` = 1) or not,
    adds to the log-odds: ``ln((1 - S)/G)`` or ``ln(S/(1 - G))``. ``log_keep``,
    ``log_forget``, ``log_learn`` and ``log_stay`` are ``ln(1 - F)``, ``ln F``, ``ln T``
    and ``ln(1 - T)`` (``ln 0 = -inf``). ``ewma[c]`` is ``a*c`` (exactly ``a`` or 0.0).
    """

    guess: tuple[float, float, float]
    slip: tuple[float, float, float]
    one_minus_slip: tuple[float, float, float]
    evidence: tuple[tuple[float, float], ...]
    log_keep: float
    log_forget: float
    log_learn: float
    log_stay: float
    alpha: float
    one_minus_alpha: float
    ewma: tuple[float, float]

    @classmethod
    def of(cls, params: LearningParams) -> Coefficients:
        g, s = params.guess, params.slip
        alpha = params.ewma_alpha
        return cls(
            guess=g,
            slip=s,
            one_minus_slip=(1 - s[0], 1 - s[1], 1 - s[2]),
            evidence=tuple(
                (math.log(s[d]) - math.log1p(-g[d]), math.log1p(-s[d]) - math.log(g[d]))
                for d in range(3)
            ),
            log_keep=_log1m(params.forget),
            log_forget=_log(params.forget),
            log_learn=_log(params.learn),
            log_stay=_log1m(params.learn),
            alpha=alpha,
            one_minus_alpha=1 - alpha,
            ewma=(alpha * 0, alpha * 1),
        )


class LearningState(msgspec.Struct, array_like=True, gc=False):
    """The fold's running values after the attempts so far (stored in the scope's state).

    ``logit``: the log-odds that the skill is learned; ``e``: the recent accuracy;
    ``first_correct``: per difficulty, the questions whose first try was right.
    """

    logit: float
    e: float
    current: int = 0
    longest: int = 0
    first_correct: tuple[int, int, int] = (0, 0, 0)

    def copy(self) -> LearningState:
        return LearningState(self.logit, self.e, self.current, self.longest, self.first_correct)

    @property
    def p(self) -> float:
        """The probability that the skill is learned."""
        return sigmoid(self.logit)


def initial_learning(params: LearningParams) -> LearningState:
    return LearningState(logit(params.prior), params.ewma_prior, 0, 0, (0, 0, 0))


def learning_step(
    state: LearningState,
    k: Coefficients,
    difficulty: int,
    correct: bool,
    first: bool,
    cls: int | None = None,
) -> None:
    """Fold one attempt into ``state`` (in place). ``first``: its question's first try at
    this difficulty; ``cls``: the difficulty class whose guess and slip weigh the answer
    (the question's fitted class, SPEC 3.3; its ``difficulty`` when None).

    The answer's evidence is added to the log-odds (the posterior ``q``), then the
    learn/forget transition ``p = q(1 - F) + (1 - q)T`` is taken in log space; and
    ``e = a*c + (1 - a)e``.
    """
    x = state.logit + k.evidence[difficulty if cls is None else cls][correct]
    known = -softplus(-x)  # ln q
    unknown = -softplus(x)  # ln(1 - q)
    state.logit = log_sum_exp(known + k.log_keep, unknown + k.log_learn) - log_sum_exp(
        known + k.log_forget, unknown + k.log_stay
    )
    state.e = k.ewma[correct] + k.one_minus_alpha * state.e
    if correct:
        current = state.current = state.current + 1
        state.longest = max(state.longest, current)
        if first:
            e, m, h = state.first_correct
            state.first_correct = (
                e + (difficulty == 0),
                m + (difficulty == 1),
                h + (difficulty == 2),
            )
    else:
        state.current = 0


def fold_learning(
    entries: Iterable[Entry], params: LearningParams, classes: Mapping[int, int] | None = None
) -> LearningState:
    """The learning state after a history's entries, given in learning order;
    ``classes``: the questions' fitted difficulty classes (an attempt's own difficulty
    for a question without one)."""
    state = initial_learning(params)
    k = params.coefficients
    tried: set[tuple[int, int]] = set()
    for entry in entries:
        question, difficulty, correct = entry[2], entry[3], entry[4]
        key = (difficulty, question)
        first = key not in tried
        if first:
            tried.add(key)
        cls = classes.get(question, difficulty) if classes else difficulty
        learning_step(state, k, difficulty, correct, first, cls)
    return state


def predict_correct(state_logit: float, k: Coefficients, cls: int, offset: float = 0.0) -> float:
    """P(the next answer is right) for a question of difficulty class ``cls`` (SPEC 3.3):
    ``p(1 - S[c]) + (1 - p)G[c]`` with ``p`` the mastery before the answer; a question's
    fitted ``offset`` is then added to its log-odds. Without one this is
    ``predicted_correct[c]`` of the stats, unrounded."""
    p = sigmoid(state_logit)
    q = sigmoid(-state_logit)
    base = p * k.one_minus_slip[cls] + q * k.guess[cls]
    if offset == 0.0:
        return base
    return sigmoid(math.log(base) - math.log1p(-base) + offset)


def learning_stats(
    state: LearningState,
    params: LearningParams,
    questions: tuple[int, int, int],
    params_version: str = "defaults",
) -> LearningStats:
    """The ``learning`` block from the fold's state; ``questions``: distinct questions
    attempted per difficulty; ``params_version``: which parameters these are (SPEC 3.2)."""
    p = sigmoid(state.logit)
    q = sigmoid(-state.logit)  # 1 - p, without the cancellation
    k = params.coefficients
    predicted = [p * k.one_minus_slip[i] + q * k.guess[i] for i in range(3)]  # predict_correct
    recommended = E
    for i in (2, 1):
        if predicted[i] >= params.target_success:
            recommended = DIFFICULTIES[i]
            break
    fc = state.first_correct
    return LearningStats(
        mastery_probability=round(p, 4),
        mastered=p >= params.mastery_threshold,
        predicted_correct={
            E: round(predicted[0], 4),
            M: round(predicted[1], 4),
            H: round(predicted[2], 4),
        },
        recommended_difficulty=recommended,
        recent_accuracy=round(state.e, 4),
        current_streak=state.current,
        longest_streak=state.longest,
        first_attempt_accuracy={
            d: round(fc[i] / questions[i], 4) if questions[i] else None
            for i, d in enumerate(DIFFICULTIES)
        },
        params_version=params_version,
    )
