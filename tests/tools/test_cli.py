"""The platform-side commands, run as a user runs them, against the real broker and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from performance_engine.metrics.types import ScopeKey
from performance_engine.settings import Settings, settings_env
from performance_engine.tools.demo import free_port
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import publish_events
from tests.services import RedisServer, read_topic, topic_is_empty

pytestmark = [pytest.mark.kafka]


def cli(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run(
        [sys.executable, "-m", "performance_engine.tools.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def down(settings: Settings, **changes: object) -> Settings:
    fields = {name: getattr(settings, name) for name in Settings.__dataclass_fields__}
    return Settings(**{**fields, **changes})


def test_check_all_good(stream_settings: Settings) -> None:
    done = cli(stream_settings, "check")
    assert done.returncode == 0, done.stdout
    assert [line.split()[:2] for line in done.stdout.splitlines()] == [
        ["ok", "kafka"],
        ["ok", "topics"],
        ["ok", "redis"],
        ["ok", "memory"],
        ["ok", "erasure"],
        ["ok", "web"],
        ["ok", "state"],
    ]
    assert done.stdout.splitlines()[-1].endswith("nothing committed yet: a new deployment")
    opened = cli(down(stream_settings, web_host="0.0.0.0"), "check")
    assert opened.returncode == 0, opened.stdout  # a warning, not a failure
    (line,) = [line for line in opened.stdout.splitlines() if line.split()[1] == "web"]
    assert line.startswith("warn  web      the worker listens on 0.0.0.0:")
    assert "no authentication" in line


def test_check_reports_each_failure(stream_settings: Settings, tmp_path: Path) -> None:
    no_topics = down(stream_settings, attempts_topic="never-made")
    done = cli(no_topics, "check")
    assert done.returncode == 1
    assert "FAIL  topics   missing: never-made" in done.stdout
    broker_down = down(stream_settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    done = cli(broker_down, "check")
    assert done.returncode == 1
    assert done.stdout.splitlines()[0].startswith("FAIL  kafka    Kafka at 127.0.0.1:")
    redis_down = down(stream_settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    done = cli(redis_down, "check")
    assert done.returncode == 1
    assert "FAIL  redis    Redis at redis://127.0.0.1:" in done.stdout
    mapping = tmp_path / "xapi.toml"
    mapping.write_text('[xapi]\nsub_topic_from = "sideways"\n')
    done = cli(down(stream_settings, xapi_mapping_path=mapping), "check")
    assert done.returncode == 1
    assert "FAIL  xapi" in done.stdout
    assert "sub_topic_from must be parent or grouping" in done.stdout
    mapping.write_text('[xapi]\nsub_topic_from = "grouping"\n')
    done = cli(down(stream_settings, xapi_mapping_path=mapping), "check")
    assert "ok    xapi     " in done.stdout


def test_check_and_worker_refuse_an_evicting_redis(
    stream_settings: Settings, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        import redis

        redis.Redis.from_url(server.url).config_set("maxmemory-policy", "allkeys-lru")
        evicting = down(stream_settings, redis_url=server.url)
        done = cli(evicting, "check")
        assert done.returncode == 1
        assert "FAIL  memory   maxmemory-policy is allkeys-lru" in done.stdout
        assert cli(evicting, "check", "--allow-eviction").returncode == 0
        worker = cli(evicting, "worker")
        assert worker.returncode == 1
        assert worker.stderr.strip().splitlines() == [
            "perf-engine worker: error: Redis's maxmemory-policy is 'allkeys-lru': it may "
            "evict the engine's state and lose attempts; set it to noeviction (CONFIG SET "
            "maxmemory-policy noeviction, or in redis.conf), or accept the risk with "
            "--allow-eviction / PERF_ENGINE_ALLOW_EVICTION=true"
        ]
    finally:
        server.stop()


def test_emit_jsonl_csv_and_stdin(stream_settings: Settings, tmp_path: Path) -> None:
    rows = generate_attempts(30, users=4, seed=51)
    jsonl, csv = tmp_path / "a.jsonl", tmp_path / "b.csv"
    pd.DataFrame(rows[:10]).to_json(jsonl, orient="records", lines=True)
    pd.DataFrame(rows[10:20]).to_csv(csv, index=False)
    assert cli(stream_settings, "emit", str(jsonl)).stdout.startswith("emitted 10 attempts")
    assert cli(stream_settings, "emit", str(csv)).stdout.startswith("emitted 10 attempts")
    piped = "".join(json.dumps(r) + "\n" for r in rows[20:])
    assert cli(stream_settings, "emit", "-", stdin=piped).stdout.startswith("emitted 10 attempts")
    piped_csv = pd.DataFrame(rows[20:25]).to_csv(index=False)
    done = cli(stream_settings, "emit", "-", "--format", "csv", stdin=piped_csv)
    assert done.stdout.startswith("emitted 5 attempts"), done.stderr
    sent = read_topic(stream_settings.kafka_bootstrap, stream_settings.attempts_topic)
    assert sorted(json.loads(m.value)["attempt_id"] for m in sent) == sorted(
        [r["attempt_id"] for r in rows] + [r["attempt_id"] for r in rows[20:25]]
    )


def test_emit_bad_row_sends_nothing(stream_settings: Settings, tmp_path: Path) -> None:
    rows = generate_attempts(5, users=2, seed=52)
    rows[3]["is_correct"] = "maybe"
    path = tmp_path / "bad.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    done = cli(stream_settings, "emit", str(path))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"perf-engine emit: error: {path}: row 4: ")
    assert topic_is_empty(stream_settings.kafka_bootstrap, stream_settings.attempts_topic)
    done = cli(stream_settings, "emit", str(path), "--skip-invalid")
    assert done.stdout.startswith("emitted 4 attempts to")
    assert "1 invalid rows skipped" in done.stdout
    missing = cli(stream_settings, "emit", str(tmp_path / "nope.jsonl"))
    assert (missing.returncode, len(missing.stderr.strip().splitlines())) == (1, 1)
    broker_down = down(stream_settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    unreachable = cli(broker_down, "emit", str(path), "--skip-invalid")
    assert unreachable.returncode == 1
    assert (
        unreachable.stderr.strip()
        .splitlines()[-1]
        .startswith("perf-engine emit: error: Kafka at 127.0.0.1:")
    )


def test_simulate(stream_settings: Settings) -> None:
    done = cli(
        stream_settings,
        "simulate",
        "--count",
        "60",
        "--rate",
        "2000",
        "--users",
        "7",
        "--invalid",
        "0.1",
        "--seed",
        "4",
    )
    assert done.returncode == 0, done.stderr
    sent = read_topic(stream_settings.kafka_bootstrap, stream_settings.attempts_topic)
    assert len(sent) == 60
    valid = [m for m in sent if m.value.startswith(b'{"attempt_id":"s4-')]
    assert done.stdout.startswith(f"sent {len(valid)} attempts ({60 - len(valid)} malformed)")
    assert {json.loads(m.value)["user_id"] for m in valid} <= set(range(1, 8))


def test_watch(stream_settings: Settings) -> None:
    a = ScopeKey(5, 6, "mastery")
    publish_events(stream_settings, [(a, 1), (a, 2), (a, 2)])
    done = cli(stream_settings, "watch", "--from-beginning", "--timeout", "3")
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == [
        "user 5 sub-topic 6 mastery v1",
        "user 5 sub-topic 6 mastery v2",
    ]
    done = cli(stream_settings, "watch", "--from-beginning", "--count", "1", "--json")
    event = json.loads(done.stdout)
    assert (event["stats"]["version"], set(event)) == (
        1,
        {"event_id", "stats", "updated_at", "source"},
    )
    broker_down = down(stream_settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    unreachable = cli(broker_down, "watch")
    assert unreachable.returncode == 1
    assert len(unreachable.stderr.strip().splitlines()) == 1


def test_simulate_unreachable_broker(stream_settings: Settings) -> None:
    broker_down = down(stream_settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    done = cli(broker_down, "simulate", "--count", "5")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("perf-engine simulate: error: Kafka at 127.0.0.1:")
