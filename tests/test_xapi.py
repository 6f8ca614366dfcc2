"""xAPI statements into SPEC 2 attempts: statements shaped like those Open edX's
event-routing backends and other producers send (the test's own data, built from the xAPI
specification and that project's documentation), the mapping, and hostile input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from performance_engine.errors import ERROR_CLASSES, ConfigurationError, InvalidAttemptError
from performance_engine.metrics.attempt import decode_attempt
from performance_engine.metrics.modes import LearningModes
from performance_engine.xapi import (
    ANSWERED,
    ATTEMPTED,
    EVALUATED,
    INTERACTION,
    VOIDED,
    Ignored,
    Translated,
    Void,
    XapiMapping,
    comparable_form,
    load_mapping,
    translate,
    xapi_id,
)
from tests.helpers import assert_conforms

LMS = "https://lms.example.org"
COURSE = f"{LMS}/course/course-v1:Example+Math101+2026"
PROBLEM = f"{LMS}/xblock/block-v1:Example+Math101+2026+type@problem+block@5f1c"
RECEIVED = 1_796_000_000_000


def statement(**changes: Any) -> dict[str, Any]:
    """A graded single-question problem, as the event-routing backends describe one."""
    found: dict[str, Any] = {
        "id": "2b0f4c1e-7d1a-5c3e-9f00-6a1b2c3d4e5f",
        "actor": {"objectType": "Agent", "account": {"homePage": LMS, "name": "8d1f0c2a"}},
        "verb": {"id": EVALUATED, "display": {"en": "evaluated"}},
        "object": {
            "id": PROBLEM,
            "objectType": "Activity",
            "definition": {"type": INTERACTION, "interactionType": "choice"},
        },
        "result": {"success": True, "score": {"scaled": 1.0, "raw": 1, "min": 0, "max": 1}},
        "context": {
            "contextActivities": {
                "parent": [
                    {
                        "id": COURSE,
                        "objectType": "Activity",
                        "definition": {"type": "http://adlnet.gov/expapi/activities/course"},
                    }
                ]
            },
            "extensions": {"http://id.tincanapi.com/extension/attempt-id": 2},
        },
        "timestamp": "2026-11-24T09:00:00.250Z",
        "version": "1.0.3",
    }
    found.update(changes)
    return found


def run(document: Any, mapping: XapiMapping | None = None) -> Translated | Ignored | Void:
    return translate(json.dumps(document).encode(), mapping or XapiMapping(), RECEIVED)


def test_a_graded_answer_becomes_the_attempt_the_engine_counts() -> None:
    found = run(statement())
    assert isinstance(found, Translated)
    attempt = found.attempt
    assert attempt == {
        "attempt_id": "2b0f4c1e-7d1a-5c3e-9f00-6a1b2c3d4e5f",
        "user_id": xapi_id("learner", f"account:{LMS}|8d1f0c2a"),
        "sub_topic_id": xapi_id("sub_topic", COURSE),
        "learning_mode": "standard",
        "question_id": xapi_id("question", PROBLEM),
        "difficulty": "medium",
        "is_correct": True,
        "occurred_at": 1_795_510_800_250,
        "attempt_number": 2,
    }
    assert found.learner == f"account:{LMS}|8d1f0c2a"
    raw = json.dumps(attempt).encode()
    assert_conforms("attempt", attempt)
    decoded = decode_attempt(raw, LearningModes.default(), RECEIVED)
    assert decoded.user_id == attempt["user_id"]


def test_the_documented_id_mapping() -> None:
    text = f"account:{LMS}|8d1f0c2a"
    expected = xxhash.xxh3_64_intdigest(b"learner\x00" + text.encode()) & (2**63 - 1)
    assert xapi_id("learner", text) == expected
    assert 1 <= xapi_id("question", "") <= 2**63 - 1
    assert xapi_id("learner", text) != xapi_id("question", text)  # the kind is hashed too


def test_a_multi_question_problem_gives_one_attempt_per_question() -> None:
    """One statement per question (object ids with a ``_2_1``-style suffix), partial
    credit: each is an attempt of its own question, right or wrong."""
    first = statement(
        id="7f6e5d4c-0000-5000-8000-000000000021",
        object={"id": f"{PROBLEM}_2_1", "definition": {"type": INTERACTION}},
        result={"success": True},
    )
    second = statement(
        id="7f6e5d4c-0000-5000-8000-000000000031",
        object={"id": f"{PROBLEM}_3_1", "definition": {"type": INTERACTION}},
        result={"success": False, "score": {"scaled": 0.0}},
    )
    one, two = run(first), run(second)
    assert isinstance(one, Translated)
    assert isinstance(two, Translated)
    assert one.attempt["question_id"] != two.attempt["question_id"]
    assert (one.attempt["is_correct"], two.attempt["is_correct"]) == (True, False)
    assert one.attempt["user_id"] == two.attempt["user_id"]
    assert one.attempt["sub_topic_id"] == two.attempt["sub_topic_id"]


def test_statements_the_engine_does_not_count_say_why() -> None:
    browser = statement(verb={"id": ATTEMPTED})
    del browser["result"]
    assert run(browser) == Ignored("verb_not_counted")
    no_result = statement(verb={"id": ANSWERED})
    del no_result["result"]
    assert run(no_result) == Ignored("no_result")
    assert run(statement(result={"score": {"scaled": 0.5}})) == Ignored("ungraded")
    video = statement(object={"id": f"{LMS}/video", "definition": {"type": "video"}})
    assert run(video) == Ignored("object_not_counted")
    assert run(statement(context={})) == Ignored("no_sub_topic")


def test_every_learner_identifier_and_a_receipt_time() -> None:
    answered = statement(verb={"id": ANSWERED})
    del answered["timestamp"]
    for actor, text in [
        ({"mbox": "mailto:Ada@Example.org"}, "mbox:mailto:ada@example.org"),
        ({"mbox_sha1sum": "AB" * 20}, "mbox_sha1sum:" + "ab" * 20),
        ({"openid": "https://id.example.org/u/9"}, "openid:https://id.example.org/u/9"),
    ]:
        found = run({**answered, "actor": actor})
        assert isinstance(found, Translated)
        assert found.learner == text
        assert found.attempt["user_id"] == xapi_id("learner", text)
        assert found.attempt["occurred_at"] == RECEIVED


def test_the_mapping_is_configured_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "xapi.toml"
    path.write_text(
        "[xapi]\n"
        f'verbs = ["{ANSWERED}"]\n'
        'sub_topic_from = "grouping"\n'
        'sub_topic_pattern = "/section/"\n'
        'difficulty_extension = "https://example.org/xapi/difficulty"\n'
        'learning_mode = "practice"\n'
    )
    mapping = load_mapping(path)
    section = f"{COURSE}/section/algebra"
    document = statement(
        verb={"id": ANSWERED},
        context={
            "contextActivities": {"grouping": [{"id": COURSE}, {"id": section}]},
            "extensions": {"https://example.org/xapi/difficulty": "Hard"},
        },
    )
    found = run(document, mapping)
    assert isinstance(found, Translated)
    assert found.attempt["sub_topic_id"] == xapi_id("sub_topic", section)
    assert (found.attempt["difficulty"], found.attempt["learning_mode"]) == ("hard", "practice")
    assert "attempt_number" not in found.attempt
    assert run(statement(), mapping) == Ignored("verb_not_counted")
    path.write_text('[xapi]\nsub_topic_from = "sideways"\n')
    with pytest.raises(ConfigurationError, match="sub_topic_from"):
        load_mapping(path)
    path.write_text('[xapi]\nverbz = ["x"]\n')
    with pytest.raises(ConfigurationError, match="verbz"):
        load_mapping(path)


@pytest.mark.parametrize(
    ("value", "error_class", "names"),
    [
        (b"not json", "xapi_not_json", "JSON"),
        (json.dumps(statement(version="2.0.0")).encode(), "xapi_version", "version"),
        (json.dumps(statement(timestamp="yesterday")).encode(), "xapi_bad_timestamp", "timestamp"),
        (json.dumps({"verb": {"id": ANSWERED}}).encode(), "xapi_missing_field", "actor"),
        (
            json.dumps(statement(actor={"objectType": "Agent"})).encode(),
            "xapi_missing_field",
            "actor",
        ),
        (json.dumps(statement(verb={"id": 7})).encode(), "xapi_invalid", "$.verb.id"),
        (json.dumps(statement(result={"success": "yes"})).encode(), "xapi_invalid", "success"),
        (json.dumps(statement(id=None)).encode(), "xapi_missing_field", "id"),
        (json.dumps(statement(id="")).encode(), "xapi_invalid", "UUID"),
        (json.dumps(statement(id="statement-7")).encode(), "xapi_invalid", "UUID"),
        (b"[" * 100_000, "xapi_too_large", "bytes"),
    ],
)
def test_statements_that_break_the_rules_name_the_field(
    value: bytes, error_class: str, names: str
) -> None:
    with pytest.raises(InvalidAttemptError) as caught:
        translate(value, XapiMapping(), RECEIVED)
    assert caught.value.error_class == error_class
    assert names in caught.value.reason


def _mutations() -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False),
        st.text(max_size=50),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=20,
    )


def outcome(value: bytes) -> Translated | Ignored | Void | InvalidAttemptError:
    """What translating gives: its answer, or the engine's error it raised."""
    try:
        return translate(value, XapiMapping(), RECEIVED)
    except InvalidAttemptError as exc:
        return exc


