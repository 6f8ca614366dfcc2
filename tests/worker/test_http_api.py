"""The HTTP read API, complete: a learner's scopes, batch reads, JSON errors on every path,
CORS, and the OpenAPI document, held against the running worker by schemathesis."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from performance_engine.settings import Settings
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import (
    assert_conforms,
    http_call,
    oracle,
    results_json,
    wait_for_oracle,
    web_worker,
)
from tests.services import attempt_records, produce

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]

ALLOWED = "https://school.example:8443"


def test_learner_and_batch_reads_errors_and_cors(
    stream_settings: Settings, workers: Callable[..., Any]
) -> None:
    settings = replace(stream_settings, cors_origins=(ALLOWED,))
    base = web_worker(settings, workers)[1]
    rows = generate_attempts(900, users=12, sub_topics=3, seed=51)
    records = attempt_records(rows)
    expected = oracle(records)
    produce(settings.kafka_bootstrap, settings.attempts_topic, records)
    wait_for_oracle(settings, expected)

    # a learner's scopes, by sub-topic then mode
    for user in sorted({scope.user_id for scope in expected}):
        status, headers, body = http_call(f"{base}/stats/{user}")
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        found = json.loads(body)
        mine = sorted(
            (s for s in expected if s.user_id == user),
            key=lambda s: (s.sub_topic_id, s.learning_mode),
        )
        assert found["user_id"] == user
        assert [results_json(item) for item in found["stats"]] == [
            results_json(expected[scope].to_json()) for scope in mine
        ]
    assert http_call(f"{base}/stats/0{min(expected).user_id}")[0] == 200  # another spelling
    status, _, body = http_call(f"{base}/stats/987654321")
    assert (status, "no stats for user 987654321" in json.loads(body)["error"]) == (404, True)

    # a batch: strings and objects, ids as numbers and strings, a scope with none
    scopes = sorted(expected)
    asked: list[Any] = [str(scope) for scope in scopes[:5]]
    asked += [
        {"user_id": s.user_id, "sub_topic_id": str(s.sub_topic_id), "learning_mode": "STANDARD"}
        for s in scopes
        if s.learning_mode == "standard"
    ][:5]
    asked.append("4242:1:practice")
    status, _, body = http_call(f"{base}/stats", "POST", {"scopes": asked})
    assert status == 200
    got = json.loads(body)["stats"]
    assert len(got) == len(asked)
    assert got[-1] is None
    for item, stats in zip(asked[:-1], got[:-1], strict=True):
        assert_conforms("stats", stats)
        key = (
            item if isinstance(item, str) else f"{item['user_id']}:{item['sub_topic_id']}:standard"
        )
        assert stats["scope"] == key
        assert results_json(stats) == results_json(
            next(e for s, e in expected.items() if str(s) == key).to_json()
        )
    many = {"scopes": [str(scopes[0])] * 1000}
    assert http_call(f"{base}/stats", "POST", many)[0] == 200
    for bad, says in (
        ({"scopes": [str(scopes[0])] * 1001}, "1000"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["1:2"]}, "scopes[0]"),
        ({"scopes": [str(scopes[0]), "1:2:nosuchmode"]}, "not configured"),
        ({"scopes": [{"user_id": 0, "sub_topic_id": 1, "learning_mode": "standard"}]}, "user_id"),
        ({"users": []}, "scopes"),
        (b"{oops", "JSON"),
    ):
        status, headers, body = http_call(f"{base}/stats", "POST", bad)
        assert status == 400, bad
        assert headers["Content-Type"].startswith("application/json")
        assert says in json.loads(body)["error"], (bad, body)

    # JSON errors on every path and method
    for url, method, code in (
        ("/no/such/path", "GET", 404),
        ("/stats/1/2/standard/x", "GET", 404),
        ("/stats/1/2/standard", "POST", 405),
        ("/stats", "GET", 405),
        ("/health", "DELETE", 405),
    ):
        status, headers, body = http_call(f"{base}{url}", method, b"" if method != "GET" else None)
        assert status == code, (url, method)
        assert headers["Content-Type"].startswith("application/json"), (url, method)
        assert json.loads(body)["error"]
        if code == 405:
            assert "GET" in headers["Allow"] or "POST" in headers["Allow"]
    status, _, body = http_call(f"{base}/stats/1/2/STANDARD")
    assert status in (200, 404)  # accepted spelling: a read, not a 400
    status, _, body = http_call(f"{base}/stats/1/2/nosuchmode")
    assert status == 400

    # CORS: the allowed origin reads (and sees the ETag); another origin gets no grant
    url = f"{base}/stats/{scopes[0].user_id}/{scopes[0].sub_topic_id}/{scopes[0].learning_mode}"
    status, headers, _ = http_call(url, headers={"Origin": ALLOWED})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "ETag" in headers["Access-Control-Expose-Headers"]
    status, headers, _ = http_call(url, headers={"Origin": "https://elsewhere.example"})
    assert status == 200
    assert "Access-Control-Allow-Origin" not in headers
    preflight = {
        "Origin": ALLOWED,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, headers, _ = http_call(f"{base}/stats", "OPTIONS", b"", preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in headers["Access-Control-Allow-Headers"]
    status, headers, _ = http_call(
        f"{base}/stats", "OPTIONS", b"", {**preflight, "Origin": "https://elsewhere.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers
    status, headers, _ = http_call(f"{base}/no/such/path", headers={"Origin": ALLOWED})
    assert (status, headers["Access-Control-Allow-Origin"]) == (404, ALLOWED)


def test_no_cors_by_default(stream_settings: Settings, workers: Callable[..., Any]) -> None:
    base = web_worker(stream_settings, workers)[1]
    status, headers, _ = http_call(f"{base}/health", headers={"Origin": ALLOWED})
    assert status == 200
    assert not any(name.startswith("Access-Control-") for name in headers)
    preflight = {"Origin": ALLOWED, "Access-Control-Request-Method": "GET"}
    status, headers, body = http_call(f"{base}/health", "OPTIONS", b"", preflight)
    assert status == 405
    assert json.loads(body)["error"]
    assert not any(name.startswith("Access-Control-") for name in headers)


def test_the_openapi_document_holds_against_the_worker(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    """schemathesis generates requests from /openapi.json (valid and invalid ones) and
    checks every answer: never a 500, only documented statuses, bodies and headers as
    documented."""
    base = web_worker(stream_settings, workers)[1]
    rows = generate_attempts(200, users=4, seed=52)
    records = attempt_records(rows)
    produce(stream_settings.kafka_bootstrap, stream_settings.attempts_topic, records)
    wait_for_oracle(stream_settings, oracle(records))
    status, _, body = http_call(f"{base}/openapi.json")
    assert status == 200
    document = json.loads(body)
    assert document["openapi"].startswith("3.1")
    assert {
        "/stats/{user_id}/{sub_topic_id}/{learning_mode}",
        "/stats/{user_id}",
        "/stats",
    } <= set(document["paths"])
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_headers_conformance,response_schema_conformance",
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "10",
            # an erasure is real work (the broker, Redis): its own test sends it
            # (tests/worker/test_auth.py) and checks the answer against this schema
            "--exclude-operation-id",
            "eraseLearner",
            # statements too: tests/worker/test_xapi_http.py sends them as an LMS does
            "--exclude-operation-id",
            "postStatements",
            "--exclude-operation-id",
            "putStatement",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "POST /stats" in run.stdout
