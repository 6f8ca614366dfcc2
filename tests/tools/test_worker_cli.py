"""`perf-engine worker` refuses to start, with one line, when a service is unreachable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from performance_engine.tools.demo import free_port


def run_worker(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "performance_engine.tools.cli", "worker"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unreachable_broker(redis_url: str) -> None:
    port = free_port()
    done = run_worker(
        PERF_ENGINE_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}", PERF_ENGINE_REDIS_URL=redis_url
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"perf-engine worker: error: Kafka at 127.0.0.1:{port} is unreachable: "
        f"127.0.0.1:{port} (Connection refused); check that the broker runs and that "
        "PERF_ENGINE_KAFKA_BOOTSTRAP points at it"
    ]


def test_unreachable_redis(broker: str) -> None:
    port = free_port()
    done = run_worker(
        PERF_ENGINE_KAFKA_BOOTSTRAP=broker, PERF_ENGINE_REDIS_URL=f"redis://127.0.0.1:{port}/0"
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"perf-engine worker: error: Redis at redis://127.0.0.1:{port}/0 failed")


@pytest.mark.parametrize("value", ["nohost", "host:port"])
def test_malformed_bootstrap(value: str) -> None:
    done = run_worker(PERF_ENGINE_KAFKA_BOOTSTRAP=value)
    assert done.returncode == 1
    assert "is not host:port" in done.stderr
