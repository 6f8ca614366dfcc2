"""docs/platforms/nodejs.md, run for real: its modules (kafkajs and ioredis from the npm
registry, Node.js's own fetch) emit attempts with ids as numbers and as strings, subscribe
to the stats, and read every scope from Redis and over HTTP, against the broker, Redis and
a worker; everything they see is the oracle's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from performance_engine.platform.erase import erase_learner
from performance_engine.settings import Settings, settings_env
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import ROOT, assert_conforms, guide_files, oracle, results_json, wait_for_oracle

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(600)]

GUIDE = ROOT / "docs" / "platforms" / "nodejs.md"
MODULES = ("emit.mjs", "subscribe.mjs", "read-redis.mjs", "read-http.mjs")

#: What the test drives the guide's modules with (not part of the guide).
HARNESS = """
import { readFileSync } from "node:fs";
const [step, arg] = process.argv.slice(2);
const input = arg ? JSON.parse(readFileSync(arg, "utf8")) : null;
if (step === "emit") {
  const { emitAttempts, closeProducer } = await import("./emit.mjs");
  await emitAttempts(input);
  await closeProducer();
} else if (step === "subscribe") {
  const { subscribe } = await import("./subscribe.mjs");
  const got = {};
  let consumer;
  const done = new Promise((resolve) => {
    consumer = subscribe(async (stats) => {
      got[stats.scope] = [stats.version, stats.revision, stats];
      if (Object.entries(input).every(([k, v]) => got[k] && got[k][0] >= v)) resolve();
    }, "node-guide-test");
  });
  await done;
  await (await consumer).disconnect();
  console.log(JSON.stringify(got));
} else if (step === "erased") {
  const { subscribe } = await import("./subscribe.mjs");
  const gone = new Set();
  let consumer;
  const done = new Promise((resolve) => {
    const onErased = async (scope) => {
      gone.add(scope);
      if (input.every((s) => gone.has(s))) resolve();
    };
    consumer = subscribe(async () => {}, "node-guide-erased", onErased);
  });
  await done;
  await (await consumer).disconnect();
  console.log(JSON.stringify([...gone].sort()));
} else if (step === "read") {
  const { readScope, readLearner, closeRedis } = await import("./read-redis.mjs");
  const { fetchScope, fetchMany } = await import("./read-http.mjs");
  const out = { redis: {}, learners: {}, http: {}, many: await fetchMany(input) };
  for (const scope of input) {
    const [u, s, m] = scope.split(":");
    out.redis[scope] = await readScope(u, s, m);
    out.http[scope] = await fetchScope(u, s, m);
    out.learners[u] ??= await readLearner(u);
  }
  const nobody = ["987654321", "1", "standard"];
  out.missing = [await readScope(...nobody), await fetchScope(...nobody)];
  await closeRedis();
  console.log(JSON.stringify(out));
}
"""


def as_javascript_reads(stats: Any) -> dict[str, Any]:
    """A stats record as ``JSON.parse`` gives it: ids above 2^53 rounded to the nearest
    double (the guide says so, and keys everything by ``scope``, which stays exact)."""
    found = results_json(stats if isinstance(stats, dict) else json.loads(stats))
    for name in ("user_id", "sub_topic_id"):
        found[name] = float(found[name]) if found[name] > 2**53 else found[name]
    return found


@pytest.fixture(scope="module")
def node_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js 20 and npm are on this machine kind: the guide must run")
    folder = tmp_path_factory.mktemp("node-platform")
    (folder / "package.json").write_text('{"name": "platform", "private": true, "type": "module"}')
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "kafkajs@2", "ioredis@5"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = guide_files(GUIDE, "js")
    assert sorted(modules) == sorted(MODULES)
    for name, code in modules.items():
        (folder / name).write_text(code)
    (folder / "harness.mjs").write_text(HARNESS)
    return folder


def test_the_guide_lines_stay_short() -> None:
    """About ten lines of client code each (imports, configuration and blank lines aside)."""
    for name, code in guide_files(GUIDE, "js").items():
        lines = [
            line
            for line in code.splitlines()
            if line.strip() and not line.lstrip().startswith(("//", "import ", "const env"))
        ]
        assert len(lines) <= 22, (name, len(lines))


def test_the_nodejs_guide_against_a_worker(
    node_project: Path, stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    worker = workers(stream_settings)
    rows = generate_attempts(600, users=8, sub_topics=2, seed=71)
    for row in rows[::2]:  # half the ids as strings, as a JavaScript platform sends big ids
        row.update({k: str(row[k]) for k in ("user_id", "sub_topic_id", "question_id")})
    rows[0]["user_id"] = str(2**62 + 7)  # beyond what a JavaScript number holds exactly
    for row in rows[1::4]:
        row["occurred_at"] = (
            int(row["occurred_at"]) if str(row["occurred_at"]).isdigit() else row["occurred_at"]
        )
    expected = oracle(rows)
    env = {
        **os.environ,
        **settings_env(stream_settings),
        "KAFKA_BROKERS": stream_settings.kafka_bootstrap,
        "REDIS_URL": stream_settings.redis_url,
        "ENGINE_URL": f"http://127.0.0.1:{worker.env['PERF_ENGINE_WEB_PORT']}",
        "KAFKAJS_NO_PARTITIONER_WARNING": "1",
    }

    def node(step: str, data: Any, timeout: float = 120) -> str:
        path = tmp_path / f"{step}.json"
        path.write_text(json.dumps(data))
        done = subprocess.run(
            ["node", "harness.mjs", step, str(path)],
            cwd=node_project,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        lines = done.stdout.strip().splitlines()  # kafkajs logs on stdout: the result is last
        return lines[-1] if lines else ""

    node("emit", rows)
    wait_for_oracle(stream_settings, expected)  # the worker took them all, keyed right

    final = {str(scope): stats.version for scope, stats in expected.items()}
    got = json.loads(node("subscribe", final, timeout=180))
    assert {scope: item[0] for scope, item in got.items()} == final
    for scope, (_version, _revision, stats) in got.items():
        assert_conforms("stats", stats)
        assert as_javascript_reads(stats) == as_javascript_reads(
            expected[next(s for s in expected if str(s) == scope)].to_json()
        )

    scopes = sorted(final)
    read = json.loads(node("read", scopes))
    by_name = {str(scope): stats for scope, stats in expected.items()}
    for scope in scopes:
        want = as_javascript_reads(by_name[scope].to_json())
        assert as_javascript_reads(read["redis"][scope]) == want
        assert as_javascript_reads(read["http"][scope]) == want
    assert [as_javascript_reads(s) for s in read["many"]] == [
        as_javascript_reads(by_name[s].to_json()) for s in scopes
    ]
    for user, stats in read["learners"].items():
        assert sorted(s["scope"] for s in stats) == sorted(
            s for s in scopes if s.startswith(f"{user}:")
        )
    assert read["missing"] == [None, None]

    # A learner erased: the subscriber hands each of their scopes' tombstones to onErased.
    victim = int(scopes[-1].split(":")[0])
    report = erase_learner(victim, settings=stream_settings)
    assert report.scopes == sorted(s for s in scopes if s.startswith(f"{victim}:"))
    assert json.loads(node("erased", report.scopes, timeout=180)) == report.scopes
