"""xAPI statements as an LMS sends them, built from the tests' simulated attempts (the
tests' own data, shaped after the xAPI specification and Open edX's event-routing
backends' documentation)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from performance_engine.xapi import (
    EVALUATED,
    INTERACTION,
    VOIDED,
    Translated,
    XapiMapping,
    translate,
)

LMS = "https://lms.example.org"
VERSION = {"X-Experience-API-Version": "1.0.3", "Content-Type": "application/json"}


def statement_id(home: str, *parts: object) -> str:
    """A deterministic statement id, as the event-routing backends derive one; the ids of
    two LMSs sort alike (only their first digit tells the LMS apart), so that attempts at
    the same time are in the same learning order whichever LMS sent them."""
    found = str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))
    return "0123456789abcdef"[sum(home.encode()) % 16] + found[1:]


def as_statement(row: dict[str, Any], home: str = LMS, suffix: str = "") -> dict[str, Any]:
    """A simulated attempt as the statement an LMS at ``home`` would send for it."""
    when = datetime.fromtimestamp(row["occurred_at"] / 1000, UTC)
    return {
        "id": statement_id(home, row["attempt_id"]),
        "actor": {
            "objectType": "Agent",
            "account": {"homePage": home, "name": f"u{row['user_id']}"},
        },
        "verb": {"id": EVALUATED, "display": {"en": "evaluated"}},
        "object": {
            "id": f"{LMS}/xblock/block-v1:X+Y+Z+type@problem+block@q{row['question_id']}{suffix}",
            "objectType": "Activity",
            "definition": {"type": INTERACTION, "interactionType": "choice"},
        },
        "result": {"success": row["is_correct"], "score": {"scaled": float(row["is_correct"])}},
        "context": {
            "contextActivities": {"parent": [{"id": f"{LMS}/course/c{row['sub_topic_id']}"}]}
        },
        "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "version": "1.0.3",
    }


def voiding(target: dict[str, Any], home: str = LMS) -> dict[str, Any]:
    """The statement that voids ``target`` (sent by an instructor)."""
    return {
        "id": statement_id(home, "void", target["id"]),
        "actor": {"objectType": "Agent", "account": {"homePage": home, "name": "instructor"}},
        "verb": {"id": VOIDED, "display": {"en": "voided"}},
        "object": {"objectType": "StatementRef", "id": target["id"]},
        "version": "1.0.3",
    }


def multi_question(
    row: dict[str, Any], home: str, outcomes: list[bool]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A multi-question problem: the whole problem's statement, and one statement per
    question (object ids ``_2_1``, ``_3_1``, ...) referring to it by ``context.statement``."""
    parent = as_statement({**row, "is_correct": all(outcomes)}, home)
    children = []
    for n, outcome in enumerate(outcomes, start=2):
        child = as_statement(
            {**row, "attempt_id": f"{row['attempt_id']}_{n}_1", "is_correct": outcome},
            home,
            suffix=f"_{n}_1",
        )
        child["context"] = {
            **child["context"],
            "statement": {"objectType": "StatementRef", "id": parent["id"]},
        }
        children.append(child)
    return parent, children


def attempts_of(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The attempts the counted statements stand for."""
    found = []
    for item in statements:
        outcome = translate(json.dumps(item).encode(), XapiMapping(), 0)
        if isinstance(outcome, Translated):
            found.append(outcome.attempt)
    return found
