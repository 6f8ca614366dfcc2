"""The plain install is the platform's client: ``pip install performance-engine`` in a fresh
virtual environment has no Faust, numba, pandas or pyarrow, and its producer, subscriber,
read API and outbox writer work against the test broker and Redis (a worker of the full
install counts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from performance_engine.settings import Settings, settings_env
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import ROOT, oracle, results_json

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(600)]

PLATFORM = """
import importlib.util, json, sys
from sqlalchemy import create_engine, text

from performance_engine import AttemptProducer, PerformanceStats, StatsSubscriber
from performance_engine.platform.outbox import create_outbox, record_attempt

heavy = [m for m in ("faust", "numba", "numpy", "pandas", "pyarrow") if importlib.util.find_spec(m)]
rows = json.loads(sys.argv[1])
with AttemptProducer() as producer:
    producer.emit_many(rows)
engine = create_engine("sqlite://")
create_outbox(engine)
with engine.begin() as connection:
    record_attempt(connection, rows[0])
with engine.connect() as connection:
    outboxed = connection.execute(text("select count(*) from perf_engine_outbox")).scalar()
expected = json.loads(sys.argv[2])
seen = {}
with StatsSubscriber(start="earliest") as subscriber:
    for event in subscriber.events(timeout=60):
        seen[str(event.stats.scope_key)] = event.stats.version
        if all(seen.get(k, 0) >= v for k, v in expected.items()):
            break
read = {}
for key in expected:
    user, sub, mode = key.split(":")
    stats = PerformanceStats.create_performance_stats(
        user_id=int(user), sub_topic_id=int(sub), learning_mode=mode
    )()
    read[key] = json.loads(stats.to_json())
print(json.dumps({"heavy": heavy, "outboxed": outboxed, "seen": seen, "read": read}))
"""


@pytest.fixture(scope="module")
def light_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with ``pip install <this checkout>``, no extras."""
    where = tmp_path_factory.mktemp("light") / "venv"
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return python


def test_the_plain_install_is_the_platforms_client(
    light_python: Path, stream_settings: Settings, workers: Callable[..., Any]
) -> None:
    freeze = subprocess.run(
        [str(light_python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    for heavy in ("faust", "numba", "pandas", "pyarrow", "numpy"):
        assert heavy not in freeze, freeze
    workers(stream_settings)  # the engine, from the full install
    rows = generate_attempts(300, users=5, seed=61)
    for row in rows[::3]:  # ids as strings, as other languages send them
        row["user_id"] = str(row["user_id"])
    expected = oracle(rows)
    env = {**os.environ, **settings_env(stream_settings)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [
            str(light_python),
            "-c",
            PLATFORM,
            json.dumps(rows),
            json.dumps({str(s): stats.version for s, stats in expected.items()}),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=light_python.parent,  # not the checkout: the installed package is imported
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["heavy"] == []
    assert found["outboxed"] == 1
    assert found["seen"] == {str(s): stats.version for s, stats in expected.items()}
    for scope, stats in expected.items():
        assert results_json(found["read"][str(scope)]) == results_json(stats.to_json())


def test_the_engines_commands_say_what_to_install(
    light_python: Path, stream_settings: Settings
) -> None:
    cli = light_python.parent / "perf-engine"
    env = {**os.environ, **settings_env(stream_settings)}
    env.pop("PYTHONPATH", None)
    for command in (["worker"], ["backfill", "history.csv"]):
        done = subprocess.run(
            [str(cli), *command], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert done.returncode == 1, done.stderr
        assert "pip install 'performance-engine[worker]'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    shown = subprocess.run(
        [str(cli), "stats", "1", "2"], capture_output=True, text=True, env=env, check=False
    )
    assert "no stats for user 1" in shown.stderr, shown.stderr  # a client command works
    assert sys.executable != str(light_python)
