"""The learning parameters in use (SPEC 3.2, 3.3): the modes' and, when given, a fitted set.

Precedence, per scope: the fitted set's (mode, sub-topic) group > the learning-mode
file's table for the mode > the defaults of SPEC 3.1. The thresholds (``mastery_threshold``,
``target_success``) and the recent-accuracy weights always come from the mode.

A fitted set may also hold, per question, a difficulty class learned from the answers
(whose guess and slip weigh an answer to it, in the fold and in a prediction) and an
offset to the log-odds of a prediction for it. A question the fit never saw uses the
attempt's own difficulty and no offset.

``params_version`` says which parameters a scope's learning values come from: the fitted
set's version whenever a set is in use (its classes and offsets apply to every scope);
else ``mode:<16 hex digits>``, a hash of the mode's learning parameters, when the mode
file sets any; else ``defaults``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from performance_engine.metrics.learning import DEFAULT_LEARNING, LearningParams
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.params import ParameterSet
from performance_engine.metrics.types import ScopeKey

if TYPE_CHECKING:  # numpy is imported where the columns are built: readers never load it
    import numpy as np

    Array = np.ndarray[Any, Any]

__all__ = ["DEFAULTS_VERSION", "LearningModel", "looked_up", "mode_version"]

#: The ``params_version`` of the defaults of SPEC 3.1.
DEFAULTS_VERSION = "defaults"


def mode_version(params: LearningParams) -> str:
    """``mode:`` and 16 hex digits of a hash of a mode's learning parameters."""
    if params == DEFAULT_LEARNING:
        return DEFAULTS_VERSION
    body = msgspec.msgpack.encode(params.as_tuple())
    return "mode:" + hashlib.sha256(body).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class LearningModel:
    """Which learning parameters each scope uses, and each question's class and offset."""

    modes: LearningModes
    fitted: ParameterSet | None = None
    _params: dict[tuple[str, int], LearningParams] = field(default_factory=dict, repr=False)

    @property
    def rules(self) -> Mapping[str, tuple[int, int, int]]:
        return self.modes.rules

    @property
    def fitted_version(self) -> str | None:
        return None if self.fitted is None else self.fitted.version

    def params(self, mode: str, sub_topic_id: int | None) -> LearningParams:
        """A scope's learning parameters (fitted group > mode > defaults); a sub-topic of
        None: the mode's."""
        fitted = self.fitted
        base = self.modes.params(mode)
        if fitted is None or sub_topic_id is None:
            return base
        key = (mode, sub_topic_id)
        found = self._params.get(key)
        if found is None:
            found = self._params[key] = fitted.params(mode, sub_topic_id, base)
        return found

    def params_version(self, mode: str) -> str:
        """``learning.params_version`` of a mode's scopes (see the module's doc)."""
        if self.fitted is not None:
            return self.fitted.version
        return mode_version(self.modes.params(mode))

    @property
    def classes(self) -> Mapping[int, int]:
        """The questions' fitted difficulty classes (empty without)."""
        return {} if self.fitted is None else self.fitted.questions

    def question_class(self, question_id: int, difficulty: int) -> int:
        fitted = self.fitted
        return difficulty if fitted is None else fitted.question_class(question_id, difficulty)

    def question_offset(self, question_id: int) -> float:
        return 0.0 if self.fitted is None else self.fitted.question_offset(question_id)

    def class_column(self, question: Array, difficulty: Array) -> Array:
        """Per row, the class whose guess and slip weigh the answer (vectorised
        :meth:`question_class`)."""
        import numpy as np

        return looked_up(self.classes, question, np.asarray(difficulty, dtype=np.int64))

    def offset_column(self, question: Array) -> Array:
        """Per row, the question's offset to a prediction's log-odds (vectorised
        :meth:`question_offset`)."""
        import numpy as np

        offsets = {} if self.fitted is None else self.fitted.offsets
        return looked_up(offsets, question, np.zeros(len(question), dtype=np.float64))

    def groups(
        self, scopes: Sequence[ScopeKey]
    ) -> tuple[list[LearningParams], list[str], list[tuple[str, int | None]], Array]:
        """The distinct parameter groups of some scopes: their parameters, versions and
        (mode, sub-topic or None) keys, and each scope's group index."""
        import numpy as np

        fitted = self.fitted
        keys: list[tuple[str, int | None]]
        if fitted is None or not fitted.groups:
            names = sorted({scope.learning_mode for scope in scopes})
            code = {name: i for i, name in enumerate(names)}
            index = np.fromiter((code[s.learning_mode] for s in scopes), np.int64, len(scopes))
            keys = [(name, None) for name in names]
        else:
            fitted_keys = fitted.groups.keys()
            found: dict[tuple[str, int | None], int] = {}
            index = np.empty(len(scopes), dtype=np.int64)
            for i, scope in enumerate(scopes):
                key: tuple[str, int | None] = (scope.learning_mode, scope.sub_topic_id)
                if key not in fitted_keys:
                    key = (scope.learning_mode, None)
                at = found.get(key)
                if at is None:
                    at = found[key] = len(found)
                index[i] = at
            keys = list(found)
        params = [self.params(mode, sub) for mode, sub in keys]
        versions = [self.params_version(mode) for mode, _ in keys]
        return params, versions, keys, index


def looked_up(table: Mapping[int, Any], question: Array, default: Array) -> Array:
    """Per row, ``table[question[i]]``, else ``default[i]``, in the dtype of ``default``."""
    import numpy as np

    default = np.asarray(default)
    if not table:
        return default
    ids = np.fromiter(table.keys(), np.int64, len(table))
    values = np.fromiter(table.values(), default.dtype, len(table))
    order = np.argsort(ids)
    ids, values = ids[order], values[order]
    question = np.asarray(question, dtype=np.int64)
    at = np.minimum(np.searchsorted(ids, question), len(ids) - 1)
    found: Array = np.where(ids[at] == question, values[at], default)
    return found
