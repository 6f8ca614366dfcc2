"""atheris harness for the attempt decoder: ``python tests/fuzz/decoder.py -runs=N``.

Coverage-guided bytes straight into ``decode_attempt``; anything but the engine's own
rejection error (with a SPEC 2 error class and a reason) is a crash, and atheris exits
non-zero with the input that caused it.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["performance_engine"]):
    from performance_engine.errors import InvalidAttemptError
    from performance_engine.metrics.attempt import ERROR_CLASSES, MAX_EPOCH_MS, decode_attempt
    from performance_engine.metrics.modes import LearningModes

MODES = LearningModes.default()


def one_input(data: bytes) -> None:
    try:
        attempt = decode_attempt(data, MODES)
    except InvalidAttemptError as exc:
        if exc.error_class not in ERROR_CLASSES or not exc.reason:
            raise AssertionError(f"bad rejection {exc.error_class!r}: {exc.reason!r}") from exc
        return
    if not 0 <= attempt.occurred_at <= MAX_EPOCH_MS or attempt.learning_mode not in MODES.rules:
        raise AssertionError(f"accepted an invalid attempt: {attempt!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
