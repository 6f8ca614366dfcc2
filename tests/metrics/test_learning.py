"""The learning block (SPEC 3.1): the SPEC example, hand-worked formulas, arrival order,
parameters from the mode file, custom sequential metrics, and states of the old format."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.errors import ConfigurationError
from performance_engine.metrics.attempt import Attempt
from performance_engine.metrics.batch import compute_states
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import attempts_to_frame
from performance_engine.metrics.history import entry_of, learning_key
from performance_engine.metrics.learning import fold_learning, learning_stats
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.types import DifficultyEnum, LearningStats, ScopeKey
from performance_engine.settings import load_learning_modes
from performance_engine.store.layout import legacy_stats, unpack_scope
from tests.example_metrics import WrongInARow
from tests.helpers import ROOT, SPILL_LIMITS, StreamModel, attempt, spec_attempts
from tests.strategies import attempts

E, M, H = DifficultyEnum.EASY, DifficultyEnum.MEDIUM, DifficultyEnum.HARD
START = 1_795_510_800_000  # 2026-11-24T09:00:00Z


def spec_json(*, revision: bool = False) -> dict[str, Any]:
    """The JSON example of SPEC section 4, as printed in docs/SPEC.md; without its
    ``revision`` unless asked (how a writer batched the attempts, not a result)."""
    text = (ROOT / "docs" / "SPEC.md").read_text(encoding="utf-8")
    section = text[text.index("## 4.") :]
    block = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    assert block is not None
    parsed: dict[str, Any] = json.loads(block.group(1))
    if not revision:
        parsed.pop("revision")
    return parsed


def learning_of(
    items: list[Attempt], calculator: MetricsCalculator | None = None
) -> LearningStats | None:
    (stats,) = StreamModel(calculator or MetricsCalculator()).apply_each(items).stats().values()
    return stats.learning


def results(stats_json: bytes) -> dict[str, Any]:
    """The stats' results: everything but ``revision`` (how a writer batched them)."""
    found: dict[str, Any] = json.loads(stats_json)
    found.pop("revision")
    return found


def test_the_spec_example_scope_gives_the_printed_stats() -> None:
    items = spec_attempts()
    expected = spec_json()
    assert spec_json(revision=True)["revision"] == 7  # applied one at a time: seven writes
    (stats,) = StreamModel(MetricsCalculator()).apply_each(items).stats().values()
    assert results(stats.to_json()) == expected
    batch = compute_states(attempts_to_frame(items), MetricsCalculator())
    assert [results(j) for j in batch.stats_json(MetricsCalculator())] == [expected]


def test_the_spec_example_in_every_arrival_order_of_a_sample() -> None:
    items = spec_attempts()
    expected = spec_json()["learning"]
    orders = [
        list(reversed(items)),
        *random.Random(7).sample(list(itertools.permutations(items)), 200),
    ]
    for order in orders:
        learning = learning_of(list(order))
        assert learning is not None
        assert msgspec.to_builtins(learning) == expected


def params(**table: Any) -> MetricsCalculator:
    modes = LearningModes.default().merged({"modes": {"standard": table}})
    return MetricsCalculator(learning_modes=modes)


def test_a_correct_answer_raises_mastery_and_a_wrong_one_lowers_it_when_slip_is_small() -> None:
    calc = params(prior=0.5, learn=0.0, guess=0.25, slip=0.05)
    right = learning_of([attempt(is_correct=True)], calc)
    wrong = learning_of([attempt(is_correct=False)], calc)
    assert right is not None
    assert wrong is not None
    # correct: 0.5*0.95 / (0.5*0.95 + 0.5*0.25) = 0.475/0.6 = 0.791666...
    assert right.mastery_probability == 0.7917
    # wrong: 0.5*0.05 / (0.5*0.05 + 0.5*0.75) = 0.025/0.4 = 0.0625
    assert wrong.mastery_probability == 0.0625


