"""``perf-engine fit`` and ``perf-engine evaluate``: the learning parameters fitted to a
platform's history, and its next-answer predictions scored (SPEC 3.2, 3.3).

Both read history as the backfill does (a file, or a database with ``--query`` /
``--table``), keep each scope's distinct attempts in learning order, and take the same
deterministic split of learners (``--split F --part train|test``: a learner is in the
test part when a hash of their ``user_id`` falls below ``F``), so that a platform fits on
some learners and measures on the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd
import xxhash

from performance_engine.metrics.fitting import (
    FitOptions,
    GroupFit,
    Sequences,
    auc,
    fit_groups,
    log_loss,
    question_classes,
    question_offsets,
    rmse,
)
from performance_engine.metrics.model import LearningModel, looked_up
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.params import FittedGroup, ParameterSet
from performance_engine.metrics.sequence import predict_columns

__all__ = [
    "Evaluation",
    "History",
    "evaluate",
    "fit",
    "history_of",
    "in_test_part",
    "predictions",
]

Progress = Callable[[int, int], None]


def in_test_part(user_ids: Any, split: float) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which learners are in the test part: the 64-bit XXH3 of the decimal ``user_id``,
    as a fraction of 2^64, below ``split``."""
    hashes = np.fromiter(
        (xxhash.xxh3_64_intdigest(str(u).encode()) for u in np.asarray(user_ids).tolist()),
        np.float64,
        len(user_ids),
    )
    mask: np.ndarray[Any, np.dtype[np.bool_]] = hashes / 2.0**64 < split
    return mask


