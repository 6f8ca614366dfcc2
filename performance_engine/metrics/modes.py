"""Learning-mode rules: how many correct questions complete each difficulty, and the
parameters of the learning metrics.

Modes are configuration, not code: the settings layer reads the learning-mode file
(``settings.load_learning_modes``) and hands its parsed document to
:meth:`LearningModes.merged`; nothing here reads a file. The built-in rules are
``standard`` 2, ``practice`` 1 and ``mastery`` 3 correct questions per difficulty, each
with the learning parameters of SPEC 3.1 (:data:`metrics.learning.DEFAULT_LEARNING`). A
TOML file can override them or add modes, per difficulty::

    [modes.standard]
    hard = 3            # only hard changes; easy and medium keep 2
    prior = 0.3         # a learning parameter (see metrics.learning.LEARNING_KEYS)
    slip = { hard = 0.2 }

    [modes.exam]        # a new mode
    required = 4        # every difficulty ...
    hard = 5            # ... except hard
    mastery_threshold = 0.98

A new mode without ``required`` and without a value for some difficulty is an error; its
learning parameters start from the defaults. Every value is checked on load, and an error
names the mode and the parameter.
Mode names are lower-case: 1 to 32 of ``a-z 0-9 _ -``, starting with a letter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from performance_engine.errors import ConfigurationError, InvalidAttemptError
from performance_engine.metrics.learning import DEFAULT_LEARNING, LEARNING_KEYS, LearningParams
from performance_engine.metrics.types import DIFFICULTIES, DifficultyEnum, LearningModeType

__all__ = ["DEFAULT_REQUIREMENTS", "MODE_NAME_RE", "LearningModes"]

#: What a learning-mode name may be (also what keeps it safe inside a Redis key).
MODE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

DEFAULT_REQUIREMENTS: Mapping[str, int] = {
    LearningModeType.STANDARD.value: 2,
    LearningModeType.PRACTICE.value: 1,
    LearningModeType.MASTERY.value: 3,
}


@dataclass(frozen=True, slots=True)
class LearningModes:
    """The configured modes: per-difficulty thresholds, and learning parameters (the
    defaults for a mode ``learning`` does not name)."""

    rules: Mapping[str, tuple[int, int, int]]
    learning: Mapping[str, LearningParams] = field(default_factory=dict)

    @classmethod
    def default(cls) -> LearningModes:
        return cls({mode: (n, n, n) for mode, n in DEFAULT_REQUIREMENTS.items()})

    @classmethod
    def uniform(cls, required: int) -> LearningModes:
        """Every built-in mode and difficulty needs ``required`` (the seed's single number)."""
        _check_count(required, "required_correct_questions")
        return cls(dict.fromkeys(DEFAULT_REQUIREMENTS, (required,) * 3))

    def merged(self, document: Mapping[str, Any], *, source: str = "rules") -> LearningModes:
        """These rules overridden and extended by a parsed TOML document."""
        modes = document.get("modes")
        unknown = set(document) - {"modes"}
        if unknown or not isinstance(modes, dict):
            raise ConfigurationError(
                f"{source}: expected only [modes.<name>] tables, found {sorted(unknown) or 'none'}"
            )
        rules = dict(self.rules)
        learning = dict(self.learning)
        for name, table in modes.items():
            if not isinstance(name, str) or not MODE_NAME_RE.fullmatch(name):
                raise ConfigurationError(
                    f"{source}: mode name {name!r} is invalid; use 1 to 32 of a-z 0-9 _ -, "
                    "starting with a letter"
                )
            if not isinstance(table, dict):
                raise ConfigurationError(f"{source}: [modes.{name}] must be a table")
            rules[name] = _mode_rule(name, table, rules.get(name), source)
            params = self.params(name).merged(table, f"{source}: modes.{name}")
            if params == DEFAULT_LEARNING:
                learning.pop(name, None)
            else:
                learning[name] = params
        return LearningModes(rules, learning)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.rules))

    def normalise(self, mode: str) -> str:
        """The canonical (lower-case) name of a configured mode, or InvalidAttemptError."""
        name = mode.lower() if isinstance(mode, str) else mode
        if isinstance(name, str) and name in self.rules:
            return name
        raise InvalidAttemptError(
            "unknown_learning_mode",
            f"learning_mode {mode!r} is not configured; known modes: {', '.join(self.names)}",
        )

    def params(self, mode: str) -> LearningParams:
        """The learning parameters of a mode."""
        return self.learning.get(mode, DEFAULT_LEARNING)

    def required(self, mode: str, difficulty: DifficultyEnum | int) -> int:
        index = difficulty if isinstance(difficulty, int) else DIFFICULTIES.index(difficulty)
        return self.rules[mode][index]


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise ConfigurationError(f"{what} must be a whole number from 0 to 1000000, got {value!r}")
    return value


def _mode_rule(
    name: str, table: Mapping[str, Any], base: tuple[int, int, int] | None, source: str
) -> tuple[int, int, int]:
    allowed = {"required", *(d.value for d in DIFFICULTIES), *LEARNING_KEYS}
    extra = set(table) - allowed
    if extra:
        raise ConfigurationError(
            f"{source}: [modes.{name}] has unknown keys {sorted(extra)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    default = table.get("required")
    values: list[int] = []
    for index, difficulty in enumerate(DIFFICULTIES):
        raw = table.get(difficulty.value, default)
        if raw is None:
            if base is None:
                raise ConfigurationError(
                    f"{source}: new mode {name!r} needs 'required' or a value for "
                    f"'{difficulty.value}'"
                )
            values.append(base[index])
        else:
            values.append(_check_count(raw, f"{source}: modes.{name}.{difficulty.value}"))
    return values[0], values[1], values[2]