def test_forget_pulls_mastery_down_after_the_update() -> None:
    calc = params(prior=0.5, learn=0.0, forget=0.2, guess=0.2, slip=0.1)
    learning = learning_of([attempt(is_correct=True)], calc)
    assert learning is not None
    # q = 0.45 / (0.45 + 0.1) = 9/11; p = q * (1 - 0.2) + (1 - q) * 0 = 0.654545...
    assert learning.mastery_probability == 0.6545
    # predicted easy: p * 0.9 + (1 - p) * 0.2 = 0.589090... + 0.069090... = 0.658181...
    assert learning.predicted_correct[E] == 0.6582
    assert learning.recommended_difficulty is E  # none reaches 0.7: easy


def test_learning_moves_an_unknown_skill_towards_known() -> None:
    calc = params(prior=0.0, learn=0.25)
    learning = learning_of([attempt(is_correct=False)], calc)
    assert learning is not None
    # p = 0: q = 0 whatever the answer; p = 0 * 1 + 1 * 0.25
    assert learning.mastery_probability == 0.25


def test_streaks_broken_and_rebuilt() -> None:
    answers = [True, True, True, False, True, True, False, True]
    items = [attempt(is_correct=c, occurred_at=START + i) for i, c in enumerate(answers)]
    learning = learning_of(list(reversed(items)))
    assert learning is not None
    assert (learning.current_streak, learning.longest_streak) == (1, 3)
    learning = learning_of(items[:6])
    assert learning is not None
    assert (learning.current_streak, learning.longest_streak) == (2, 3)
    learning = learning_of(items[:4])
    assert learning is not None
    assert (learning.current_streak, learning.longest_streak) == (0, 3)


def test_first_attempt_accuracy_counts_a_retried_question_by_its_first_try() -> None:
    items = [
        attempt(question_id=1, is_correct=False, occurred_at=START),
        attempt(question_id=1, is_correct=True, occurred_at=START + 1),  # a retry
        attempt(question_id=2, is_correct=True, occurred_at=START + 2),
        attempt(question_id=2, difficulty="hard", is_correct=False, occurred_at=START + 3),
        attempt(question_id=3, difficulty="hard", is_correct=True, occurred_at=START + 4),
        attempt(question_id=3, difficulty="hard", is_correct=True, occurred_at=START + 5),
    ]
    learning = learning_of(list(reversed(items)))
    assert learning is not None
    assert learning.first_attempt_accuracy == {E: 0.5, M: None, H: 0.5}


def test_recent_accuracy_weights_the_latest_answers() -> None:
    items = [attempt(is_correct=c, occurred_at=START + i) for i, c in enumerate([True, False])]
    learning = learning_of(items, params(ewma_alpha=0.5, ewma_prior=0.0))
    assert learning is not None
    # e = 0.5*1 + 0.5*0 = 0.5, then 0.5*0 + 0.5*0.5 = 0.25
    assert learning.recent_accuracy == 0.25


def test_mastered_and_the_recommendation_follow_practice() -> None:
    items = [
        attempt(question_id=q, difficulty="hard", is_correct=True, occurred_at=START + q)
        for q in range(1, 9)
    ]
    early = learning_of(items[:1])
    late = learning_of(items)
    assert early is not None
    assert late is not None
    assert (early.mastered, early.recommended_difficulty) == (False, E)
    assert late.mastered is True
    assert late.mastery_probability >= 0.95
    assert late.recommended_difficulty is H


