"""The dashboard's JSON and live stream against a running worker (real broker, real Redis):
what the pages are drawn from equals the oracle; bad and hostile parameters get 400/404."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from performance_engine.metrics.types import DifficultyEnum, ScopeKey
from performance_engine.settings import Settings
from performance_engine.store.dashboard_index import DashboardIndex
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.stats_store import AsyncStatsStore
from performance_engine.tools.simulator import generate_attempts
from performance_engine.worker.dashboard import feed as feed_module
from performance_engine.worker.dashboard.feed import Erased, Point, StatsFeed, Summary, Update
from tests.helpers import oracle, results_json, run, wait_for_oracle
from tests.services import RedisServer, attempt_records, produce, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str) -> tuple[int, Any]:
    status, _, body = get(url)
    return status, json.loads(body)


def test_the_dashboards_json_follows_the_stats(
    stream_settings: Settings, workers: Callable[..., Any]
) -> None:
    worker = workers(stream_settings)
    base = f"http://127.0.0.1:{worker.env['PERF_ENGINE_WEB_PORT']}/dashboard"
    rows = generate_attempts(1500, users=40, seed=61)
    produce(stream_settings.kafka_bootstrap, stream_settings.attempts_topic, attempt_records(rows))
    expected = oracle(rows)
    wait_for_oracle(stream_settings, expected)
    cohorts = Counter((s.sub_topic_id, s.learning_mode) for s in expected)

    def indexed() -> bool:
        status, body = get_json(f"{base}/api/cohorts")
        found = {(c["sub_topic_id"], c["learning_mode"]): c["learners"] for c in body["cohorts"]}
        return status == 200 and found == dict(cohorts)

    wait_until(indexed, 60, "the dashboard's index to hold every learner")

    # a cohort, a page at a time, in each order
    (sub, mode), size = cohorts.most_common(1)[0]
    members = {
        s.user_id: stats
        for s, stats in expected.items()
        if (s.sub_topic_id, s.learning_mode) == (sub, mode)
    }
    status, page = get_json(f"{base}/api/cohorts/{sub}/{mode}?per_page=200")
    assert status == 200
    assert (page["learners"], page["order"], page["dir"]) == (size, "stuck", "desc")
    assert {r["user_id"] for r in page["rows"]} == set(members)
    stuck = [r["attempts_not_completed"] for r in page["rows"]]
    assert stuck == sorted(stuck, reverse=True)
    for row in page["rows"]:
        stats = members[row["user_id"]]
        assert row["total_attempts"] == stats.total_attempts
        assert row["mastery"] == (stats.learning.mastery_probability if stats.learning else None)
        for d, cell in row["difficulties"].items():
            difficulty = DifficultyEnum(d)
            assert cell["completion"] == stats.difficulty_completion[difficulty].value
            assert cell["score"] == stats.difficulty_scores[difficulty]
    status, first = get_json(f"{base}/api/cohorts/{sub}/{mode}?order=mastery&dir=asc&per_page=2")
    _, second = get_json(f"{base}/api/cohorts/{sub}/{mode}?order=mastery&dir=asc&per_page=2&page=2")
    masteries = [r["mastery"] for r in first["rows"] + second["rows"]]
    assert masteries == sorted(masteries)
    assert len(masteries) == min(4, size)
    one = next(iter(members))
    status, found = get_json(f"{base}/api/cohorts/{sub}/{mode}?user_id={one}")
    assert [r["user_id"] for r in found["rows"]] == [one]

    # a learner: every scope, exactly the stored stats, and its recent points
    user = next(iter(expected)).user_id
    status, learner = get_json(f"{base}/api/learners/{user}")
    assert status == 200
    mine = {s: stats for s, stats in expected.items() if s.user_id == user}
    assert sorted(
        json.dumps(results_json(s["stats"]), sort_keys=True) for s in learner["scopes"]
    ) == sorted(
        json.dumps(results_json(stats.to_json()), sort_keys=True) for stats in mine.values()
    )
    assert all(s["history"] for s in learner["scopes"])
    assert learner["xapi_actor"] is None  # its attempts came as attempts, not statements

    # the overview
    status, overview = get_json(f"{base}/api/overview")
    assert status == 200
    assert overview["totals"]["attempts_applied"] == sum(s.version for s in expected.values())
    assert set(overview["lag"]) == {str(p) for p in range(stream_settings.partitions)}
    assert overview["recent"]

    # the page and its files, with a strict policy
    status, headers, html = get(base)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b'<script src="/dashboard/static/app.js" defer></script>' in html
    status, headers, _ = get(f"{base}/vendor/uPlot.iife.min.js")
    assert (status, headers["Content-Type"].split(";")[0]) == (200, "text/javascript")
    assert get(f"{base}/vendor/uPlot.LICENSE")[0] == 404  # served: code and styles only


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/cohorts/x/standard", 400, "sub_topic_id must be a positive whole number"),
        ("/api/cohorts/0/standard", 400, "sub_topic_id"),
        ("/api/cohorts/99999999999999999999999/standard", 400, "sub_topic_id"),
        ("/api/cohorts/101/%3Cscript%3E", 400, "not a valid mode name"),
        ("/api/cohorts/101/standard%0A", 400, "not a valid mode name"),
        ("/api/cohorts/101/standard?order=name", 400, "order must be one of stuck, mastery"),
        ("/api/cohorts/101/standard?dir=sideways", 400, "dir must be asc or desc"),
        ("/api/cohorts/101/standard?page=0", 400, "page must be a positive whole number"),
        ("/api/cohorts/101/standard?page=-1", 400, "page"),
        ("/api/cohorts/101/standard?per_page=1000", 400, "per_page must be at most 200"),
        ("/api/cohorts/101/standard?user_id=%27%20or%201%3D1", 400, "user_id"),
        ("/api/cohorts/101/nobody", 404, "no learners in sub-topic 101"),
        ("/api/learners/abc", 400, "user_id must be a positive whole number"),
        ("/api/learners/123456789", 404, "no stats for learner 123456789"),
        ("/api/stream?user_id=x", 400, "user_id"),
        ("/static/..%2F..%2F__init__.py", 404, "no file"),
        ("/static/app.py", 404, "no file"),
        ("/vendor/%2Fetc%2Fpasswd", 404, "no file"),
    ],
)
def test_bad_and_hostile_parameters(
    dashboard_base: str, path: str, status: int, message: str
) -> None:
    got, headers, body = get(dashboard_base + path)
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    assert message in json.loads(body)["error"]
    assert "default-src 'self'" in headers["Content-Security-Policy"]


@pytest.fixture(scope="module")
def dashboard_base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One worker for the parameter tests (module scope: they only read)."""
    import redis

    from tests.services import Worker, own_stream_settings, worker_env

    broker = request.getfixturevalue("broker")
    redis_url = request.getfixturevalue("redis_url")
    tag = "dash" + str(abs(hash(tmp_path_factory.getbasetemp())) % 10**8)
    settings = own_stream_settings(broker, redis_url, f"pe-test-{tag}", 2)
    directory = tmp_path_factory.mktemp("dashboard")
    worker = Worker(worker_env(settings, directory), directory / "worker.log").start()
    base = f"http://127.0.0.1:{worker.env['PERF_ENGINE_WEB_PORT']}/dashboard"
    produce(
        broker, settings.attempts_topic, attempt_records(generate_attempts(50, users=5, seed=3))
    )

    def ready() -> bool:
        try:
            status, body = get_json(f"{base}/api/cohorts")
            return status == 200 and bool(body["cohorts"])
        except OSError:
            return False

    try:
        wait_until(ready, 90, "the dashboard")
        yield base
    finally:
        worker.stop()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{settings.key_prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_the_live_stream_of_one_learner(
    stream_settings: Settings, workers: Callable[..., Any]
) -> None:
    worker = workers(stream_settings)
    port = int(worker.env["PERF_ENGINE_WEB_PORT"])
    wait_until(lambda: _answers(port), 60, "the worker's dashboard")
    rows = generate_attempts(30, users=3, seed=62)
    user = rows[0]["user_id"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as stream:
        stream.sendall(
            f"GET /dashboard/api/stream?user_id={user} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        received = b""
        while b"event: overview" not in received:
            received += stream.recv(65536)
        assert b"text/event-stream" in received
        produce(
            stream_settings.kafka_bootstrap, stream_settings.attempts_topic, attempt_records(rows)
        )
        update = re.compile(rb"event: update\ndata: (\{[^\n]*\})\n")  # one chunk per event
        while not update.search(received):
            received += stream.recv(65536)
    updates = [json.loads(found) for found in update.findall(received)]
    assert updates
    assert {u["user_id"] for u in updates} == {user}  # only the learner asked for


def _answers(port: int) -> bool:
    """The dashboard answers (the web server starts before the engine's service)."""
    try:
        return get(f"http://127.0.0.1:{port}/dashboard/api/cohorts")[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize("order", ["stuck", "mastery", "attempts"])
def test_a_page_of_100000_learners_costs_a_page_not_a_scan(tmp_path: Path, order: str) -> None:
    """100,000 learners in one cohort: a page is one ZCARD and one ZRANGE, whatever the
    order or the page; no command walks the key space (a private Redis counts them)."""
    server = RedisServer(tmp_path / "redis", options=("--appendonly", "no"))
    server.start()
    try:
        settings = Settings(redis_url=server.url, key_prefix="pe-big")

        async def scenario() -> list[int]:
            async with AsyncStatsStore.from_settings(settings) as store:
                index = DashboardIndex(store.client, store.keys)
                learners = [
                    Summary(
                        user_id=user,
                        sub_topic_id=7,
                        learning_mode="standard",
                        version=user % 50 + 1,
                        total_attempts=user % 50 + 1,
                        total_correct_attempts=user % 25,
                        attempts={"easy": user % 50 + 1, "medium": 0, "hard": 0},
                        passed_difficulties=["easy"] if user % 3 == 0 else [],
                    )
                    for user in range(1, 100_001)
                ]
                for start in range(0, len(learners), 5000):
                    await index.add(learners[start : start + 5000])
                await store.client.config_resetstat()
                total, page = await index.page(
                    7, "standard", order, descending=True, offset=49_950, limit=50
                )
                assert total == 100_000
                assert len(page) == 50
                return page

        page = run(scenario())
        assert len(set(page)) == 50
        calls = {
            name.removeprefix("cmdstat_"): stat["calls"]
            for name, stat in server.client().info("commandstats").items()
        }
        data = {n: c for n, c in calls.items() if n not in ("config|resetstat", "hello", "info")}
        assert data in ({"zcard": 1, "zrevrange": 1}, {"zcard": 1, "zrange": 1}), calls
    finally:
        server.stop()


def test_the_feed_keeps_the_newest_points_of_the_latest_scopes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A learner chart's points: the newest HISTORY_POINTS per scope in version order,
    None kept as None, an older version ignored; past HISTORY_SCOPES scopes the one
    updated longest ago is forgotten."""
    monkeypatch.setattr(feed_module, "HISTORY_SCOPES", 3)
    feed = StatsFeed(Settings(), DashboardIndex(None, KeySpace("unused")))  # not used here
    first, *others = (ScopeKey(user, 7, "standard") for user in (1, 2, 3, 4))
    points = [
        Point(1000.0 + v, None if v % 3 == 0 else v / 100, 0.5 if v % 2 else None, v)
        for v in range(1, 100)
    ]
    for point in points:
        feed._remember(first, point)
    feed._remember(first, Point(5000.0, 0.9, 0.9, 50))  # older than what it holds
    assert feed.history(first) == points[-feed_module.HISTORY_POINTS :]
    for scope in others[:2]:
        feed._remember(scope, points[0])
    feed._remember(first, points[-1])  # already there: no new point, but updated latest
    feed._remember(others[2], points[0])  # a fourth scope: the second one goes
    assert feed.history(others[0]) == []
    assert feed.history(first) == points[-feed_module.HISTORY_POINTS :]
    assert feed.history(others[2]) == [points[0]]


def test_an_erasure_reaches_the_streams_watching_even_a_full_one(
    redis_url: str, key_prefix: str
) -> None:
    """A learner's tombstones: their page's stream and the overview's hear of it, even
    when the browser is behind (an older update makes room); another learner's does not."""
    import redis.asyncio as aioredis

    def update(user: int, version: int) -> Update:
        return Update(user, 1, "standard", version, version, [], None, None, "", f"a{version}")

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            feed = StatsFeed(Settings(), DashboardIndex(client, KeySpace(key_prefix)))
            theirs, everyone, others = feed.listen(7), feed.listen(), feed.listen(8)
            for version in range(feed_module.STREAM_BACKLOG):
                theirs.put_nowait(update(7, version))
            erased = [ScopeKey(7, 1, "standard"), ScopeKey(7, 2, "quiz")]
            await feed._forget(erased)
            drained = [[q.get_nowait() for _ in range(q.qsize())] for q in (theirs, everyone)]
            return drained[0], drained[1], [others.get_nowait() for _ in range(others.qsize())]
        finally:
            await client.aclose()

    theirs, everyone, others = run(scenario())
    notice = Erased(7, (ScopeKey(7, 1, "standard"), ScopeKey(7, 2, "quiz")))
    assert len(theirs) == feed_module.STREAM_BACKLOG
    assert theirs[-1] == notice
    assert theirs[0] == update(7, 1)  # the oldest update made room
    assert everyone == [notice]
    assert others == []
