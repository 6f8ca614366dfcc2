"""xAPI ingest benchmark: statements translated and taken in Redis, as from the statements
topic (``strict`` off) and as over HTTP (a request's ids checked first).

    .venv/bin/python bench/xapi.py --statements 20000 --repeat 5
    .venv/bin/python bench/xapi.py --previous ../old-tree --repeat 5

Generates simulated learners' answers as xAPI statements (shaped like Open edX's), then
times the ingest (:func:`performance_engine.worker.xapi_ingest.ingest`, in batches of 500,
into a fresh key prefix of the Redis at PERF_ENGINE_REDIS_URL, deleted afterwards) beside
a baseline measured in the same run: reading each statement's JSON and hashing it, the
least any ingest does. The broker is left out: sending the attempts costs every tree the
same. Each run goes in a process of its own; ``--previous DIR`` (a checkout of an earlier
tree) adds that tree's runs, the two trees taking turns to go first, and prints the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
BATCH = 500


def _child(tree: Path, values_file: Path, prefix: str, strict: bool) -> None:
    """Time one ingest of the statements with the tree's code; prints the seconds."""
    sys.path.insert(0, str(tree))
    from performance_engine.settings import load_settings
    from performance_engine.store.stats_store import AsyncStatsStore
    from performance_engine.worker.xapi_ingest import ingest
    from performance_engine.xapi import XapiMapping

    values = [line.encode() for line in values_file.read_text().splitlines()]
    settings = load_settings({**os.environ, "PERF_ENGINE_KEY_PREFIX": prefix})

    async def run() -> float:
        async with AsyncStatsStore.from_settings(settings) as store:
            mapping = XapiMapping()
            await store.client.ping()
            began = time.perf_counter()
            for start in range(0, len(values), BATCH):
                part = values[start : start + BATCH]
                await ingest(store, mapping, part, [0] * len(part), strict=strict)
            return time.perf_counter() - began

    print(asyncio.run(run()))


def _in_process(tree: Path, values_file: Path, strict: bool) -> float:
    import redis

    from performance_engine.settings import load_settings

    prefix = f"bench-xapi-{uuid.uuid4().hex[:10]}"
    command = [sys.executable, __file__, "--child", str(tree), "--values", str(values_file)]
    command += ["--prefix", prefix] + (["--strict"] if strict else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tree)
        return float(done.stdout.strip().splitlines()[-1])
    finally:
        client = redis.Redis.from_url(load_settings().redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.delete(*keys[start : start + 10_000])
        client.close()


def _baseline(values: list[bytes]) -> float:
    began = time.perf_counter()
    for value in values:
        json.loads(value)
        hashlib.sha256(value).hexdigest()
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--previous", type=Path, help="a checkout of an earlier tree")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--values", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.values, args.prefix, args.strict)
        return 0

    sys.path.insert(0, str(ROOT))
    from rich.console import Console
    from rich.table import Table

    from performance_engine.tools.simulator import generate_attempts
    from tests.xapi_statements import as_statement

    console = Console()
    rows = generate_attempts(args.statements, users=args.users, seed=11)
    values = [json.dumps(as_statement(row)) for row in rows]
    trees = [(ROOT, "this tree")]
    if args.previous is not None:
        trees.append((args.previous.resolve(), "previous tree"))
    runs: dict[tuple[str, str], list[float]] = {}
    baselines: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        values_file = Path(tmp) / "statements.jsonl"
        values_file.write_text("\n".join(values))
        encoded = [value.encode() for value in values]
        for turn in range(args.repeat):
            baselines.append(_baseline(encoded))
            for tree, name in trees if turn % 2 == 0 else trees[::-1]:  # each goes first
                for way, strict in (("from the topic", False), ("over HTTP", True)):
                    seconds = _in_process(tree, values_file, strict)
                    runs.setdefault((name, way), []).append(seconds)
    baseline = median(baselines)
    table = Table(title=f"xAPI ingest of {args.statements:,} statements, medians of {args.repeat}")
    for column in ("run", "seconds", "statements/s", "x baseline"):
        table.add_column(column, justify="left" if column == "run" else "right")
    table.add_row("baseline: read the JSON, hash it", f"{baseline:.3f}",
                  f"{args.statements / baseline:,.0f}", "1.0")  # fmt: skip
    for (name, way), found in runs.items():
        seconds = median(found)
        table.add_row(f"{name}, as {way}", f"{seconds:.3f}",
                      f"{args.statements / seconds:,.0f}", f"{seconds / baseline:.1f}")  # fmt: skip
    console.print(table)
    if args.previous is not None:
        for way in ("from the topic", "over HTTP"):
            pairs = list(zip(runs[("this tree", way)], runs[("previous tree", way)], strict=True))
            mean = math.prod(a / b for a, b in pairs) ** (1 / len(pairs))
            this, before = (median(p[i] for p in pairs) for i in (0, 1))
            console.print(
                f"as {way}: this tree / previous tree {this / before:.3f} (medians), {mean:.3f} "
                f"(geometric mean of the turns)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
