"""``perf-engine fit`` and ``perf-engine evaluate`` on history files (SPEC 3.2, 3.3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.params import ParameterSet
from performance_engine.settings import Settings
from performance_engine.tools.learning import evaluate, fit, history_of, in_test_part
from tests.helpers import run_cli as run_with
from tests.metrics.test_fitting import TRUTH, simulate

pytestmark = pytest.mark.timeout(120)


def run_cli(*args: str) -> Any:
    """``perf-engine ARGS`` with the default settings (these commands use no service)."""
    return run_with(Settings(), *args)


def history_file(tmp_path: Path, learners: int = 120, answers: int = 25) -> Path:
    """Simulated BKT answers as a history file: sub-topics 1-3 as TRUTH, and sub-topic 4
    with only 10 learners (below the fit's minimum)."""
    rows = []
    data = simulate(TRUTH, learners, answers, seed=3)
    small = simulate(TRUTH[:1], 10, answers, seed=4)
    names = ("easy", "medium", "hard")
    for sub, sequences, base in ((None, data, 0), (4, small, 100_000)):
        for i in range(len(sequences.group)):
            user = base + i + 1
            topic = sub or int(sequences.group[i]) + 1
            for t, r in enumerate(range(sequences.offsets[i], sequences.offsets[i + 1])):
                rows.append(
                    {
                        "attempt_id": f"{user}-{topic}-{t}",
                        "user_id": user,
                        "sub_topic_id": topic,
                        "learning_mode": "standard",
                        "question_id": topic * 1000 + t,
                        "difficulty": names[int(sequences.difficulty[r])],
                        "is_correct": bool(sequences.correct[r]),
                        "occurred_at": 1_700_000_000_000 + 1000 * t,
                    }
                )
    path = tmp_path / "history.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.slow  # runs perf-engine in processes of its own
def test_fit_then_evaluate_on_held_out_learners(tmp_path: Path) -> None:
    history = history_file(tmp_path)
    params = tmp_path / "params.json"
    done = run_cli(
        "fit", str(history), "--out", str(params), "--split", "0.3", "--part", "train", "--quiet"
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {params}" in done.stdout
    found = ParameterSet.from_dict(json.loads(params.read_text()))
    assert sorted(found.groups) == [("standard", 1), ("standard", 2), ("standard", 3)]
    (kept,) = found.kept
    assert kept["sub_topic_id"] == 4
    assert "fewer than 50 learners" in kept["reason"]
    assert found.source["split"] == 0.3
    assert found.source["options"]["min_learners"] == 50
    assert found.source["engine_version"] == "0.1.0"  # pyproject's version
    assert found.source["attempts"] > 0
    assert found.source["first_attempt_ms"] is not None
    for sub in (1, 2, 3):
        assert found.groups[("standard", sub)].guess == pytest.approx(
            TRUTH[sub - 1]["guess"], abs=0.08
        )

    predictions = tmp_path / "predictions.csv"
    done = run_cli(
        "evaluate", str(history), "--params", str(params), "--split", "0.3", "--part", "test",
        "--predictions", str(predictions), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert scores["params_version"] == found.version
    lines = predictions.read_text().splitlines()
    assert lines[0] == "attempt_id,p"
    assert len(lines) - 1 == scores["count"] > 0
    defaults = json.loads(
        run_cli("evaluate", str(history), "--split", "0.3", "--part", "test", "--json").stdout
    )
    assert defaults["params_version"] == "defaults"
    assert defaults["count"] == scores["count"]
    assert scores["log_loss"] < defaults["log_loss"]  # fitted beats the defaults held out


def test_the_split_is_deterministic_and_disjoint() -> None:
    users = np.arange(1, 20_001)
    test = in_test_part(users, 0.2)
    assert np.array_equal(test, in_test_part(users, 0.2))
    assert 0.18 < test.mean() < 0.22
    assert not (in_test_part(users, 0.1) & ~test).any()  # a smaller test part is inside


def test_evaluate_predicts_each_attempt_from_the_earlier_ones_only(tmp_path: Path) -> None:
    """Changing a later answer never changes an earlier prediction."""
    from performance_engine.tools.history_files import load_attempts

    modes = LearningModes.default()
    frame = load_attempts(history_file(tmp_path, learners=60), modes).frame
    history = history_of(frame)
    params = fit(history, modes, min_learners=10, min_attempts=10)
    before = evaluate(history, modes, params).predictions
    flipped = frame.copy()
    last = history.frame.index[history.offsets[1] - 1]  # the first scope's last answer
    target = history.frame.loc[last, "attempt_id"]
    flipped.loc[flipped["attempt_id"] == target, "is_correct"] ^= True
    after = evaluate(history_of(flipped), modes, params).predictions
    assert np.array_equal(before, after)


@pytest.mark.slow  # runs perf-engine in processes of its own
def test_bad_input_is_one_line(tmp_path: Path) -> None:
    history = history_file(tmp_path, learners=5)
    done = run_cli("fit", str(history), "--out", str(tmp_path / "p.json"), "--split", "1.5")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "perf-engine fit: error: --split must lie strictly between 0 and 1, got 1.5"
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": 1, "groups": [{"learning_mode": "standard",
        "sub_topic_id": 1, "prior": 0.2, "learn": 2, "guess": {"easy": 0.2, "medium": 0.2,
        "hard": 0.2}, "slip": {"easy": 0.1, "medium": 0.1, "hard": 0.1}}]}))  # fmt: skip
    done = run_cli("evaluate", str(history), "--params", str(bad))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"perf-engine evaluate: error: parameter file {bad}: group standard/1: learn must be "
        "a number from 0 to 1, got 2"
    )


def test_the_calibration_report_bins_predictions_and_writes_png_and_html(tmp_path: Path) -> None:
    from performance_engine.tools.report import calibration_bins, write_report

    p = np.array([0.05, 0.15, 0.15, 0.72, 0.78, 1.0])
    right = np.array([False, True, False, True, True, True])
    bins = calibration_bins(right, p)
    assert [b.count for b in bins] == [1, 2, 0, 0, 0, 0, 0, 2, 0, 1]
    assert bins[1].predicted == pytest.approx(0.15)
    assert bins[1].observed == 0.5
    assert bins[7].predicted == pytest.approx(0.75)
    assert bins[9].observed == 1.0  # a prediction of exactly 1 is in the last bin
    summary = {"count": 6, "auc": 0.8, "rmse": 0.3, "log_loss": 0.5, "params_version": "p-x"}
    png, page = write_report(tmp_path / "report", right, p, summary)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text
    assert "<td>0.7&ndash;0.8</td><td>2</td><td>0.750</td><td>1.000</td>" in text
