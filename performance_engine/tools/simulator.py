"""Synthetic attempts: a seedable model of learners who improve with practice.

Each learner has a skill per difficulty; every attempt raises it a little, so accuracy
climbs over time and hard questions take more tries. The same seed gives the same
attempts. Used by ``perf-engine simulate``, the tests and the benchmarks.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

__all__ = [
    "KnowledgeTracingLearners",
    "LearnerModel",
    "SimulationReport",
    "attempts_frame",
    "generate_attempts",
    "simulate",
]

_BASE_SKILL = {"easy": 0.65, "medium": 0.45, "hard": 0.25}
_DIFFICULTY_WEIGHTS = (("easy", 0.45), ("medium", 0.35), ("hard", 0.20))
START_MS = 1_795_510_800_000  # 2026-11-24T09:00:00Z


@dataclass(slots=True)
class LearnerModel:
    """The simulated platform: ``users`` learners over ``sub_topics`` sub-topics."""

    users: int = 100
    sub_topics: int = 5
    modes: tuple[str, ...] = ("standard", "practice", "mastery")
    questions_per_difficulty: int = 20
    seed: int = 0
    start_ms: int = START_MS
    _rng: random.Random = field(init=False, repr=False)
    _skill: dict[tuple[int, str], float] = field(init=False, repr=False, default_factory=dict)
    _tries: dict[tuple[int, int], int] = field(init=False, repr=False, default_factory=dict)
    _count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def next_attempt(self) -> dict[str, Any]:
        """One more attempt as a SPEC 2 JSON object (a dict)."""
        rng = self._rng
        self._count += 1
        user = rng.randint(1, self.users)
        sub_topic = 100 + rng.randint(1, self.sub_topics)
        difficulty = rng.choices(
            [d for d, _ in _DIFFICULTY_WEIGHTS], [w for _, w in _DIFFICULTY_WEIGHTS]
        )[0]
        offset = {"easy": 0, "medium": 1000, "hard": 2000}[difficulty]
        question = sub_topic * 10_000 + offset + rng.randint(1, self.questions_per_difficulty)
        skill = self._skill.get((user, difficulty), _BASE_SKILL[difficulty])
        self._skill[user, difficulty] = min(0.95, skill + 0.004)  # practice helps
        tries = self._tries.get((user, question), 0) + 1
        self._tries[user, question] = tries
        return {
            "attempt_id": f"s{self.seed}-{self._count}",
            "user_id": user,
            "sub_topic_id": sub_topic,
            "learning_mode": self.modes[(user + sub_topic) % len(self.modes)],
            "question_id": question,
            "difficulty": difficulty,
            "is_correct": rng.random() < skill,
            "occurred_at": self.start_ms + self._count * 1000 + rng.randint(0, 999),
            "attempt_number": tries,
            "time_spent_ms": rng.randint(2_000, 120_000),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next_attempt()


@dataclass(slots=True)
class KnowledgeTracingLearners:
    """Learners who follow Bayesian Knowledge Tracing exactly (the demo's stated model).

    Per (learner, sub-topic) the skill is either learned or not. It starts learned with
    probability ``prior`` (each learner's own, drawn around it), and after each answer an
    unlearned skill becomes learned with probability ``learn``. A learner whose skill is
    learned answers a question of difficulty d right with probability ``1 - slip[d]``,
    else with ``guess[d]``. So these learners' answers are what the engine's model
    assumes, and parameters fitted on them can be checked against the ones stated here.
    ``first_user`` numbers the learners (a warm-up cohort apart from the live one).
    """

    users: int = 100
    sub_topics: int = 2
    modes: tuple[str, ...] = ("standard", "practice", "mastery")
    questions_per_difficulty: int = 20
    seed: int = 0
    first_user: int = 1
    prior: float = 0.25
    learn: float = 0.06
    guess: tuple[float, float, float] = (0.35, 0.25, 0.15)
    slip: tuple[float, float, float] = (0.08, 0.12, 0.2)
    start_ms: int = START_MS
    _rng: random.Random = field(init=False, repr=False)
    _known: dict[tuple[int, int], bool] = field(init=False, repr=False, default_factory=dict)
    _priors: dict[int, float] = field(init=False, repr=False, default_factory=dict)
    _tries: dict[tuple[int, int], int] = field(init=False, repr=False, default_factory=dict)
    _count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def next_attempt(self) -> dict[str, Any]:
        rng = self._rng
        self._count += 1
        user = self.first_user + rng.randrange(self.users)
        sub_topic = 100 + rng.randint(1, self.sub_topics)
        d = rng.choices((0, 1, 2), [w for _, w in _DIFFICULTY_WEIGHTS])[0]
        difficulty = _DIFFICULTY_WEIGHTS[d][0]
        question = sub_topic * 10_000 + d * 1000 + rng.randint(1, self.questions_per_difficulty)
        prior = self._priors.get(user)
        if prior is None:  # each learner's own head start, around the stated prior
            prior = self._priors[user] = min(0.9, max(0.01, rng.betavariate(2, 2 / self.prior - 2)))
        known = self._known.get((user, sub_topic))
        if known is None:
            known = rng.random() < prior
        right = rng.random() < ((1 - self.slip[d]) if known else self.guess[d])
        self._known[user, sub_topic] = known or rng.random() < self.learn
        tries = self._tries.get((user, question), 0) + 1
        self._tries[user, question] = tries
        return {
            "attempt_id": f"k{self.seed}-{self._count}",
            "user_id": user,
            "sub_topic_id": sub_topic,
            "learning_mode": self.modes[(user + sub_topic) % len(self.modes)],
            "question_id": question,
            "difficulty": difficulty,
            "is_correct": right,
            "occurred_at": self.start_ms + self._count * 1000 + rng.randint(0, 999),
            "attempt_number": tries,
            "time_spent_ms": rng.randint(2_000, 120_000),
        }

    def known(self, user: int, sub_topic: int) -> bool | None:
        """Whether the learner has learned the sub-topic's skill (None: not met yet)."""
        return self._known.get((user, sub_topic))


class _Model(Protocol):
    seed: int

    def next_attempt(self) -> dict[str, Any]: ...


def generate_attempts(count: int, **model: Any) -> list[dict[str, Any]]:
    """``count`` attempts from a :class:`LearnerModel` built with ``model``."""
    learners = LearnerModel(**model)
    return [learners.next_attempt() for _ in range(count)]


def attempts_frame(
    count: int, users: int, *, seed: int = 0, sub_topics: int = 3, duplicates: float = 0.0
) -> pd.DataFrame:
    """A large raw attempts frame, generated vectorised (for backfill tests and benchmarks).

    ``duplicates`` is the share of rows that repeat an earlier row's ``attempt_id`` and
    content (a redelivery). Uniform over learners; not the learning model above.
    """
    rng = np.random.default_rng(seed)
    user = rng.integers(1, users + 1, count)
    sub_topic = 100 + rng.integers(1, sub_topics + 1, count)
    difficulty_code = rng.choice(3, count, p=[0.45, 0.35, 0.20])
    question = sub_topic * 10_000 + difficulty_code * 1000 + rng.integers(1, 21, count)
    correct = rng.random(count) < np.array([0.7, 0.5, 0.3])[difficulty_code]
    occurred = START_MS + np.arange(count, dtype=np.int64) * 7 + rng.integers(0, 7, count)
    ids = np.char.add(f"b{seed}-", np.arange(count).astype(str)).astype(object)
    frame = pd.DataFrame(
        {
            "attempt_id": ids,
            "user_id": user,
            "sub_topic_id": sub_topic,
            "learning_mode": np.array(["standard", "practice", "mastery"], dtype=object)[
                (user + sub_topic) % 3
            ],
            "question_id": question,
            "difficulty": np.array(["easy", "medium", "hard"], dtype=object)[difficulty_code],
            "is_correct": correct,
            "occurred_at": occurred,
        }
    )
    n_dup = int(count * duplicates)
    if n_dup:
        source = rng.integers(0, count, n_dup)
        frame = pd.concat([frame, frame.iloc[source]], ignore_index=True)
        frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    return frame


@dataclass(slots=True)
class SimulationReport:
    sent: int = 0
    malformed: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        return (
            f"sent {self.sent} attempts ({self.malformed} malformed) in {self.seconds:.1f}s, "
            f"{rate:.0f}/s"
        )


class _Emitter(Protocol):
    def emit(self, attempt: Mapping[str, Any]) -> Any: ...
    def emit_raw(self, key: bytes | None, value: bytes | None) -> Any: ...
    def flush(self, timeout: float | None = None) -> None: ...


def simulate(
    producer: _Emitter,
    model: _Model,
    *,
    rate: float,
    duration: float | None = None,
    count: int | None = None,
    invalid_share: float = 0.0,
    stop: Callable[[], bool] = lambda: False,
) -> SimulationReport:
    """Publish the model's attempts at ``rate`` per second until duration, count or stop()."""
    report = SimulationReport()
    rng = random.Random(model.seed + 1)
    started = time.monotonic()
    tick = 0.05
    due = 0.0
    try:
        while not stop():
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            due = rate * elapsed - report.sent - report.malformed
            for _ in range(int(due)):
                if count is not None and report.sent + report.malformed >= count:
                    return report
                if invalid_share and rng.random() < invalid_share:
                    producer.emit_raw(b"0", _MALFORMED[rng.randrange(len(_MALFORMED))])
                    report.malformed += 1
                else:
                    producer.emit(model.next_attempt())
                    report.sent += 1
            if count is not None and report.sent + report.malformed >= count:
                break
            time.sleep(tick)
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush()
        report.seconds = time.monotonic() - started
    return report


_MALFORMED = (
    b"{not json",
    b'{"attempt_id": "x", "user_id": "seven"}',
    b'{"attempt_id": "x", "user_id": 1, "sub_topic_id": 1, "learning_mode": "cram", '
    b'"question_id": 1, "difficulty": "easy", "is_correct": true, "occurred_at": 0}',
)
