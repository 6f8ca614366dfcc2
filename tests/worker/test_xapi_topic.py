"""xAPI statements through the statements topic and through ``POST /xAPI/statements`` into
one running worker: the same statements (from two LMSs, so two sets of learners) give the
same stats, equal to the oracle over the attempts they stand for, with voids under any
arrival order, multi-question problems whose whole problem's statement does not count,
resends, a reused id, and hostile statements dead-lettered with a reason; the learners'
xAPI identifiers are shown and erased with them."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest

from performance_engine.metrics.types import ScopeKey
from performance_engine.settings import Settings
from performance_engine.store.statements import xapi_identifier
from performance_engine.store.stats_store import AsyncStatsStore
from performance_engine.tokens import add_token
from performance_engine.tools.simulator import generate_attempts
from performance_engine.worker.xapi_topic import MAX_RECORDS
from performance_engine.xapi import ATTEMPTED, xapi_id
from tests.helpers import http_call, oracle, run, stored, wait_for_oracle, web_worker
from tests.services import create_topics, produce, read_topic, wait_until
from tests.xapi_statements import (
    LMS,
    VERSION,
    as_statement,
    attempts_of,
    multi_question,
    voiding,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]

TOPIC_LMS = "https://topic-lms.example.org"


def sends(home: str) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """The statements one LMS sends, in rounds (each round a batch, in order), and those
    that should count."""
    rows = generate_attempts(300, users=6, seed=91)
    statements = [as_statement(r, home) for r in rows]
    early_voided, late_voided = statements[10:13], statements[200:203]
    first_problem, first_questions = multi_question(
        {**rows[0], "attempt_id": "mq-1"}, home, [True, False]
    )
    second_problem, second_questions = multi_question(
        {**rows[1], "attempt_id": "mq-2"}, home, [False, True, True]
    )
    browser = {**as_statement(rows[2], home), "verb": {"id": ATTEMPTED}}
    browser["id"] = browser["id"][:-4] + "beef"
    del browser["result"]
    rounds = [
        [voiding(s, home) for s in early_voided]  # voids first: held until their statements
        + [first_problem, *first_questions, browser]  # the whole problem's statement first
        + [*second_questions],
        statements[:150],
        [*statements[150:], second_problem],  # ... and after its questions
        [voiding(s, home) for s in late_voided] + statements[:30],  # resends
    ]
    gone = {s["id"] for s in early_voided + late_voided}
    counted = [s for s in statements if s["id"] not in gone] + first_questions + second_questions
    return rounds, counted


def same_stats(a: Any, b: Any) -> bool:
    """Two scopes' stats equal but for whose they are."""
    skip = {"user_id", "scope", "updated_at", "revision"}
    left, right = msgspec.to_builtins(a), msgspec.to_builtins(b)
    return {k: v for k, v in left.items() if k not in skip} == {
        k: v for k, v in right.items() if k not in skip
    }


def test_the_topic_and_http_give_the_same_stats(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    lms = add_token(tokens, "lms", ["xapi:write"])
    reader = add_token(tokens, "reader", ["stats:read", "metrics", "learner:erase", "dashboard"])
    topic = f"xapi-{stream_settings.app_id.removeprefix('pe-test-')}"
    create_topics(stream_settings.kafka_bootstrap, [topic], 1)  # one order for the counts
    settings = replace(stream_settings, web_tokens_file=tokens, xapi_topic=topic)
    _, base = web_worker(settings, workers)

    # 1. Through the topic, with hostile statements among them (keyed as an LMS would).
    topic_rounds, topic_counted = sends(TOPIC_LMS)
    hostile = hostile_statements(120)
    sent = 0
    for n, batch in enumerate(topic_rounds):
        values: list[tuple[bytes | None, bytes]] = [(None, json.dumps(s).encode()) for s in batch]
        if n == 1:
            values += [(b"x", value) for value in hostile]
            changed = {**batch[0], "result": {"success": not batch[0]["result"]["success"]}}
            values.append((None, json.dumps(changed).encode()))  # a reused id
        sent += produce(settings.kafka_bootstrap, topic, values)
        wait_until(partial(all_taken, base, reader, sent), 60, "the worker to take them")

    # 2. The same over HTTP, from another LMS: another set of learners.
    http_rounds, http_counted = sends(LMS)
    for batch in http_rounds:
        for start in range(0, len(batch), 100):
            part = batch[start : start + 100]
            status, _, body = http_call(
                f"{base}/xAPI/statements",
                "POST",
                part,
                {**VERSION, "Authorization": f"Bearer {lms}"},
            )
            assert status == 200, body
    # Statements taken from the topic, sent again over HTTP: resends, not conflicts.
    status, _, body = http_call(
        f"{base}/xAPI/statements",
        "POST",
        topic_rounds[1][20:40],  # counted ones, none voided
        {**VERSION, "Authorization": f"Bearer {lms}"},
    )
    assert status == 200, body
    changed = {**http_rounds[1][0], "result": {"success": True, "score": {"scaled": 0.5}}}
    status, _, _ = http_call(
        f"{base}/xAPI/statements", "POST", [changed], {**VERSION, "Authorization": f"Bearer {lms}"}
    )
    assert status == 409

    expected = oracle(attempts_of(topic_counted) + attempts_of(http_counted))
    wait_for_oracle(settings, expected)
    found = stored(settings, sorted(expected))
    for user in range(1, 7):
        via_topic = xapi_id("learner", f"account:{TOPIC_LMS}|u{user}")
        via_http = xapi_id("learner", f"account:{LMS}|u{user}")
        pairs = [
            (found[s], found[ScopeKey(via_http, s.sub_topic_id, s.learning_mode)])
            for s in found
            if s.user_id == via_topic
        ]
        assert pairs
        assert all(same_stats(a, b) for a, b in pairs)

    # Hostile statements and the reused id: dead letters with an xAPI class and a reason.
    letters = read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    classes = [dict(m.headers)["pe-error-class"].decode() for m in letters]
    assert len(letters) == len(hostile) + 1
    assert all(c.startswith("xapi_") for c in classes)
    assert classes.count("xapi_conflict") == 1
    assert all(dict(m.headers)["pe-error-reason"] for m in letters)
    assert {dict(m.headers)["pe-source-topic"].decode() for m in letters} == {topic}

    metrics = http_call(f"{base}/metrics", token=reader)[2].decode()
    for line in [
        '{result="ignored:multi_question_parent"} 2.0',
        '{result="ignored:verb_not_counted"} 2.0',
        '{result="void_held"} 6.0',
        '{result="void"} 6.0',
        "perf_engine_attempts_voided_total 14.0",
    ]:
        assert line in metrics, line

    # The learner's xAPI identifier: shown with their stats, erased with them.
    learner = xapi_id("learner", f"account:{LMS}|u3")
    status, _, body = http_call(f"{base}/stats/{learner}", token=reader)
    assert status == 200
    assert json.loads(body)["xapi_actor"] == f"account:{LMS}|u3"
    status, _, body = http_call(f"{base}/learners/{learner}", "DELETE", token=reader)
    assert status == 200, body
    assert http_call(f"{base}/stats/{learner}", token=reader)[0] == 404
    assert run(identifier(settings, learner)) is None
    other = xapi_id("learner", f"account:{LMS}|u4")
    assert run(identifier(settings, other)) == f"account:{LMS}|u4"
    status, _, body = http_call(f"{base}/dashboard/api/learners/{other}", token=reader)
    assert status == 200
    assert json.loads(body)["xapi_actor"] == f"account:{LMS}|u4"


def all_taken(base: str, token: str, sent: int) -> bool:
    return taken(base, token) >= sent


def taken(base: str, token: str) -> int:
    """How many statements the worker has taken (every result); ``token`` '' for none."""
    body = http_call(f"{base}/metrics", token=token or None)[2].decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("perf_engine_xapi_statements_total{")
        )
    )