FIELDS = ["id", "actor", "verb", "object", "result", "context", "timestamp", "version"]


@settings(max_examples=2000, deadline=None)
@given(
    field=st.sampled_from(FIELDS),
    replacement=_mutations(),
    drop=st.booleans(),
    depth=st.sampled_from([0, 0, 0, 50, 5_000]),
    padding=st.sampled_from([0, 0, 65_000, 70_000]),
)
def test_hostile_statements_are_refused_with_a_reason_or_counted(
    field: str, replacement: Any, drop: bool, depth: int, padding: int
) -> None:
    """Wrong types, missing parts, deep nesting, long strings: every statement is counted,
    ignored with a reason, or refused with an xAPI error class and a reason; nothing
    else comes out."""
    document = copy.deepcopy(statement())
    if drop:
        document.pop(field, None)
    else:
        document[field] = replacement
    if padding:
        document["pad"] = "x" * padding  # a field the engine does not read
    value = json.dumps(document).encode()
    if depth:
        value = value[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    found = outcome(value)
    if isinstance(found, InvalidAttemptError):
        assert found.error_class in ERROR_CLASSES
        assert found.error_class.startswith("xapi_")
        assert found.reason
        return
    assert isinstance(found, (Translated, Ignored, Void))
    assert isinstance(comparable_form(value), bytes)  # what the ingest digests
    if isinstance(found, Translated):
        assert len(value) <= 64 * 1024
        decode_attempt(msgspec.json.encode(found.attempt), LearningModes.default(), RECEIVED)


def test_a_voiding_statement_names_the_statement_it_voids() -> None:
    target = "2B0F4C1E-7D1A-5C3E-9F00-6A1B2C3D4E5F"
    void = statement(
        id="9a0f4c1e-7d1a-5c3e-9f00-6a1b2c3d4e5f",
        verb={"id": VOIDED},
        object={"objectType": "StatementRef", "id": target},
    )
    del void["result"]
    assert run(void) == Void(target.lower())
    for wrong, names in [
        ({"objectType": "Activity", "id": target}, "StatementRef"),
        ({"objectType": "StatementRef", "id": "not-a-uuid"}, "UUID"),
    ]:
        with pytest.raises(InvalidAttemptError, match=names):
            run({**void, "object": wrong})


def test_a_question_of_a_multi_question_problem_names_the_whole_problems_statement() -> None:
    whole = "7f6e5d4c-0000-5000-8000-000000000001"
    question = statement(
        id="7f6e5d4c-0000-5000-8000-000000000021",
        object={"id": f"{PROBLEM}_2_1", "definition": {"type": INTERACTION}},
    )
    question["context"]["statement"] = {"objectType": "StatementRef", "id": whole}
    found = run(question)
    assert isinstance(found, Translated)
    assert found.parent == whole
    found = run(question, XapiMapping(parent_from_context_statement=False))
    assert isinstance(found, Translated)
    assert found.parent is None


def test_where_the_difficulty_and_the_learning_mode_come_from(tmp_path: Path) -> None:
    (tmp_path / "difficulties.csv").write_text(f"object_id,difficulty\n{PROBLEM},Hard\n")
    path = tmp_path / "xapi.toml"
    path.write_text(
        "[xapi]\n"
        'difficulty_file = "difficulties.csv"\n'
        'difficulty_extension = "https://example.org/xapi/difficulty"\n'
        "[xapi.difficulties]\n"
        f'"{PROBLEM}_9" = "easy"\n'
        "[xapi.learning_modes]\n"
        '"/practice/" = "practice"\n'
    )
    mapping = load_mapping(path)
    question = xapi_id("question", PROBLEM)

    def difficulty(document: dict[str, Any], fitted: dict[int, int] | None = None) -> Any:
        found = translate(json.dumps(document).encode(), mapping, RECEIVED, fitted)
        assert isinstance(found, Translated)
        return found.attempt["difficulty"], found.attempt["learning_mode"]

    assert difficulty(statement()) == ("hard", "standard")  # the file
    extension = statement()
    extension["result"]["extensions"] = {"https://example.org/xapi/difficulty": "easy"}
    assert difficulty(extension) == ("easy", "standard")  # the extension first
    listed = statement(object={"id": f"{PROBLEM}_9", "definition": {"type": INTERACTION}})
    assert difficulty(listed) == ("easy", "standard")  # the section
    other = statement(object={"id": f"{LMS}/practice/q7", "definition": {"type": INTERACTION}})
    fitted = {xapi_id("question", f"{LMS}/practice/q7"): 0, question: 1}
    assert difficulty(other, fitted) == ("easy", "practice")  # fitted; the mode's pattern
    assert difficulty(statement(), fitted) == ("hard", "standard")  # the file before fitted
    no_fit = XapiMapping(use_fitted_difficulty=False)
    found = translate(json.dumps(other).encode(), no_fit, RECEIVED, fitted)
    assert isinstance(found, Translated)
    assert found.attempt["difficulty"] == "medium"  # the default
    (tmp_path / "difficulties.csv").write_text("object_id,difficulty\nq1,extreme\n")
    with pytest.raises(ConfigurationError, match=r"difficulties\.csv:2"):
        load_mapping(path)
    path.write_text('[xapi.learning_modes]\n"(" = "practice"\n')
    with pytest.raises(ConfigurationError, match="learning_modes"):
        load_mapping(path)


def comparable(document: dict[str, Any], **dumps: Any) -> bytes:
    return comparable_form(json.dumps(document, **dumps).encode())


def test_statements_with_one_id_compare_as_xapi_compares_them() -> None:
    """Differences xAPI's statement comparison ignores (serialisation, what an LRS
    assigns, a verb's display, an activity's definition, a timestamp's time zone, the
    order of a group's members) make no difference; any other does."""
    first = statement()
    same = [
        comparable(first, indent=2, sort_keys=True),
        comparable(first, separators=(",", ":")),
        comparable({k: first[k] for k in reversed(first)}),
        comparable(statement(version="1.0.0", stored="2026-11-24T10:00:00Z")),
        comparable(statement(authority={"mbox": "mailto:lrs@example.org"})),
        comparable(statement(verb={"id": EVALUATED, "display": {"fr": "évalué"}})),
        comparable(statement(object={**first["object"], "definition": {"type": "other"}})),
        comparable(statement(timestamp="2026-11-24T10:00:00.250+01:00")),
        comparable(statement(id="2B0F4C1E-7D1A-5C3E-9F00-6A1B2C3D4E5F")),
    ]
    assert all(form == comparable(first) for form in same)
    group = {
        "objectType": "Group",
        "member": [{"mbox": "mailto:a@x.org"}, {"mbox": "mailto:b@x.org"}],
    }
    reordered = {**group, "member": group["member"][::-1]}
    assert comparable(statement(actor=group)) == comparable(statement(actor=reordered))
    other = [
        comparable(statement(result={"success": False})),
        comparable(statement(timestamp="2026-11-24T09:00:00.251Z")),
        comparable(statement(object={**first["object"], "id": f"{PROBLEM}_2_1"})),
        comparable(statement(actor={"account": {"homePage": LMS, "name": "someone else"}})),
        comparable(statement(context={})),
    ]
    assert len({comparable(first), *other}) == len(other) + 1
