"""`perf-engine demo` on a machine with no broker running: it starts and stops everything."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow]


def test_demo_runs_shows_stats_and_leaves_nothing_behind() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERF_ENGINE_")}
    done = subprocess.run(
        [sys.executable, "-m", "performance_engine.tools.cli", "demo", "--duration", "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    started = dict(re.findall(r"started (tansu broker|redis-server|worker) \(pid (\d+)\)", out))
    assert set(started) == {"tansu broker", "redis-server", "worker"}
    for name in started:
        assert f"stopped {name}" in out
    for pid in started.values():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    rows = re.findall(r"│ (\d+)/101 +│ (\w+) +│ +(\d+) │", out)
    assert len(rows) >= 3
    assert any(int(version) > 0 for _, _, version in rows)
    # each learner's mastery and recommended difficulty, from the learning block
    learning = re.findall(r"│ +(\d+)%(?: ✓)? │ (easy|medium|hard) +│ +(\d+) │", out)
    assert len(learning) >= 3, out
    processed = re.search(r"demo done: ([\d,]+) attempts processed, ([\d,]+) rejected", out)
    assert processed is not None
    assert int(processed.group(1).replace(",", "")) > 100