async def identifier(settings: Settings, user: int) -> str | None:
    store = AsyncStatsStore.from_settings(settings)
    try:
        return await xapi_identifier(store, user)
    finally:
        await store.close()


def hostile_statements(count: int) -> list[bytes]:
    """Statements that break the rules, each in its own way (seeded)."""
    rng = random.Random(7)
    good = as_statement(generate_attempts(1, users=1, seed=5)[0], TOPIC_LMS)
    found: list[bytes] = []
    for n in range(count):
        document = json.loads(json.dumps(good))
        document["id"] = f"00000000-0000-4000-8000-{n:012d}"
        kind = n % 8
        if kind == 0:
            value = b"{not json" + bytes([rng.randrange(256)])
        elif kind == 1:
            document["version"] = rng.choice(["2.0.0", "0.95", "1.1", ""])
            value = json.dumps(document).encode()
        elif kind == 2:
            del document[rng.choice(["actor", "verb", "object"])]
            value = json.dumps(document).encode()
        elif kind == 3:
            document["timestamp"] = rng.choice(["yesterday", "2026-13-01T00:00:00Z", "12"])
            value = json.dumps(document).encode()
        elif kind == 4:
            document["result"] = {"success": rng.choice(["yes", 1, [], {}])}
            value = json.dumps(document).encode()
        elif kind == 5:
            value = json.dumps({**document, "pad": "x" * (66_000 + n)}).encode()
        elif kind == 6:
            depth = rng.choice([5_000, 20_000])
            value = (
                json.dumps(document).encode()[:-1]
                + b', "deep": '
                + b"[" * depth
                + b"]" * depth
                + b"}"
            )
        else:
            document["actor"] = {"objectType": "Agent", "name": "no identifier"}
            value = json.dumps(document).encode()
        found.append(value)
    return found


def test_a_worker_killed_while_taking_statements_counts_each_once(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    """``kill -9`` in the middle of the statements topic (once it has taken a batch of the
    first 1,000; the rest are sent after the kill): the next worker reads the statements
    not committed again, and each counts once (voids included)."""
    topic = f"xapi-{stream_settings.app_id.removeprefix('pe-test-')}"
    create_topics(stream_settings.kafka_bootstrap, [topic], 2)
    settings = replace(stream_settings, xapi_topic=topic)
    rows = generate_attempts(1500, users=30, seed=95)
    statements = [as_statement(r, TOPIC_LMS) for r in rows]
    voided = statements[100:1500:150]
    values: list[tuple[bytes | None, bytes]] = [
        (s["actor"]["account"]["name"].encode(), json.dumps(s).encode())
        for s in [*statements, *statements[:200]]  # and resends
    ]
    values += [(b"instructor", json.dumps(voiding(s, TOPIC_LMS)).encode()) for s in voided]
    produce(settings.kafka_bootstrap, topic, values[:1000])
    first, base = web_worker(settings, workers)
    wait_until(partial(some_taken, base), 60, "the first worker to take statements")
    first.kill()
    produce(settings.kafka_bootstrap, topic, values[1000:])
    workers(settings)
    gone = {s["id"] for s in voided}
    wait_for_oracle(settings, oracle(attempts_of([s for s in statements if s["id"] not in gone])))


def some_taken(base: str) -> bool:
    return taken(base, "") >= MAX_RECORDS  # a batch committed, the next in flight
