"""Learning-mode rules: built-in defaults and TOML overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from performance_engine.errors import ConfigurationError, InvalidAttemptError
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.types import DifficultyEnum
from performance_engine.settings import load_learning_modes


def test_defaults() -> None:
    assert LearningModes.default().rules == {
        "standard": (2, 2, 2),
        "practice": (1, 1, 1),
        "mastery": (3, 3, 3),
    }


def test_toml_overrides_and_adds(tmp_path: Path) -> None:
    path = tmp_path / "modes.toml"
    path.write_text(
        "[modes.standard]\nhard = 3\n\n[modes.exam]\nrequired = 4\nhard = 5\n", encoding="utf-8"
    )
    modes = load_learning_modes(path)
    assert modes.rules == {
        "standard": (2, 2, 3),
        "practice": (1, 1, 1),
        "mastery": (3, 3, 3),
        "exam": (4, 4, 5),
    }
    assert modes.required("exam", DifficultyEnum.HARD) == 5
    assert modes.normalise("EXAM") == "exam"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[modes.new]\neasy = 1\n", "needs 'required'"),
        ("[modes.standard]\neasy = -1\n", "whole number"),
        ("[modes.standard]\neasy = true\n", "whole number"),
        ("[modes.standard]\nextreme = 1\n", "unknown keys"),
        ('[modes."Bad Name"]\nrequired = 1\n', "invalid"),
        ("[other]\nx = 1\n", "only"),
        ("not toml at all [", "cannot be read"),
    ],
)
def test_bad_files_are_configuration_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "modes.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=message):
        load_learning_modes(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_learning_modes(tmp_path / "absent.toml")


def test_unknown_mode_is_an_attempt_error() -> None:
    with pytest.raises(InvalidAttemptError) as info:
        LearningModes.default().normalise("cram")
    assert info.value.error_class == "unknown_learning_mode"
