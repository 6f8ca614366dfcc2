"""The shipped JSON Schemas: generated from the engine's types, in step with them, and in
agreement with what the engine accepts and writes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.errors import ERROR_CLASSES, InvalidAttemptError
from performance_engine.events import Source, dead_letter, stats_event
from performance_engine.metrics.attempt import decode_attempt
from performance_engine.metrics.batch import compute_stats
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import attempts_to_frame
from performance_engine.metrics.modes import LearningModes
from performance_engine.schemas import NAMES, documents, load, render
from tests.helpers import ROOT, assert_conforms, attempt, conforms, malformed_records
from tests.strategies import attempts

T0 = 1_795_510_800_000  # 2026-11-24T09:00:00Z


def test_the_shipped_files_are_what_the_types_generate() -> None:
    """Fails when a type changes and its schema file does not (regenerate them with
    ``python -m performance_engine.schemas schemas`` and the package's folder)."""
    generated = documents()
    assert tuple(generated) == NAMES
    for folder in (ROOT / "schemas", ROOT / "performance_engine" / "schemas"):
        for name, document in generated.items():
            path = folder / f"{name}.schema.json"
            assert path.read_text() == render(document), f"{path} is out of date"
        assert sorted(p.name for p in folder.glob("*.json")) == sorted(
            f"{name}.schema.json" for name in NAMES
        )
    assert load("stats") == generated["stats"]


def test_the_dead_letter_schema_names_every_error_class() -> None:
    schema = load("dead-letter-headers")
    assert sorted(schema["properties"]["pe-error-class"]["enum"]) == sorted(ERROR_CLASSES)
    assert schema["required"] == [
        "pe-error-class",
        "pe-error-reason",
        "pe-source-topic",
        "pe-source-partition",
        "pe-source-offset",
    ]


@settings(max_examples=100, deadline=None)
@given(stream=attempts())
def test_what_the_engine_writes_is_valid(stream: list[Any]) -> None:
    calculator = MetricsCalculator()
    for item in stream:
        assert_conforms("attempt", json.loads(item.to_json()))
    for scope, stats in compute_stats(attempts_to_frame(stream), calculator).items():
        assert_conforms("stats", json.loads(stats.to_json()))
        _key, value = stats_event(scope, 3, stats.to_json(), Source("attempts", 0, 9, "a-1"))
        assert_conforms("stats-updated", json.loads(value))


@given(
    error_class=st.sampled_from(ERROR_CLASSES),
    reason=st.text(max_size=2000),
    size=st.sampled_from([10, 600_000]),
)
def test_every_dead_letters_headers_are_valid(error_class: Any, reason: str, size: int) -> None:
    _, _, headers = dead_letter(b"k", b"x" * size, error_class, reason, "attempts", 3, 12)
    assert_conforms("dead-letter-headers", {k: v.decode() for k, v in headers})


def test_the_schema_refuses_what_the_decoder_rejects_for_its_form() -> None:
    """Each malformed record of the suite: the schema refuses those whose fault is in the
    record's form; it cannot know the configured modes, nor the record's Kafka time."""
    modes = LearningModes.default()
    for error_class, (_, value) in malformed_records().items():
        assert value is not None
        try:
            document = json.loads(value)
        except (TypeError, ValueError, UnicodeDecodeError):
            continue  # not JSON: no schema applies
        try:
            decode_attempt(value, modes)
            accepted = True
        except InvalidAttemptError:
            accepted = False
        if error_class in ("unknown_learning_mode", "oversized"):
            continue  # a well-formed name that is not configured; a size limit
        assert not accepted
        assert not conforms("attempt", document), error_class


@settings(max_examples=300, deadline=None)
@given(
    user=st.one_of(st.integers(-5, 2**64), st.from_regex(r"\A[0-9 +-]{1,21}\Z")),
    occurred=st.one_of(st.integers(-5, 2**53), st.sampled_from(["2026-11-24T09:00:00Z", "x"])),
)
def test_schema_and_decoder_agree_on_ids_and_times(user: Any, occurred: Any) -> None:
    """Where the schema can see it (ids, times), the schema and the decoder agree."""
    document = json.loads(attempt(occurred_at=T0).to_json())
    document.update(user_id=user, occurred_at=occurred)
    value = json.dumps(document).encode()
    try:
        decode_attempt(value, LearningModes.default())
        accepted = True
    except InvalidAttemptError:
        accepted = False
    beyond = isinstance(user, str) and user.isdigit() and len(user) == 19 and int(user) >= 2**63
    if beyond and user[0] != "0" and conforms("attempt", {**document, "user_id": 1}):
        # a pattern cannot bound a decimal string's value: the description says it
        assert conforms("attempt", document)
        assert not accepted
        return
    assert conforms("attempt", document) == accepted, (user, occurred)


def test_the_schemas_folder_says_where_they_come_from() -> None:
    readme = (ROOT / "schemas" / "README.md").read_text()
    assert "python -m performance_engine.schemas" in readme
    for name in NAMES:
        assert f"{name}.schema.json" in readme
    assert "schemas/" in (ROOT / "docs" / "events-and-http.md").read_text()
