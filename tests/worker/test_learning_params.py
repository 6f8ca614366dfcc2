"""Fitted learning parameters in a running engine (real broker, Redis, worker): a
parameter file, a set published while the worker runs (used from the next batch on),
``perf-engine refold``, and the predictions served over HTTP and by the read API, equal
to ``evaluate``'s."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from performance_engine import PerformanceStats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import normalise_frame
from performance_engine.metrics.model import LearningModel
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.params import FittedGroup, ParameterSet
from performance_engine.metrics.types import ScopeKey
from performance_engine.settings import Settings
from performance_engine.store.stats_store import StatsStore
from performance_engine.tools.learning import history_of, predictions
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import oracle, results, run_cli, wait_for_oracle
from tests.services import attempt_records, produce, read_topic, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def parameter_set(seed: float) -> ParameterSet:
    """Fitted groups for two sub-topics of the simulator, a question class and offsets."""
    groups = {
        ("standard", 101): FittedGroup(
            "standard", 101, 0.3 + seed, 0.15, 0.01, (0.3, 0.2, 0.1), (0.1, 0.12, 0.2),
            80, 2000, -900.0,
        ),
        ("practice", 102): FittedGroup(
            "practice", 102, 0.25, 0.05 + seed, 0.0, (0.25, 0.2, 0.15), (0.05, 0.1, 0.3),
            70, 1500, -700.0,
        ),
    }  # fmt: skip
    return ParameterSet(
        groups,
        (),
        {1010001: 2, 1021001: 0},
        {"history": f"test set {seed}"},
        {1010002: -0.7, 1031001: 0.9},
    )


def write(path: Path, params: ParameterSet) -> Path:
    path.write_text(json.dumps(params.to_dict()), encoding="utf-8")
    return path


def stored_json(settings: Settings, scopes: list[ScopeKey]) -> dict[ScopeKey, Any]:
    with StatsStore.from_settings(settings) as store:
        found: dict[ScopeKey, Any] = results({s: store.stats(s) for s in scopes})
        return found


def scope_of(row: dict[str, Any]) -> ScopeKey:
    return ScopeKey(row["user_id"], row["sub_topic_id"], row["learning_mode"])


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        found: dict[str, Any] = json.loads(response.read())
        return found


def test_file_then_published_set_then_refold_then_predictions(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    first, second = parameter_set(0.0), parameter_set(0.2)
    settings = dataclasses.replace(
        stream_settings, learning_params_path=write(tmp_path / "first.json", first)
    )
    worker = workers(settings)
    base = f"http://127.0.0.1:{worker.env['PERF_ENGINE_WEB_PORT']}"

    # The parameter file is in force.
    rows_a = generate_attempts(900, users=8, sub_topics=3, seed=5)
    produce(settings.kafka_bootstrap, settings.attempts_topic, attempt_records(rows_a))
    with_first = MetricsCalculator(parameters=first)
    wait_for_oracle(settings, oracle(rows_a, with_first))
    scopes = sorted(oracle(rows_a))
    assert {s.learning.params_version for s in stored_json(settings, scopes).values()} == {
        first.version
    }

    # A set published while the worker runs is used from its next batch on.
    done = run_cli(settings, "params", "publish", str(write(tmp_path / "second.json", second)))
    assert done.returncode == 0, done.stderr
    assert second.version in done.stdout
    rows_b = [r for r in generate_attempts(900, users=8, sub_topics=3, seed=6) if r["user_id"] <= 4]
    produce(settings.kafka_bootstrap, settings.attempts_topic, attempt_records(rows_b))
    with_second = MetricsCalculator(parameters=second)
    expected = oracle([*rows_a, *rows_b], with_second)
    touched = sorted(oracle(rows_b))

    def touched_current() -> bool:
        found = stored_json(settings, touched)
        return all(found[s].version == expected[s].version for s in touched)

    wait_until(touched_current, 120, "the worker to apply the second batch of attempts")
    found = stored_json(settings, touched)
    assert found == {s: expected[s] for s in touched}
    untouched = [s for s in scopes if s not in touched]
    assert untouched
    assert {
        found.learning.params_version for found in stored_json(settings, untouched).values()
    } == {first.version}  # refolded at their next attempt, or now:

    done = run_cli(settings, "refold", "--quiet")
    assert done.returncode == 0, done.stderr
    every = sorted(expected)
    assert stored_json(settings, every) == expected
    # Each refolded scope's new stats were published, at the revision stored.
    events = read_topic(settings.kafka_bootstrap, settings.stats_topic)
    last: dict[str, Any] = {}
    for record in events:
        last[record.key.decode()] = json.loads(record.value)
    with StatsStore.from_settings(settings) as store:
        for scope in untouched:
            event = last[str(scope)]
            assert event["source"]["topic"] == "perf-engine refold"
            assert event["stats"]["revision"] == store.stats(scope).revision
            assert event["stats"]["learning"]["params_version"] == second.version
    again = run_cli(settings, "refold", "--quiet")
    assert "refolded 0 of" in again.stdout  # nothing left to do

    # Predictions: HTTP, the read API and evaluate give the same number.
    modes = LearningModes.default()
    history_rows = [*rows_a, *rows_b]
    for scope in every[:6]:
        for question, difficulty in ((1010001, "easy"), (1010002, "medium"), (999, "hard")):
            served = get(
                f"{base}/predict/{scope.user_id}/{scope.sub_topic_id}/{scope.learning_mode}"
                f"?question_id={question}&difficulty={difficulty}"
            )
            read = PerformanceStats.predict(
                scope.user_id, scope.sub_topic_id, scope.learning_mode, question, difficulty,
                settings=settings,
            )  # fmt: skip
            probe = {
                "attempt_id": "probe",
                "user_id": scope.user_id,
                "sub_topic_id": scope.sub_topic_id,
                "learning_mode": scope.learning_mode,
                "question_id": question,
                "difficulty": difficulty,
                "is_correct": True,
                "occurred_at": 4_102_444_800_000,  # 2100: after every attempt
            }
            mine = [r for r in history_rows if scope_of(r) == scope]
            frame = normalise_frame(pd.DataFrame([*mine, probe]), modes).frame
            history = history_of(frame)
            scored = predictions(history, LearningModel(modes, second))
            at = history.frame.index[history.frame["attempt_id"] == "probe"][0]
            assert served == {
                "p": scored[at],
                "params_version": second.version,
                "version": expected[scope].version,
            }
            assert (read.p, read.params_version, read.version) == (
                served["p"], served["params_version"], served["version"]
            )  # fmt: skip
    # A scope with no attempts yet: the prior's prediction; a bad request: a JSON 400.
    new = get(f"{base}/predict/424242/101/standard?question_id=5&difficulty=medium")
    group = second.groups[("standard", 101)]
    prior = group.prior * (1 - group.slip[1]) + (1 - group.prior) * group.guess[1]
    assert new["version"] == 0
    assert new["p"] == pytest.approx(prior, abs=1e-12)
    for bad in (
        "1/101/standard?question_id=5&difficulty=extreme",
        "1/101/nosuch?question_id=5&difficulty=easy",
        "1/101/standard?difficulty=easy",
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/predict/{bad}", timeout=10)
        assert refused.value.code == 400, bad
        assert json.loads(refused.value.read())["error"]

    # Withdrawn: the file's set is in force again (for the next write or refold).
    done = run_cli(settings, "params", "withdraw")
    assert done.stdout.strip() == "withdrawn"
    done = run_cli(settings, "params", "show")
    assert first.version in done.stdout
