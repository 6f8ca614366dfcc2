"""A fitted parameter set (SPEC 3.2): one documented, versioned format.

A parameter set holds, per (learning mode, sub-topic) with enough data, the BKT
parameters the fit found (``prior``, ``learn``, ``forget``, ``guess`` and ``slip`` per
difficulty), the data behind them and the fit's log-likelihood; the groups whose modes'
parameters were kept, and why; optionally each question's difficulty class as learned
from the answers; and where it all came from (the history's counts and time range, the
fit's options, the engine's version). Its ``version`` is a hash of all of that: two sets
with the same version are the same parameters.

As JSON (``perf-engine fit --out``)::

    {"format": 1, "version": "p-3f2a...", "source": {...},
     "groups": [{"learning_mode": "standard", "sub_topic_id": 7, "prior": 0.41, "learn": 0.09,
                 "forget": 0.0, "guess": {"easy": 0.2, "medium": 0.18, "hard": 0.12},
                 "slip": {"easy": 0.08, ...}, "learners": 312, "attempts": 9120,
                 "log_likelihood": -4810.2}],
     "kept": [{"learning_mode": "standard", "sub_topic_id": 9, "learners": 12,
               "attempts": 140, "reason": "fewer than 50 learners"}],
     "questions": {"1001": "hard", ...},
     "question_offsets": {"1001": -0.42, ...}}

Nothing here reads a file: the settings layer and the tools hand the parsed document in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from performance_engine.errors import ConfigurationError
from performance_engine.metrics.learning import LearningParams
from performance_engine.metrics.types import DIFFICULTIES

__all__ = ["FORMAT", "FittedGroup", "ParameterSet"]

#: The format of the parameter file this release writes and reads.
FORMAT = 1
_NAMES = tuple(d.value for d in DIFFICULTIES)


@dataclass(frozen=True, slots=True)
class FittedGroup:
    """The fitted parameters of one (learning mode, sub-topic), and the data behind them."""

    learning_mode: str
    sub_topic_id: int
    prior: float
    learn: float
    forget: float
    guess: tuple[float, float, float]
    slip: tuple[float, float, float]
    learners: int
    attempts: int
    log_likelihood: float

    def applied_to(self, params: LearningParams) -> LearningParams:
        """``params`` (a mode's) with these in place of prior, learn, forget, guess, slip;
        the thresholds stay the mode's."""
        return replace(
            params,
            prior=self.prior,
            learn=self.learn,
            forget=self.forget,
            guess=self.guess,
            slip=self.slip,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "learning_mode": self.learning_mode,
            "sub_topic_id": self.sub_topic_id,
            "prior": self.prior,
            "learn": self.learn,
            "forget": self.forget,
            "guess": dict(zip(_NAMES, self.guess, strict=True)),
            "slip": dict(zip(_NAMES, self.slip, strict=True)),
            "learners": self.learners,
            "attempts": self.attempts,
            "log_likelihood": self.log_likelihood,
        }


@dataclass(frozen=True, slots=True)
class ParameterSet:
    """Fitted parameters per (mode, sub-topic), question classes, and their provenance."""

    groups: Mapping[tuple[str, int], FittedGroup]
    kept: tuple[Mapping[str, Any], ...] = ()
    questions: Mapping[int, int] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    offsets: Mapping[int, float] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """A hash of the whole content: ``p-`` and 16 hex digits."""
        body = msgspec.json.encode(self._content(), order="sorted")
        return "p-" + hashlib.sha256(body).hexdigest()[:16]

    def params(self, mode: str, sub_topic_id: int, base: LearningParams) -> LearningParams:
        """The parameters of a scope: the fitted group's where there is one, else ``base``."""
        group = self.groups.get((mode, sub_topic_id))
        return base if group is None else group.applied_to(base)

    def question_class(self, question_id: int, given: int) -> int:
        """A question's difficulty class as fitted, else the attempt's own (``given``)."""
        return self.questions.get(question_id, given)

    def question_offset(self, question_id: int) -> float:
        """A question's offset to the predicted log-odds of a right answer (0 if none)."""
        return self.offsets.get(question_id, 0.0)

    def _content(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "source": dict(self.source),
            "groups": [g.to_dict() for _, g in sorted(self.groups.items())],
            "kept": [dict(k) for k in self.kept],
            "questions": {str(q): _NAMES[c] for q, c in sorted(self.questions.items())},
            "question_offsets": {str(q): b for q, b in sorted(self.offsets.items())},
        }

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, **self._content()}

    @classmethod
    def from_dict(cls, document: Any, where: str = "parameter file") -> ParameterSet:
        """Validate a parsed parameter file; a wrong one is refused with one line naming
        the group and the parameter."""
        if not isinstance(document, dict):
            raise ConfigurationError(f"{where}: expected a JSON object")
        if document.get("format") != FORMAT:
            raise ConfigurationError(
                f"{where}: format {document.get('format')!r} is not {FORMAT}; "
                "fit the parameters again with this release (perf-engine fit)"
            )
        groups: dict[tuple[str, int], FittedGroup] = {}
        for raw in _list(document, "groups", where):
            group = _group(raw, where)
            key = (group.learning_mode, group.sub_topic_id)
            if key in groups:
                raise ConfigurationError(f"{where}: group {key[0]}/{key[1]} appears twice")
            groups[key] = group
        questions: dict[int, int] = {}
        raw_questions = document.get("questions", {})
        if not isinstance(raw_questions, dict):
            raise ConfigurationError(f"{where}: questions must be an object")
        for text, name in raw_questions.items():
            if not (isinstance(text, str) and text.isdigit()) or name not in _NAMES:
                raise ConfigurationError(
                    f"{where}: questions.{text} must map a question id to easy, medium or hard"
                )
            questions[int(text)] = _NAMES.index(name)
        offsets: dict[int, float] = {}
        raw_offsets = document.get("question_offsets", {})
        if not isinstance(raw_offsets, dict):
            raise ConfigurationError(f"{where}: question_offsets must be an object")
        for text, value in raw_offsets.items():
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (isinstance(text, str) and text.isdigit()) or not ok or not math.isfinite(value):
                raise ConfigurationError(
                    f"{where}: question_offsets.{text} must map a question id to a finite number"
                )
            offsets[int(text)] = float(value)
        found = cls(
            groups,
            tuple(_list(document, "kept", where)),
            questions,
            dict(document.get("source", {})),
            offsets,
        )
        stated = document.get("version")
        if stated is not None and stated != found.version:
            raise ConfigurationError(
                f"{where}: its content does not match its version {stated!r} (edited by "
                "hand?); fit again, or remove the version line to accept the edit"
            )
        return found


