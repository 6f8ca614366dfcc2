"""Backfill benchmark: `perf-engine backfill` against plain pandas on the same file.

    .venv/bin/python bench/backfill.py --attempts 1000000 --users 100000 --format csv

Generates the file, then measures in one run: a bare ``pandas.read_csv`` (or
``read_parquet`` + a groupby over the scope columns), and the engine's backfill into a
fresh key prefix of the Redis at PERF_ENGINE_REDIS_URL. Prints a table with the ratio to
the baseline; the key prefix is deleted afterwards. ``--steps`` also prints where the
first backfill's wall time went, step by step. ``--repeat N`` runs the baseline and the
two backfills N times in turns (each turn into a fresh prefix) and keeps the medians: the
speed of a shared machine moves by half within minutes. ``--previous DIR`` (a checkout of
an earlier tree) adds that tree's backfill of the same file to each turn, run like this
tree's in a process of its own (the two taking turns to go first), and prints the ratio.
``--custom-metric`` registers one incremental custom metric (what that costs the backfill).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from statistics import median
from typing import Any

import pandas as pd
import redis
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.example_metrics

from redis_bytes import bytes_per_scope

from performance_engine.metrics import batch as batch_module
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.settings import Settings, load_settings
from performance_engine.tools import backfill as backfill_module
from performance_engine.tools.simulator import attempts_frame

try:
    from performance_engine.store import bulk as bulk_module
    from performance_engine.store.stats_store import StatsStore
except ImportError:  # a tree from before the store package (run as --previous)
    from performance_engine.worker.store import (  # type: ignore[no-redef,import-not-found]
        StatsStore,
    )

    bulk_module = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]

#: The backfill's steps timed by --steps: (module, function, what it does). Nested steps
#: are counted inside the ones that call them.
STEPS = [
    (backfill_module, "load_attempts", "read and validate the file"),
    (backfill_module, "scope_index", "number the scopes"),
    (backfill_module, "_remember", "read the stored states"),
    (backfill_module, "compute_parts", "compute every scope's state"),
    (batch_module, "_fingerprints", "  attempt id fingerprints"),
    (batch_module, "_distinct_attempts", "  distinct attempts per scope"),
    (batch_module, "_distinct_questions", "  distinct questions per difficulty"),
    (batch_module, "learning_order", "  learning order"),
    (batch_module, "fold_learning_columns", "  the learning fold"),
    (batch_module, "encode_history_buffer", "  encode the histories"),
    (backfill_module, "pack_fresh", "pack the new scopes' values"),
    (batch_module, "columns_stats_buffer", "  their stats JSON"),
    (bulk_module, "pack_scope_rows", "  their states, joined with the stats"),
    (backfill_module, "_create", "write the new scopes to Redis (in a thread)"),
    (batch_module.BatchResult, "stats_json", "the stats JSON of merged scopes"),
    (backfill_module, "_flush", "write the merged scopes to Redis"),
]


def time_steps() -> dict[str, float]:
    """Wrap each of STEPS with a stopwatch; returns the totals, filled as they run."""
    totals: dict[str, float] = {}
    for owner, name, label in STEPS:
        if owner is None or not hasattr(owner, name):  # a tree without this step
            continue
        function = getattr(owner, name)
        totals[label] = 0.0

        def stopwatch(*args: Any, _f: Any = function, _label: str = label, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                totals[_label] += time.perf_counter() - start

        setattr(owner, name, stopwatch)
    return totals


def timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def calculator_for(custom_metric: bool) -> MetricsCalculator:
    calculator = MetricsCalculator()
    if custom_metric:
        from tests.example_metrics import TimeSpent

        calculator.register_metrics([TimeSpent()])
    return calculator


def child(path: Path, prefix: str, custom_metric: bool) -> int:
    """One backfill of ``path`` into ``prefix``, timed; prints its seconds as JSON (the
    tree is whichever ``performance_engine`` this process imports)."""
    settings = replace(load_settings(), key_prefix=prefix)
    calculator = calculator_for(custom_metric)
    for module in ("performance_engine.metrics.kernels", "performance_engine.store.kernels"):
        with contextlib.suppress(ImportError):  # compiled once per install and cached
            __import__(module, fromlist=["compile_all"]).compile_all()
    with StatsStore.from_settings(settings) as store:
        seconds = timed(lambda: backfill_module.backfill_file(path, store, calculator))
    print(json.dumps({"seconds": seconds}))
    return 0


def in_process_of(tree: Path, path: Path, prefix: str, custom_metric: bool) -> float:
    """:func:`child` in a process whose ``performance_engine`` is ``tree``'s."""
    command = [sys.executable, __file__, "--child", str(path), "--prefix", prefix]
    if custom_metric:
        command.append("--custom-metric")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True, cwd=tree)
    seconds: float = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--duplicates", type=float, default=0.02)
    parser.add_argument("--steps", action="store_true", help="time the first backfill's steps")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run baseline and backfills N times, keep medians"
    )
    parser.add_argument(
        "--previous", type=Path, help="a checkout of an earlier tree: its backfill in turns"
    )
    parser.add_argument("--custom-metric", action="store_true", help="register one custom metric")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child, args.prefix, args.custom_metric)

    base = load_settings()
    settings = Settings(redis_url=base.redis_url, key_prefix=f"pe-bench-{uuid.uuid4().hex[:8]}")
    console = Console()
    client = redis.Redis.from_url(settings.redis_url)
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

            def run_baseline() -> object:
                return pd.read_csv(path)
        else:
            baseline_name = "pandas.read_parquet + groupby"

            def run_baseline() -> object:
                return (
                    pd.read_parquet(path)
                    .groupby(["user_id", "sub_topic_id", "learning_mode", "difficulty"])
                    .agg({"is_correct": "sum", "question_id": "nunique"})
                )

        calculator = calculator_for(args.custom_metric)
        from performance_engine.metrics.kernels import compile_all

        compiling = timed(compile_all)
        if bulk_module is not None:
            from performance_engine.store.kernels import compile_all as compile_store

            compiling += timed(compile_store)
        console.print(f"kernels compiled or loaded from the cache in {compiling:.1f} s")
        baselines: list[float] = []
        firsts: list[float] = []
        agains: list[float] = []
        pairs: list[tuple[float, float]] = []  # (this tree, the previous), each in a process
        sizes: dict[str, list[float]] = {}  # Redis bytes per scope, by tree
        totals = time_steps() if args.steps else {}
        steps: dict[str, float] = {}
        for turn in range(args.repeat):  # in turns: each run beside its own baseline
            baselines.append(timed(run_baseline))
            prefix = f"{settings.key_prefix}-{turn}"
            with StatsStore.from_settings(replace(settings, key_prefix=prefix)) as store:
                firsts.append(timed(lambda: backfill_module.backfill_file(path, store, calculator)))
                if turn == 0:
                    steps = dict(totals)  # the first run's; the wrappers keep counting
                agains.append(timed(lambda: backfill_module.backfill_file(path, store, calculator)))
            keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
            for i in range(0, len(keys), 10_000):
                client.delete(*keys[i : i + 10_000])
            if args.previous is not None:
                took: dict[str, float] = {}
                trees = [(ROOT, "this"), (args.previous.resolve(), "previous")]
                for tree, name in trees if turn % 2 == 0 else trees[::-1]:  # each goes first
                    into = f"{prefix}-{name}"
                    took[name] = in_process_of(tree, path, into, args.custom_metric)
                    sizes.setdefault(name, []).append(bytes_per_scope(client, into))
                    stale = list(client.scan_iter(match=f"{into}:*", count=10_000))
                    for i in range(0, len(stale), 10_000):
                        client.delete(*stale[i : i + 10_000])
                pairs.append((took["this"], took["previous"]))
        baseline, first, second = map(median, (baselines, firsts, agains))
        if args.repeat > 1:
            ratios = ", ".join(f"{f / b:.1f}" for f, b in zip(firsts, baselines, strict=True))
            console.print(f"each turn's first backfill, x its baseline: {ratios}")

    scopes = sum(not key.endswith(b":history") and b":stats:" not in key for key in keys)
    table = Table(title=f"backfill of {rows:,} rows ({args.format}), {scopes:,} scopes")
    for column in ("run", "seconds", "rows/s", "x baseline"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for name, seconds in (
        (baseline_name, baseline),
        ("perf-engine backfill (empty Redis)", first),
        ("perf-engine backfill again (no change)", second),
    ):
        table.add_row(name, f"{seconds:.2f}", f"{rows / seconds:,.0f}", f"{seconds / baseline:.1f}")
    if pairs:
        this, previous = (median(p[i] for p in pairs) for i in (0, 1))
        turns = ", ".join(f"{a / b:.3f}" for a, b in pairs)
        table.add_row("this tree, in a process of its own", f"{this:.2f}", f"{rows / this:,.0f}",
                      f"{this / baseline:.1f}")  # fmt: skip
        table.add_row("previous tree, the same", f"{previous:.2f}", f"{rows / previous:,.0f}",
                      f"{previous / baseline:.1f}")  # fmt: skip
        console.print(table)
        mean = math.prod(a / b for a, b in pairs) ** (1 / len(pairs))
        console.print(
            f"this tree / previous tree: {this / previous:.3f} (medians), {mean:.3f} (geometric "
            f"mean of the turns, whose order alternates: {turns})"
        )
        here, before = (median(sizes[name]) for name in ("this", "previous"))
        console.print(
            f"Redis bytes per scope: this tree {here:,.0f}, previous tree {before:,.0f} "
            f"({here / before:.3f})"
        )
    else:
        console.print(table)
    if steps:
        table = Table(title="where the first backfill's wall time went")
        table.add_column("step")
        table.add_column("seconds", justify="right")
        table.add_column("share", justify="right")
        for label, spent in steps.items():
            table.add_row(label, f"{spent:.2f}", f"{spent / firsts[0]:.0%}")
        table.add_row("whole backfill", f"{firsts[0]:.2f}", "100%")
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
