"""Backfill benchmark: `perf-engine backfill` against plain pandas on the same file.

    .venv/bin/python bench/backfill.py --attempts 1000000 --users 100000 --format csv

Generates the file, then measures in one run: a bare ``pandas.read_csv`` (or
``read_parquet`` + a groupby over the scope columns), and the engine's backfill into a
fresh key prefix of the Redis at PERF_ENGINE_REDIS_URL. Prints a table with the ratio to
the baseline; the key prefix is deleted afterwards.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import redis
from rich.console import Console
from rich.table import Table

from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.settings import Settings, load_settings
from performance_engine.tools.backfill import backfill_file
from performance_engine.tools.simulator import attempts_frame
from performance_engine.worker.store import StatsStore


def timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--duplicates", type=float, default=0.02)
    args = parser.parse_args()

    base = load_settings()
    settings = Settings(redis_url=base.redis_url, key_prefix=f"pe-bench-{uuid.uuid4().hex[:8]}")
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"attempts.{args.format}"
        frame = attempts_frame(args.attempts, args.users, duplicates=args.duplicates)
        if args.format == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path)
        del frame
        rows = args.attempts + int(args.attempts * args.duplicates)
        console.print(f"{rows:,} rows in {path.name} ({path.stat().st_size / 1e6:.1f} MB)")

        if args.format == "csv":
            baseline_name = "pandas.read_csv"
            baseline = timed(lambda: pd.read_csv(path))
        else:
            baseline_name = "pandas.read_parquet + groupby"
            baseline = timed(
                lambda: (
                    pd.read_parquet(path)
                    .groupby(["user_id", "sub_topic_id", "learning_mode", "difficulty"])
                    .agg({"is_correct": "sum", "question_id": "nunique"})
                )
            )
        calculator = MetricsCalculator()
        with StatsStore.from_settings(settings) as store:
            first = timed(lambda: backfill_file(path, store, calculator))
            second = timed(lambda: backfill_file(path, store, calculator))
        client = redis.Redis.from_url(settings.redis_url)
        keys = list(client.scan_iter(match=f"{settings.key_prefix}:*", count=10_000))
        for i in range(0, len(keys), 10_000):
            client.delete(*keys[i : i + 10_000])

    table = Table(title=f"backfill of {rows:,} rows ({args.format}), {len(keys):,} scopes")
    for column in ("run", "seconds", "rows/s", "x baseline"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for name, seconds in (
        (baseline_name, baseline),
        ("perf-engine backfill (empty Redis)", first),
        ("perf-engine backfill again (no change)", second),
    ):
        table.add_row(name, f"{seconds:.2f}", f"{rows / seconds:,.0f}", f"{seconds / baseline:.1f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