def _list(document: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = document.get(name, [])
    if not isinstance(value, list):
        raise ConfigurationError(f"{where}: {name} must be a list")
    return value


def _group(raw: Any, where: str) -> FittedGroup:
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{where}: every group must be an object")
    mode, sub = raw.get("learning_mode"), raw.get("sub_topic_id")
    if not isinstance(mode, str) or isinstance(sub, bool) or not isinstance(sub, int):
        raise ConfigurationError(f"{where}: a group needs learning_mode and sub_topic_id")
    name = f"{where}: group {mode}/{sub}"

    def probability(value: Any, what: str, *, open_interval: bool) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        number = float(value) if ok else math.nan
        inside = 0 < number < 1 if open_interval else 0 <= number <= 1
        if not inside:
            rule = "strictly between 0 and 1" if open_interval else "from 0 to 1"
            raise ConfigurationError(f"{name}: {what} must be a number {rule}, got {value!r}")
        return number

    def triple(what: str) -> tuple[float, float, float]:
        values = raw.get(what)
        if not isinstance(values, dict) or set(values) != set(_NAMES):
            raise ConfigurationError(f"{name}: {what} must give easy, medium and hard")
        found = [probability(values[d], f"{what}.{d}", open_interval=True) for d in _NAMES]
        return found[0], found[1], found[2]

    guess, slip = triple("guess"), triple("slip")
    for d, g, s in zip(_NAMES, guess, slip, strict=True):
        if not g + s < 1:
            raise ConfigurationError(f"{name}: guess.{d} + slip.{d} must be below 1, got {g + s}")
    return FittedGroup(
        mode,
        sub,
        probability(raw.get("prior"), "prior", open_interval=False),
        probability(raw.get("learn"), "learn", open_interval=False),
        probability(raw.get("forget", 0.0), "forget", open_interval=False),
        guess,
        slip,
        int(raw.get("learners", 0)),
        int(raw.get("attempts", 0)),
        math.nan if raw.get("log_likelihood") is None else float(raw["log_likelihood"]),
    )
