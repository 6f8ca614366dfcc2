"""Tokens for every reader: the tokens file, and a worker that serves nothing without the
right token (``PERF_ENGINE_WEB_TOKENS_FILE``), in a real browser too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest

from performance_engine.errors import ConfigurationError
from performance_engine.settings import Settings, settings_env
from performance_engine.tokens import (
    SCOPES,
    add_token,
    digest,
    find_token,
    read_tokens,
    revoke_token,
)
from performance_engine.tools.simulator import generate_attempts
from performance_engine.worker.auth import MAX_FAILURES, MAX_SESSIONS, Guard, scope_of
from performance_engine.worker.openapi import Erased
from tests.helpers import http_call, oracle, wait_for_oracle, web_worker
from tests.services import attempt_records, produce


def test_tokens_are_stored_as_hashes_and_found_by_them(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    reader = add_token(path, "teacher-app", ["stats:read"])
    board = add_token(path, "ops", ["dashboard", "metrics"])
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    assert reader not in text
    assert board not in text
    assert f"teacher-app stats:read sha256:{digest(reader)}" in text
    tokens = read_tokens(path)
    assert [t.name for t in tokens] == ["teacher-app", "ops"]
    assert find_token(tokens, reader) == tokens[0]
    assert find_token(tokens, board) == tokens[1]
    for hostile in ("", " ", reader + " ", reader[:-1], "x" * 10_000, "é" + reader, digest(reader)):
        assert find_token(tokens, hostile) is None, hostile
    with pytest.raises(ConfigurationError, match="exists"):
        add_token(path, "ops", ["metrics"])
    with pytest.raises(ConfigurationError, match="choose from"):
        add_token(path, "new", ["everything"])
    assert revoke_token(path, "ops")
    assert not revoke_token(path, "ops")
    assert [t.name for t in read_tokens(path)] == ["teacher-app"]
    path.write_text(text + "broken line\n")
    with pytest.raises(ConfigurationError, match="line 3"):
        read_tokens(path)


def test_each_path_needs_its_scope() -> None:
    assert scope_of("GET", "/health") is None
    assert scope_of("GET", "/openapi.json") is None
    assert scope_of("GET", "/dashboard/sign-in") is None
    assert scope_of("GET", "/stats/1/2/standard") == "stats:read"
    assert scope_of("POST", "/stats") == "stats:read"
    assert scope_of("GET", "/predict/1/2/standard") == "stats:read"
    assert scope_of("GET", "/dashboard/api/overview") == "dashboard"
    assert scope_of("GET", "/metrics") == "metrics"
    assert scope_of("GET", "/router") == ""  # anything else: a valid token
    assert set(SCOPES) >= {"stats:read", "dashboard", "metrics"}


def test_sessions_end_with_their_token_or_their_time(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    add_token(path, "teacher", ["dashboard"])
    now = [0.0]
    guard = Guard(path, clock=lambda: now[0])
    (token,) = guard.tokens()
    sid = guard.open_session(token)
    assert guard.session_token(sid) == token
    assert guard.session_token("made-up") is None
    now[0] += 8 * 3600 + 1
    assert guard.session_token(sid) is None  # expired
    sid = guard.open_session(token)
    revoke_token(path, "teacher")
    assert guard.session_token(sid) is None  # revoked with its token
    many = Guard(path, clock=lambda: now[0])
    for _ in range(MAX_SESSIONS + 5):
        many.open_session(token)
    assert len(many.sessions) == MAX_SESSIONS


def test_failed_attempts_are_limited_per_client(tmp_path: Path) -> None:
    now = [1000.0]
    guard = Guard(tmp_path / "tokens", clock=lambda: now[0])
    for _ in range(MAX_FAILURES):
        assert guard.limited("10.0.0.1") == 0
        guard.failed("10.0.0.1")
    assert guard.limited("10.0.0.1") > 0
    assert guard.limited("10.0.0.2") == 0  # others are not held back
    now[0] += 61
    assert guard.limited("10.0.0.1") == 0


# -- against a running worker -------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_with_tokens_serves_each_reader_its_scope(
    stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    path = tmp_path / "tokens"
    tokens = {scope: add_token(path, scope.replace(":", "-"), [scope]) for scope in SCOPES}
    settings = replace(stream_settings, web_tokens_file=path)
    worker, base = web_worker(settings, workers)
    rows = generate_attempts(200, users=4, seed=91)
    expected = oracle(attempt_records(rows))
    produce(settings.kafka_bootstrap, settings.attempts_topic, attempt_records(rows))
    wait_for_oracle(settings, expected)
    scope = min(expected)
    other = max(s.user_id for s in expected)
    assert other != scope.user_id
    batch = json.dumps({"scopes": [str(scope)]}).encode()
    path3 = f"{scope.user_id}/{scope.sub_topic_id}/{scope.learning_mode}"
    endpoints = [  # (method, path, body, scope it needs)
        ("GET", f"/stats/{path3}", None, "stats:read"),
        ("GET", f"/stats/{scope.user_id}", None, "stats:read"),
        ("POST", "/stats", batch, "stats:read"),
        ("GET", f"/predict/{path3}?question_id=1&difficulty=easy", None, "stats:read"),
        ("GET", "/metrics", None, "metrics"),
        ("GET", "/dashboard/api/overview", None, "dashboard"),
        ("GET", "/dashboard/api/cohorts", None, "dashboard"),
        ("GET", f"/dashboard/api/learners/{scope.user_id}", None, "dashboard"),
        ("DELETE", f"/learners/{other}?reason=asked", None, "learner:erase"),
    ]  # fmt: skip
    for method, where, body, needed in endpoints:
        status, headers, reply = http_call(base + where, method, body)
        assert (status, headers.get("WWW-Authenticate")) == (401, "Bearer"), where
        assert json.loads(reply)["error"] == "a token is required"
        for scope_name, token in tokens.items():
            status, _, reply = http_call(base + where, method, body, token=token)
            if scope_name == needed:
                assert status == 200, (where, reply)
                if method == "DELETE":  # the erasure: as documented, named after the token
                    erased = msgspec.json.decode(reply, type=Erased)
                    assert erased.user_id == str(other)
                    assert erased.scopes
                    assert "asked by learner-erase" in worker.log.read_text()
            else:
                assert status == 403, (where, scope_name)
                assert f"lacks the scope '{needed}'" in json.loads(reply)["error"]
    for open_path in ("/health", "/openapi.json", "/dashboard/sign-in"):
        assert http_call(base + open_path)[0] == 200, open_path
    assert http_call(base + "/no/such/path")[0] == 401  # nothing is told without a token
    assert http_call(base + "/no/such/path", token=tokens["metrics"])[0] == 404

    good = tokens["stats:read"]
    url = f"{base}/stats/{scope.user_id}"
    # (HTTP drops whitespace around a header's value: a trailing space never arrives)
    for hostile in ("", good + " x", good + good, "ü" + good, good[:-1], "Basic a", "x" * 4000):
        status, _, reply = http_call(url, headers={"Authorization": f"Bearer {hostile}"})
        assert status == 401, hostile[:20]
        assert json.loads(reply)["error"] == "the token is not valid"
    # a 10 KB header: the HTTP server refuses it before any token is looked at
    assert http_call(url, headers={"Authorization": "Bearer " + "x" * 10_240})[0] == 400
    status, _, _ = http_call(
        url, headers={"Authorization": "Bearer \u00e9\u00e9".encode().decode("latin-1")}
    )
    assert status == 401
    assert http_call(url, token=good)[0] == 200  # the worker is alive and well

    # revoked and added while the worker runs
    assert revoke_token(path, "stats-read")
    assert http_call(url, token=good)[0] == 401
    late = add_token(path, "late-app", ["stats:read"])
    assert http_call(url, token=late)[0] == 200

    # too many wrong tokens from one client: 429 for a minute, for that client
    for _ in range(MAX_FAILURES):
        http_call(url, token="pe_wrong")
    status, headers, reply = http_call(url, token=late)
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert "too many failed attempts" in json.loads(reply)["error"]

    log = worker.log.read_text()
    assert "denied GET /stats/" in log
    assert "(token: metrics)" in log  # a 403 names the token
    for token in (*tokens.values(), late):
        assert token not in log  # never the token itself


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_open_bind_without_tokens_is_refused_in_one_line(
    stream_settings: Settings, tmp_path: Path
) -> None:
    env = {**os.environ, **settings_env(replace(stream_settings, web_host="0.0.0.0"))}
    env["PERF_ENGINE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "performance_engine.tools.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("perf-engine worker: error: PERF_ENGINE_WEB_HOST=0.0.0.0 serves")
    assert "--insecure-open-http" in line