def test_a_mode_can_tune_its_parameters() -> None:
    strict = params(mastery_threshold=0.999, target_success=0.99)
    # p after four correct easy answers: 0.5385, 0.8344, 0.9553, 0.9891
    items = [attempt(question_id=q, is_correct=True, occurred_at=START + q) for q in range(1, 5)]
    default = learning_of(items)
    tuned = learning_of(items, strict)
    assert default is not None
    assert tuned is not None
    assert (default.mastered, tuned.mastered) == (True, False)
    assert tuned.recommended_difficulty is E


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("prior = 1.5", r"f\.toml: modes\.standard\.prior must be a number from 0 to 1"),
        ("learn = true", r"modes\.standard\.learn must be a number"),
        ("forget = nan", r"modes\.standard\.forget must be a number"),
        ("guess = 0", r"modes\.standard\.guess must be a number strictly between 0 and 1"),
        ("slip = { hard = 1.0 }", r"modes\.standard\.slip\.hard must be a number strictly"),
        ("guess = { extreme = 0.1 }", r"modes\.standard\.guess has unknown difficulties"),
        ("guess = { hard = 0.6 }\nslip = 0.5", r"modes\.standard: guess\.hard \+ slip\.hard"),
        ('mastery_threshold = "high"', r"modes\.standard\.mastery_threshold must be a number"),
        ("prior_knowledge = 0.5", r"\[modes\.standard\] has unknown keys \['prior_knowledge'\]"),
    ],
)
def test_a_mode_file_with_bad_parameters_is_refused(
    tmp_path: Path, table: str, message: str
) -> None:
    path = tmp_path / "f.toml"
    path.write_text(f"[modes.standard]\n{table}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=message) as info:
        load_learning_modes(path)
    assert "\n" not in str(info.value)


def test_parameters_for_a_new_mode_start_from_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "modes.toml"
    path.write_text("[modes.exam]\nrequired = 2\nslip = { hard = 0.3 }\n", encoding="utf-8")
    exam = load_learning_modes(path).params("exam")
    assert (exam.slip, exam.guess, exam.prior) == ((0.05, 0.1, 0.3), (0.25, 0.2, 0.15), 0.2)


# -- arrival order ------------------------------------------------------------------


def reference(items: list[Attempt], calculator: MetricsCalculator) -> dict[ScopeKey, Any]:
    """The learning block of each scope by definition: its distinct attempts (the first of
    each attempt_id in arrival order), sorted into learning order, folded."""
    first: dict[tuple[ScopeKey, str], Attempt] = {}
    for a in items:
        first.setdefault((a.scope, a.attempt_id), a)
    by_scope: dict[ScopeKey, list[Attempt]] = {}
    for (scope, _), a in first.items():
        by_scope.setdefault(scope, []).append(a)
    result = {}
    for scope, group in by_scope.items():
        entries = sorted(map(entry_of, group), key=learning_key)
        p = calculator.learning_modes.params(scope.learning_mode)
        counts = tuple(len({e[2] for e in entries if e[3] == d}) for d in range(3))
        result[scope] = learning_stats(fold_learning(entries, p), p, counts)  # type: ignore[arg-type]
    return result


@settings(max_examples=200, deadline=None)
@given(
    attempts(), st.randoms(use_true_random=False), st.integers(1, 8), st.sampled_from(SPILL_LIMITS)
)
def test_any_arrival_and_batching_gives_the_in_order_fold(
    items: list[Attempt], rng: random.Random, batch: int, limit: int
) -> None:
    calc = MetricsCalculator(history_inline_limit=limit)
    shuffled = list(items)
    rng.shuffle(shuffled)
    model = StreamModel(calc)
    for start in range(0, len(shuffled), batch):
        model.apply(shuffled[start : start + batch])
    got = {scope: stats.learning for scope, stats in model.stats().items()}
    # Duplicates in the strategy repeat the same content, so the first-wins rule
    # gives the same set whichever copy arrives first.
    assert got == reference(items, calc)
    assert compute_states(attempts_to_frame(shuffled), calc).stats(calc) == model.stats()


@pytest.mark.parametrize("limit", SPILL_LIMITS)
def test_a_late_attempt_refolds_the_history_only_then(limit: int) -> None:
    calc = MetricsCalculator(history_inline_limit=limit)
    items = spec_attempts()
    model = StreamModel(calc).apply_each(items[1:])
    assert (model.refolds, model.history_reads) == (0, 0)  # in order: one step each
    model.apply([items[0]])  # the first answer arrives last (an offline client)
    spilled = model.states[items[0].scope].spilled
    assert spilled == (limit < 200)
    assert (model.refolds, model.history_reads) == (1, int(spilled))  # read if in its own key
    (stats,) = model.stats().values()
    assert results(stats.to_json()) == spec_json()


def test_a_custom_sequential_metric_is_exact_under_shuffled_arrival() -> None:
    answers = [False, False, True, False, False, False, True, False]
    items = [attempt(is_correct=c, occurred_at=START + i) for i, c in enumerate(answers)]
    calc = MetricsCalculator()
    calc.register_metrics([WrongInARow()])
    for seed in range(20):
        order = list(items)
        random.Random(seed).shuffle(order)
        (stats,) = StreamModel(calc).apply_each(order).stats().values()
        assert stats.custom_metrics == {"wrong_in_a_row": 3}
    (batch,) = compute_states(attempts_to_frame(items[::-1]), calc).stats(calc).values()
    assert batch.custom_metrics == {"wrong_in_a_row": 3}


@pytest.mark.parametrize("limit", SPILL_LIMITS)
def test_changed_parameters_or_metrics_are_folded_again_at_the_next_attempt(limit: int) -> None:
    items = spec_attempts()
    before = StreamModel(MetricsCalculator(history_inline_limit=limit)).apply_each(items[:6])
    tuned = LearningModes.default().merged({"modes": {"standard": {"prior": 0.4}}})
    with_metric = MetricsCalculator(history_inline_limit=limit)
    with_metric.register_metrics([WrongInARow()])  # a sequential metric added later
    for calc in (MetricsCalculator(learning_modes=tuned, history_inline_limit=limit), with_metric):
        model = StreamModel(calc)
        model.states = {s: state.copy() for s, state in before.states.items()}
        model.blobs = dict(before.blobs)
        model.apply([items[6]])
        assert model.refolds == 1
        fresh = StreamModel(calc).apply_each(items)
        assert model.states == fresh.states
        assert model.stats() == fresh.stats()


# -- state written by the previous release (format 1) ----------------------------------


@pytest.mark.parametrize("limit", SPILL_LIMITS)
def test_a_format_1_state_reports_learning_unknown_until_its_history_is_rebuilt(
    limit: int,
) -> None:
    """tests/data/state-format-1.bin: the SPEC example's first five attempts, as the first
    release stored them (no history)."""
    value = (ROOT / "tests" / "data" / "state-format-1.bin").read_bytes()
    state, stats_json = unpack_scope(value), legacy_stats(value)
    assert (state.version, state.history) == (5, 0)
    assert b'"learning"' not in stats_json  # the old stats JSON has no block at all
    calc = MetricsCalculator(history_inline_limit=limit)
    scope = ScopeKey(123, 456, "standard")
    model = StreamModel(calc)
    model.states[scope] = state
    items = spec_attempts()
    model.apply(items[5:])  # the stream goes on after the upgrade
    (stats,) = model.stats().values()
    assert (stats.version, stats.learning) == (7, None)  # counted, never a guessed block
    assert model.history_reads == 0
    model.apply(items)  # the whole history again (a backfill or a replay)
    (stats,) = model.stats().values()
    assert results(stats.to_json()) == spec_json()
    assert model.states[scope].history == 7


def test_an_incomplete_rebuild_leaves_learning_unknown() -> None:
    state = unpack_scope((ROOT / "tests" / "data" / "state-format-1.bin").read_bytes())
    calc = MetricsCalculator()
    model = StreamModel(calc)
    scope = ScopeKey(123, 456, "standard")
    model.states[scope] = state
    model.apply(spec_attempts()[1:])  # a-1 is missing from what the platform sent
    (stats,) = model.stats().values()
    assert (stats.version, stats.learning) == (7, None)
    model.apply(spec_attempts()[:1])
    (stats,) = model.stats().values()
    assert results(stats.to_json()) == spec_json()


def test_the_watch_line_shows_mastery_and_the_next_difficulty() -> None:
    from performance_engine.tools.cli import _update_line

    (stats,) = StreamModel(MetricsCalculator()).apply_each(spec_attempts()).stats().values()
    assert _update_line(stats).endswith("passed easy, mastery 72%, next medium")
    unknown = msgspec.structs.replace(stats, learning=None)
    assert _update_line(unknown).endswith("passed easy, mastery unknown")
