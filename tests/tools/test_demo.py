"""`perf-engine demo` on a machine with no broker running: it starts and stops everything."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # a whole demo, started and stopped


def test_demo_runs_shows_stats_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERF_ENGINE_")}
    summary_path = tmp_path / "summary.json"
    command = [sys.executable, "-m", "performance_engine.tools.cli", "demo", "--duration", "20"]
    done = subprocess.run(
        [*command, "--summary", str(summary_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(summary_path.read_text())
    assert set(summary["started"]) == {"tansu broker", "redis-server", "worker"}
    assert sorted(summary["stopped"]) == sorted(summary["started"])
    for pid in summary["started"].values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert summary["attempts_processed"] > 100
    learners = [stats for stats in summary["learners"] if stats is not None]
    assert len(learners) >= 3
    assert all(stats["version"] > 0 for stats in learners)
    # each learner's mastery and recommended difficulty, from the learning block, with
    # the parameters fitted on the warm-up learners (named in the output and the stats)
    version = summary["params_version"]
    assert version.startswith("p-")
    assert f"parameters {version} in force" in done.stdout
    for stats in learners:
        assert 0 <= stats["learning"]["mastery_probability"] <= 1
        assert stats["learning"]["recommended_difficulty"] in ("easy", "medium", "hard")
        assert stats["learning"]["params_version"] == version
    assert "mastery" in done.stdout  # the live view has the column (its values: above)
    # the dashboard: its address printed, and its overview counting what the worker did
    assert summary["dashboard"].startswith("http://127.0.0.1:")
    assert f"dashboard: {summary['dashboard']}" in done.stdout
    overview = summary["dashboard_overview"]
    assert overview["totals"]["attempts_applied"] + overview["totals"]["duplicates"] > 100
    assert overview["recent"]


def test_sigterm_stops_the_demo_and_everything_it_started() -> None:
    """A supervisor's SIGTERM (or a closed terminal's SIGHUP) is handled like Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERF_ENGINE_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "performance_engine.tools.cli", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    lines: list[str] = []
    started: dict[str, int] = {}
    try:
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("simulating "):
                break
        started = {
            m["name"]: int(m["pid"])
            for m in (re.match(r"started (?P<name>.+) \(pid (?P<pid>\d+)\)", x) for x in lines)
            if m
        }
        assert set(started) == {"tansu broker", "redis-server", "worker"}, "".join(lines)
        demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=90)
        for name in started:
            assert f"stopped {name}" in rest, rest
        for pid in started.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:  # a failure leaves nothing running either
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=30)
        demo.stdout.close()
        for pid in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class _SignalsInFinaliser:
    """Sends SIGTERM to this process from ``__del__``, where Python swallows what a signal
    handler raises (it prints "Exception ignored in ...")."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between these bytecodes, inside __del__
            pass


def test_a_stop_signal_landing_in_a_finaliser_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from performance_engine.tools.demo import _termination_as_interrupt

    swallowed: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda found: swallowed.append(found.exc_type))
    with _termination_as_interrupt() as stopping:
        finaliser = _SignalsInFinaliser()
        del finaliser
        assert swallowed == [KeyboardInterrupt]  # raised in __del__, and swallowed there
        assert stopping.is_set()  # yet the demo knows it was asked to stop
