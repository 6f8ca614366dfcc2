"""``perf-engine refold`` killed with SIGKILL half-way: every scope holds its old stats or
its new ones, never a mix, and running it again ends exact (real Redis and broker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.params import FittedGroup, ParameterSet
from performance_engine.settings import Settings, settings_env
from performance_engine.store.stats_store import StatsStore
from performance_engine.tools.simulator import attempts_frame
from tests.helpers import oracle, results, run_cli
from tests.services import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


@pytest.mark.timeout(240)
def test_kill_9_during_a_refold_ends_exact(stream_settings: Settings, tmp_path: Path) -> None:
    settings = stream_settings
    frame = attempts_frame(24_000, 8_000, seed=4)
    history = tmp_path / "history.csv"
    frame.to_csv(history, index=False)
    done = run_cli(settings, "backfill", str(history), "--quiet")
    assert done.returncode == 0, done.stderr
    group = FittedGroup(
        "standard", 101, 0.4, 0.2, 0.0, (0.3, 0.2, 0.1), (0.1, 0.1, 0.2), 500, 9000, -1.0
    )
    fitted = ParameterSet({("standard", 101): group}, (), {1012001: 0}, {}, {})
    params = tmp_path / "params.json"
    params.write_text(json.dumps(fitted.to_dict()))
    assert run_cli(settings, "params", "publish", str(params)).returncode == 0

    rows: list[dict[str, Any]] = [
        {str(k): v for k, v in row.items()} for row in frame.to_dict("records")
    ]
    before = oracle(rows)
    after = oracle(rows, MetricsCalculator(parameters=fitted))
    scopes = sorted(before)
    assert any(before[s] != after[s] for s in scopes)

    def stored() -> dict[Any, Any]:
        with StatsStore.from_settings(settings) as store:
            found: dict[Any, Any] = results({s: store.stats(s) for s in scopes})
            return found

    def refolded() -> int:
        with StatsStore.from_settings(settings) as store:
            found = store.read(scopes[::50])
        return sum(fitted.version.encode() in item.stats_json for item in found if item is not None)

    process = subprocess.Popen(
        [sys.executable, "-m", "performance_engine.tools.cli", "refold", "--quiet"],
        env={**os.environ, **settings_env(settings)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: refolded() > 0, 60, "the refold to write some scopes", every=0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    half = stored()
    new = [s for s in scopes if half[s] == after[s]]
    old = [s for s in scopes if half[s] == before[s] and half[s] != after[s]]
    assert len(new) + len(old) == len(scopes)  # each scope whole: old or new, nothing else
    assert old, "the refold finished before the kill: nothing to prove"

    done = run_cli(settings, "refold", "--quiet")
    assert done.returncode == 0, done.stderr
    assert stored() == after
