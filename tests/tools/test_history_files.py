"""Loading history files: CSV, JSON Lines and Parquet give the same frame; bad rows are named."""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from performance_engine.errors import InputFileError, InvalidAttemptError
from performance_engine.metrics.attempt import attempt_from_mapping
from performance_engine.metrics.frame import COLUMNS, attempts_to_frame
from performance_engine.metrics.modes import LearningModes
from performance_engine.tools.history_files import load_attempts
from tests.helpers import raw

MODES = LearningModes.default()
ROWS = [
    raw(attempt_id="r1", occurred_at="2026-11-24T09:00:00Z", attempt_number=1, time_spent_ms=10),
    raw(
        attempt_id="r2",
        learning_mode="Practice",
        difficulty="HARD",
        is_correct=False,
        occurred_at=1_795_510_800_500,
    ),
    raw(attempt_id="r3", user_id=2**63 - 1, occurred_at="2026-11-24T10:00:00.25+01:00"),
]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: ("true" if v is True else "false" if v is False else v) for k, v in row.items()}
            )
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def expected_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return attempts_to_frame([attempt_from_mapping(r, MODES) for r in rows])


def assert_frames_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual.columns) == list(COLUMNS)
    assert actual.astype(object).to_dict("records") == expected.astype(object).to_dict("records")


def test_csv(tmp_path: Path) -> None:
    loaded = load_attempts(write_csv(tmp_path / "a.csv", ROWS), MODES)
    assert_frames_equal(loaded.frame, expected_frame(ROWS))
    assert loaded.errors == []


def test_jsonl(tmp_path: Path) -> None:
    loaded = load_attempts(write_jsonl(tmp_path / "a.jsonl", ROWS), MODES)
    assert_frames_equal(loaded.frame, expected_frame(ROWS))


def test_parquet_with_typed_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame(ROWS)
    frame["occurred_at"] = [
        pd.Timestamp(t) if isinstance(t, str) else pd.Timestamp(t, unit="ms", tz="UTC")
        for t in frame["occurred_at"]
    ]
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True)
    path = tmp_path / "a.parquet"
    frame.to_parquet(path)
    loaded = load_attempts(path, MODES)
    assert_frames_equal(loaded.frame, expected_frame(ROWS))


def test_bad_row_is_named(tmp_path: Path) -> None:
    rows = [*ROWS, raw(attempt_id="bad", user_id="abc")]
    with pytest.raises(InputFileError, match=r"row 4: .*user_id.*--skip-invalid"):
        load_attempts(write_csv(tmp_path / "a.csv", rows), MODES)
    with pytest.raises(InputFileError, match=r"row 4: .*user_id"):
        load_attempts(write_jsonl(tmp_path / "a.jsonl", rows), MODES)


def test_skip_invalid_counts_and_keeps_the_rest(tmp_path: Path) -> None:
    rows = [
        raw(attempt_id="bad1", difficulty="extreme"),
        *ROWS,
        raw(attempt_id="bad2", occurred_at="2026-11-24 09:00"),
        raw(attempt_id="bad3", learning_mode="cram"),
    ]
    loaded = load_attempts(write_csv(tmp_path / "a.csv", rows), MODES, skip_invalid=True)
    assert_frames_equal(loaded.frame, expected_frame(ROWS))
    assert [(e.row, e.error_class) for e in loaded.errors] == [
        (1, "unknown_difficulty"),
        (5, "invalid_field"),
        (6, "unknown_learning_mode"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "user_id,question_id\n1,2\n", "missing column"),
        ("a.txt", "x", "unknown file type"),
        ("a.parquet", "not parquet", "not a readable Parquet"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError, match=message):
        load_attempts(path, MODES)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        load_attempts(tmp_path / "nope.csv", MODES)


# A CSV cell is accepted exactly when the same value is accepted in a Kafka event.
CELLS = {
    "user_id": st.sampled_from(
        ["1", "0", "-3", "x", "", "1.5", "9223372036854775807", "9223372036854775808", "00012"]
    ),
    "difficulty": st.sampled_from(["easy", "MEDIUM", "Hard", "", "extreme"]),
    "learning_mode": st.sampled_from(["standard", "MASTERY", "cram", ""]),
    "is_correct": st.sampled_from(["true", "FALSE", "1", "0", "yes", ""]),
    "occurred_at": st.sampled_from(
        [
            "2026-11-24T09:00:00Z",
            "2026-11-24T09:00:00",
            "0",
            "-1",
            "1795510800000",
            "2026-13-01T00:00:00Z",
            "2300-01-01T00:00:00Z",
            "2026-11-24 09:00:00.5+05:30",
            "nope",
        ]
    ),
    "attempt_number": st.sampled_from(["", "1", "0", "x"]),
    "attempt_id": st.sampled_from(["a", "", "é" * 128, "é" * 129]),
}


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.fixed_dictionaries(CELLS), min_size=1, max_size=8))
def test_csv_validation_matches_the_event_validator(
    tmp_path: Path, cells: list[dict[str, str]]
) -> None:
    rows = [raw(attempt_id=f"id{i}") | c for i, c in enumerate(cells)]
    path = write_csv(tmp_path / "h.csv", rows)
    loaded = load_attempts(path, MODES, skip_invalid=True)
    accepted = []
    for row in rows:
        typed = {k: v for k, v in row.items() if not (k == "attempt_number" and v == "")}
        for key in ("user_id", "attempt_number"):
            if key in typed and typed[key].lstrip("-").isdigit():
                typed[key] = int(typed[key])
        if typed["occurred_at"].lstrip("-").isdigit():
            typed["occurred_at"] = int(typed["occurred_at"])
        typed["is_correct"] = {"true": True, "false": False, "1": True, "0": False}.get(
            typed["is_correct"].lower(), typed["is_correct"]
        )
        with contextlib.suppress(InvalidAttemptError):
            accepted.append(attempt_from_mapping(typed, MODES))
    assert_frames_equal(loaded.frame, attempts_to_frame(accepted))
    assert len(loaded.errors) == len(rows) - len(accepted)