@dataclass(frozen=True, slots=True)
class History:
    """Distinct attempts in learning order, per scope; groups are (mode, sub-topic)."""

    frame: pd.DataFrame  # the rows, sorted by scope then learning order
    offsets: np.ndarray[Any, np.dtype[np.int64]]  # per scope
    scope_group: np.ndarray[Any, np.dtype[np.int64]]
    groups: list[tuple[str, int]]

    def sequences(self, classes: dict[int, int] | None = None) -> Sequences:
        """The answers as EM's input: difficulty classes as given, or the fitted question
        classes where a question has one."""
        difficulty = looked_up(
            classes or {},
            self.frame["question_id"].to_numpy(np.int64),
            self.frame["difficulty"].to_numpy(np.int64),
        )
        return Sequences(
            self.offsets,
            self.scope_group,
            difficulty,
            self.frame["is_correct"].to_numpy(bool),
        )

    def learners(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Distinct learners per group."""
        firsts = self.frame.iloc[self.offsets[:-1]]
        pairs = pd.DataFrame({"g": self.scope_group, "u": firsts["user_id"].to_numpy()})
        counts = pairs.drop_duplicates().groupby("g").size()
        found = counts.reindex(range(len(self.groups)), fill_value=0).to_numpy(np.int64)
        return np.asarray(found, dtype=np.int64)


def history_of(frame: pd.DataFrame, *, split: float | None = None, part: str = "train") -> History:
    """A normalised frame (``metrics.frame``) as sequences: each scope's distinct attempts
    (the first of an ``attempt_id``) in learning order; with ``split``, only the learners
    of ``part``."""
    if split is not None:
        test = in_test_part(frame["user_id"].to_numpy(), split)
        frame = frame[test if part == "test" else ~test]
    keys = ["user_id", "sub_topic_id", "learning_mode"]
    frame = frame.drop_duplicates([*keys, "attempt_id"], keep="first")
    order = frame.assign(_id=frame["attempt_id"].map(lambda i: i.encode("utf-8", "surrogatepass")))
    frame = order.sort_values([*keys, "occurred_at", "_id"], kind="stable").drop(columns="_id")
    frame = frame.reset_index(drop=True)
    scope_codes = frame.groupby(keys, sort=False).ngroup().to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, scope_codes[1:] != scope_codes[:-1]])
    offsets = np.r_[starts, len(frame)].astype(np.int64)
    firsts = frame.iloc[starts]
    group_keys = list(zip(firsts["learning_mode"], firsts["sub_topic_id"].astype(int), strict=True))
    groups = sorted(set(group_keys))
    index = {g: i for i, g in enumerate(groups)}
    scope_group = np.array([index[g] for g in group_keys], dtype=np.int64)
    return History(frame, offsets, scope_group, groups)


def fit(
    history: History,
    modes: LearningModes,
    *,
    options: FitOptions | None = None,
    min_learners: int = 50,
    min_attempts: int = 500,
    per_question: bool = False,
    source: dict[str, Any] | None = None,
    progress: Progress = lambda done, total: None,
) -> ParameterSet:
    """Fit every (mode, sub-topic) with enough data; the others keep their mode's."""
    options = options or FitOptions()
    classes: dict[int, int] = {}
    if per_question:
        rows = history.frame
        row_group = np.repeat(history.scope_group, np.diff(history.offsets))
        classes = question_classes(
            rows["question_id"].to_numpy(np.int64), row_group, rows["is_correct"].to_numpy(bool)
        )
    sequences = history.sequences(classes)
    learners = history.learners()
    attempts = np.bincount(
        history.scope_group, weights=np.diff(history.offsets), minlength=len(history.groups)
    ).astype(np.int64)
    enough = (learners >= min_learners) & (attempts >= min_attempts)
    kept: list[dict[str, Any]] = []
    for g, (mode, sub) in enumerate(history.groups):
        if not enough[g]:
            reason = (
                f"fewer than {min_learners} learners"
                if learners[g] < min_learners
                else f"fewer than {min_attempts} attempts"
            )
            kept.append(
                {
                    "learning_mode": mode,
                    "sub_topic_id": sub,
                    "learners": int(learners[g]),
                    "attempts": int(attempts[g]),
                    "reason": reason + "; the mode's parameters are kept",
                }
            )
    fitted = np.flatnonzero(enough)
    groups: dict[tuple[str, int], FittedGroup] = {}
    if len(fitted):
        remap = np.full(len(history.groups), -1, dtype=np.int64)
        remap[fitted] = np.arange(len(fitted))
        chosen = remap[sequences.group] >= 0
        lengths = np.diff(history.offsets)[chosen]
        answers = np.repeat(chosen, np.diff(history.offsets))
        subset = Sequences(
            np.r_[0, np.cumsum(lengths)].astype(np.int64),
            remap[sequences.group][chosen],
            sequences.difficulty[answers],
            sequences.correct[answers],
        )
        results = fit_groups(subset, len(fitted), options, progress)
        for g, result in zip(fitted.tolist(), results, strict=True):
            mode, sub = history.groups[g]
            groups[(mode, sub)] = _group(mode, sub, result, int(learners[g]))
    offsets: dict[int, float] = {}
    if per_question:  # each question's own offset, on top of its class
        predicted = predictions(
            history, LearningModel(modes, ParameterSet(groups, questions=classes))
        )
        offsets = question_offsets(
            history.frame["question_id"].to_numpy(np.int64), sequences.correct, predicted
        )
    provenance = {
        **(source or {}),
        "engine_version": _engine_version(),
        "fitted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "attempts": len(history.frame),
        "learners": int(history.frame["user_id"].nunique()),
        "first_attempt_ms": int(history.frame["occurred_at"].min()) if len(history.frame) else None,
        "last_attempt_ms": int(history.frame["occurred_at"].max()) if len(history.frame) else None,
        "options": {
            **asdict(options),
            "min_learners": min_learners,
            "min_attempts": min_attempts,
            "per_question": per_question,
        },
        "modes": {mode: _mode_params(modes, mode) for mode, _ in history.groups},
    }
    return ParameterSet(groups, tuple(kept), classes, provenance, offsets)


def predictions(history: History, model: LearningModel) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Each attempt's P(right) from its scope's earlier attempts (SPEC 3.3), as the engine
    predicts it (``metrics.sequence.predict_columns``): each group's parameters, each
    question's class and offset, from ``model``."""
    frame = history.frame
    question = frame["question_id"].to_numpy(np.int64)
    params = [model.params(mode, sub) for mode, sub in history.groups]
    return predict_columns(
        history.offsets,
        model.class_column(question, frame["difficulty"].to_numpy(np.int64)),
        frame["is_correct"].to_numpy(bool),
        model.offset_column(question),
        params,
        history.scope_group,
    )


def _engine_version() -> str:
    try:
        return version("performance-engine")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _group(mode: str, sub: int, result: GroupFit, learners: int) -> FittedGroup:
    return FittedGroup(
        mode,
        sub,
        result.prior,
        result.learn,
        result.forget,
        result.guess,
        result.slip,
        learners,
        result.attempts,
        result.log_likelihood,
    )


def _mode_params(modes: LearningModes, mode: str) -> dict[str, Any]:
    params = modes.params(mode)
    return {"prior": params.prior, "learn": params.learn, "forget": params.forget}


def _modes_version(model: LearningModel, history: History) -> str:
    """The ``params_version`` of the modes' parameters evaluated (one per mode, joined)."""
    versions = sorted({model.params_version(mode) for mode, _ in history.groups})
    return ",".join(versions) or "defaults"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Next-answer predictions scored: each attempt predicted from the earlier ones."""

    count: int
    auc: float
    rmse: float
    log_loss: float
    params_version: str
    attempt_ids: list[str]
    predictions: np.ndarray[Any, np.dtype[np.float64]]

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "auc": None if math.isnan(self.auc) else round(self.auc, 6),
            "rmse": round(self.rmse, 6),
            "log_loss": round(self.log_loss, 6),
            "params_version": self.params_version,
        }


def evaluate(history: History, modes: LearningModes, params: ParameterSet | None) -> Evaluation:
    """Every attempt's predicted P(correct) from the scope's earlier attempts, with the
    fitted group's parameters (and question classes) where there are some, else the mode's."""
    model = LearningModel(modes, params)
    predicted = predictions(history, model)
    outcome = history.frame["is_correct"].to_numpy(bool)
    return Evaluation(
        len(outcome),
        auc(outcome, predicted) if len(outcome) else math.nan,
        rmse(outcome, predicted) if len(outcome) else math.nan,
        log_loss(outcome, predicted) if len(outcome) else math.nan,
        params.version if params is not None else _modes_version(model, history),
        history.frame["attempt_id"].tolist(),
        predicted,
    )
