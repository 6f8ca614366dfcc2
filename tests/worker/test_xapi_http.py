"""``POST`` and ``PUT /xAPI/statements`` against a running worker: statements shaped like
those of Open edX's event-routing backends become attempts, the stats equal the oracle over
the attempts they stand for; resends are duplicates, a reused id with another body is
refused; the endpoint needs the ``xapi:write`` scope (bearer, or HTTP basic as Open edX's
and Moodle's LRS settings send it)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from performance_engine.settings import Settings
from performance_engine.store.keyspace import KeySpace
from performance_engine.tokens import add_token
from performance_engine.tools.simulator import generate_attempts
from performance_engine.xapi import ATTEMPTED
from tests.helpers import http_call, oracle, wait_for_oracle, web_worker
from tests.xapi_statements import VERSION, as_statement, attempts_of

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"lms:{token}".encode()).decode()}


def test_an_lms_posts_statements_and_the_stats_follow(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    lms = add_token(tokens, "open-edx", ["xapi:write"])
    reader = add_token(tokens, "reader", ["stats:read"])
    prometheus = add_token(tokens, "prometheus", ["metrics"])
    settings = replace(stream_settings, web_tokens_file=tokens, xapi_statement_days=30)
    _, base = web_worker(settings, workers)
    url = f"{base}/xAPI/statements"
    statements = [as_statement(r) for r in generate_attempts(400, users=12, seed=81)]
    browser = {**as_statement(generate_attempts(1, users=1, seed=82)[0]), "verb": {"id": ATTEMPTED}}
    del browser["result"]
    for start in range(0, len(statements), 200):
        batch = statements[start : start + 200] + ([browser] if start == 0 else [])
        status, _, body = http_call(url, "POST", batch, {**VERSION, **basic(lms)})
        assert status == 200, body
        assert json.loads(body) == [s["id"] for s in batch]
    expected = oracle(attempts_of(statements))
    wait_for_oracle(settings, expected)
    metrics = http_call(f"{base}/metrics", token=prometheus)[2].decode()
    assert 'perf_engine_xapi_statements_total{result="counted"} 400.0' in metrics
    assert 'perf_engine_xapi_statements_total{result="ignored:verb_not_counted"} 1.0' in metrics

    # A resend is a duplicate; a reused id with another body changes nothing.
    status, _, _ = http_call(
        url, "POST", statements[:50], {**VERSION, "Authorization": f"Bearer {lms}"}
    )
    assert status == 200
    # ... also serialised otherwise, with what an LRS in between adds (xAPI compares
    # statements, not bytes)
    forwarded = [
        {**s, "stored": "2026-12-01T00:00:00Z", "authority": {"mbox": "mailto:lrs@x.org"}}
        for s in statements[50:60]
    ]
    body = json.dumps(forwarded, indent=2, sort_keys=True).encode()
    status, _, answer = http_call(url, "POST", body, {**VERSION, **basic(lms)})
    assert status == 200, answer
    changed = {**statements[0], "result": {"success": not statements[0]["result"]["success"]}}
    status, _, body = http_call(url, "POST", [changed], {**VERSION, **basic(lms)})
    assert status == 409, body
    assert statements[0]["id"] in json.loads(body)["error"]
    wait_for_oracle(settings, expected)

    # PUT with its id, as Open edX's LRS client sends one.
    extra = as_statement(generate_attempts(401, users=12, seed=81)[400])
    status, _, body = http_call(
        f"{url}?statementId={extra['id']}", "PUT", extra, {**VERSION, **basic(lms)}
    )
    assert status == 204, body
    wait_for_oracle(settings, oracle(attempts_of([*statements, extra])))
    # Each statement is remembered for PERF_ENGINE_XAPI_STATEMENT_DAYS from its receipt.
    client = redis.Redis.from_url(settings.redis_url)
    keys = KeySpace(settings.key_prefix)
    for statement in (statements[0], extra):
        ttl = client.ttl(keys.xapi_statement(statement["id"]))
        assert 29 * 86_400 < ttl <= 30 * 86_400
    client.close()

    # What is refused, and why.
    bad = {**statements[1], "timestamp": "yesterday"}
    status, _, body = http_call(url, "POST", [statements[2], bad], {**VERSION, **basic(lms)})
    assert status == 400
    assert "statements[1]: xapi_bad_timestamp" in json.loads(body)["error"]
    assert http_call(url, "POST", [statements[2]], basic(lms))[0] == 400  # no version header
    assert http_call(url, "POST", [statements[2]], VERSION)[0] == 401
    assert http_call(url, "POST", [statements[2]], {**VERSION, **basic(reader)})[0] == 403
    assert http_call(url, "POST", b"[" * 10_000, {**VERSION, **basic(lms)})[0] == 400
    document = json.loads(http_call(f"{base}/openapi.json")[2])
    assert set(document["paths"]["/xAPI/statements"]) == {"post", "put"}
