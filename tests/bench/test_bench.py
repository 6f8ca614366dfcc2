"""The benchmarks keep working: each runs every part at a small size, and the stream
benchmark's exit status says every run it checked was exact."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import POSTGRES_ADMIN_URL
from tests.helpers import ROOT

BENCH = ROOT / "bench"


def run_bench(script: str, *args: str, timeout: float, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env, "COLUMNS": "200"},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_stream_benchmark_runs_every_part_exactly() -> None:
    out = run_bench("stream.py", "--smoke", timeout=540)
    for line in (
        "engine: ",
        "engine, dashboard off: ",
        "faust agent: ",
        "aiokafka loop: ",
        "two workers: ",
        "aiokafka relay (broker floor) @ 300/s steady: p50 ",
        "engine @ 300/s steady: p50 ",
        "engine, 3,000 scopes: peak RSS ",
    ):
        assert line in out, f"{line!r} missing from the stream benchmark's output:\n{out}"
    assert "exact: no" not in out
    # The worker's own metrics say what its batches were while the latency was timed.
    batches = re.search(r"engine @ 300/s steady: .*\n  ([\d,]+) batches of ([\d.]+) records", out)
    assert batches is not None, out
    assert int(batches[1].replace(",", "")) > 0
    assert float(batches[2]) >= 1.0


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_backfill_benchmark_times_every_step(redis_url: str) -> None:
    out = run_bench(
        "backfill.py",
        "--attempts",
        "20000",
        "--users",
        "500",
        "--format",
        "parquet",
        "--steps",
        timeout=300,
        PERF_ENGINE_REDIS_URL=redis_url,
    )
    for line in ("perf-engine backfill again (no change)", "whole backfill"):
        assert line in out, f"{line!r} missing from the backfill benchmark's output:\n{out}"


@pytest.mark.kafka
@pytest.mark.slow
def test_the_outbox_benchmark_measures_every_path() -> None:
    out = run_bench(
        "outbox.py",
        *("--attempts", "2000", "--rate", "200", "--seconds", "2"),
        *("--postgres", POSTGRES_ADMIN_URL),
        timeout=300,
    )
    for line in ("relay: committed rows to acked events", "outbox + relay (--poll 0.05)"):
        assert line in out, f"{line!r} missing from the outbox benchmark's output:\n{out}"


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_xapi_benchmark_times_both_ways_in(redis_url: str) -> None:
    out = run_bench(
        "xapi.py", "--statements", "1000", "--repeat", "1", timeout=150,
        PERF_ENGINE_REDIS_URL=redis_url,
    )  # fmt: skip
    for line in ("baseline: read the JSON", "this tree, as from the topic", "as over HTTP"):
        assert line in out, f"{line!r} missing from the xAPI benchmark's output:\n{out}"
