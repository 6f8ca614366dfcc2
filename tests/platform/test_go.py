"""docs/platforms/go.md: its four files compile with Debian's Go toolchain and client
packages (confluent-kafka-go on librdkafka, redigo), and its reads (every scope from Redis
and over HTTP, a learner's scopes, a batch) run for real against Redis and a worker and see
the oracle's stats. Its Kafka half is compiled, not run: the test broker (tansu) does not
complete librdkafka 2.0's version handshake, as the guide says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from performance_engine.settings import Settings, settings_env
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import ROOT, assert_conforms, guide_files, oracle, results_json, wait_for_oracle
from tests.services import attempt_records, produce

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(600)]

GUIDE = ROOT / "docs" / "platforms" / "go.md"
FILES = ("emit.go", "subscribe.go", "read_redis.go", "read_http.go")
GOPATH = "/usr/share/gocode"  # where Debian's Go packages put their sources

#: What the test drives the guide's functions with (not part of the guide).
HARNESS = """package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gomodule/redigo/redis"
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func main() {
	data, err := os.ReadFile(os.Args[2])
	must(err)
	switch os.Args[1] {
	case "emit":
		var attempts []Attempt
		must(json.Unmarshal(data, &attempts))
		must(EmitAttempts(attempts))
	case "subscribe":
		var want map[string]int64
		must(json.Unmarshal(data, &want))
		got := map[string]json.RawMessage{}
		must(Subscribe("go-guide-test", func(scope string, stats json.RawMessage) bool {
			got[scope] = stats
			for name, version := range want {
				var head struct{ Version int64 `json:"version"` }
				stats, ok := got[name]
				if !ok || json.Unmarshal(stats, &head) != nil || head.Version < version {
					return true
				}
			}
			return false
		}, func(scope string) bool { return true }))
		out, _ := json.Marshal(got)
		fmt.Println(string(out))
	case "read":
		var scopes []string
		must(json.Unmarshal(data, &scopes))
		conn, err := redis.DialURL(env("REDIS_URL", "redis://localhost:6379/0"))
		must(err)
		fromRedis, fromHTTP := map[string]json.RawMessage{}, map[string]json.RawMessage{}
		learners := map[string]map[string]string{}
		for _, scope := range scopes {
			parts := strings.Split(scope, ":")
			user, _ := strconv.ParseInt(parts[0], 10, 64)
			sub, _ := strconv.ParseInt(parts[1], 10, 64)
			fromRedis[scope], err = ReadScope(conn, user, sub, parts[2])
			must(err)
			fromHTTP[scope], err = FetchScope(user, sub, parts[2])
			must(err)
			learners[parts[0]], err = ReadLearner(conn, user)
			must(err)
		}
		many, err := FetchMany(scopes)
		must(err)
		noRedis, err := ReadScope(conn, 987654321, 1, "standard")
		must(err)
		noHTTP, err := FetchScope(987654321, 1, "standard")
		must(err)
		out, _ := json.Marshal(map[string]any{
			"redis": fromRedis, "http": fromHTTP, "learners": learners, "many": many,
			"missing": []bool{noRedis == nil, noHTTP == nil},
		})
		fmt.Println(string(out))
	}
}
"""


@pytest.fixture(scope="module")
def go_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None or not Path(GOPATH, "src/github.com/gomodule/redigo").is_dir():
        pytest.fail(".ci/run installs Debian's Go and its client packages: the guide must run")
    folder = tmp_path_factory.mktemp("go-platform")
    files = guide_files(GUIDE, "go")
    assert sorted(files) == sorted(FILES)
    for name, code in files.items():
        (folder / name).write_text(code)
    (folder / "main.go").write_text(HARNESS)
    env = {
        **os.environ,
        "GOPATH": GOPATH,
        "GO111MODULE": "off",
        "GOCACHE": str(folder / ".cache"),
        "GOFLAGS": "",
    }
    done = subprocess.run(
        [go, "build", "-o", "platform", "."],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "platform"


def test_the_go_guide_against_a_worker(
    go_program: Path, stream_settings: Settings, workers: Callable[..., Any], tmp_path: Path
) -> None:
    worker = workers(stream_settings)
    rows = generate_attempts(400, users=6, sub_topics=2, seed=81)
    rows[0]["user_id"] = 2**62 + 7  # beyond what a double holds: exact through Go's int64
    expected = oracle(rows)
    env = {
        **os.environ,
        **settings_env(stream_settings),
        "KAFKA_BROKERS": stream_settings.kafka_bootstrap,
        "REDIS_URL": stream_settings.redis_url,
        "ENGINE_URL": f"http://127.0.0.1:{worker.env['PERF_ENGINE_WEB_PORT']}",
    }

    def run(step: str, data: Any, timeout: float = 120) -> str:
        path = tmp_path / f"{step}.json"
        path.write_text(json.dumps(data))
        done = subprocess.run(
            [str(go_program), step, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    produce(stream_settings.kafka_bootstrap, stream_settings.attempts_topic, attempt_records(rows))
    wait_for_oracle(stream_settings, expected)

    by_name = {str(scope): stats for scope, stats in expected.items()}
    scopes = sorted(by_name)
    read = json.loads(run("read", scopes))
    for name in scopes:
        assert_conforms("stats", read["redis"][name])
        want = results_json(by_name[name].to_json())
        assert results_json(read["redis"][name]) == want
        assert results_json(read["http"][name]) == want
    assert [results_json(s) for s in read["many"]] == [
        results_json(by_name[s].to_json()) for s in scopes
    ]
    for user, fields in read["learners"].items():
        assert sorted(f"{user}:{field}" for field in fields) == sorted(
            s for s in scopes if s.startswith(f"{user}:")
        )
    assert read["missing"] == [True, True]
