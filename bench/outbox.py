"""Outbox benchmark: the relay on PostgreSQL against the direct producer, in one run.

    .venv/bin/python bench/outbox.py                       # 50,000 attempts, 20 s at 500/s
    .venv/bin/python bench/outbox.py --attempts 10000 --seconds 5

Starts tansu on a free port and makes a database of its own on the local PostgreSQL
(``PERF_ENGINE_BENCH_POSTGRES_URL``, default the machine's trust-auth server), then
measures:

* throughput: the same attempts sent by ``AttemptProducer.emit_many`` (timed to the last
  broker ack), and written into the outbox (in transactions of 1,000) then relayed by a
  relay until nothing is pending (timed from the relay's start: committed rows to
  acknowledged events, marked sent);
* latency at a steady rate, after a warm-up: attempts produced directly, and attempts
  committed into the outbox while ``perf-engine relay`` runs (a process of its own), each
  timed from its send (or its commit) to the moment a consumer of the attempts topic
  reads it; the difference is what the outbox adds.

Prints one table; the database and the topics are dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from performance_engine.outbox import create_outbox, record_attempts  # noqa: E402
from performance_engine.platform.producer import AttemptProducer  # noqa: E402
from performance_engine.settings import Settings, settings_env  # noqa: E402
from performance_engine.tools.demo import free_port  # noqa: E402
from performance_engine.tools.relay import Relay, RelayOptions, relay_engine  # noqa: E402
from performance_engine.tools.simulator import generate_attempts  # noqa: E402
from tests.services import create_topics, start_tansu  # noqa: E402

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def own_database(admin_url: str) -> Iterator[str]:
    name = f"pe_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def fresh_topic(settings: Settings) -> Settings:
    topic = f"bench-attempts-{uuid.uuid4().hex[:8]}"
    create_topics(settings.kafka_bootstrap, [topic], settings.partitions)
    return replace(settings, attempts_topic=topic)


def direct_throughput(settings: Settings, attempts: list[dict[str, Any]]) -> float:
    with AttemptProducer(settings=settings) as producer:
        start = time.perf_counter()
        producer.emit_many(attempts)
        producer.flush()
        return len(attempts) / (time.perf_counter() - start)


def outbox_throughput(
    settings: Settings, url: str, attempts: list[dict[str, Any]]
) -> tuple[float, float]:
    """(rows written per second, rows relayed per second)."""
    engine = relay_engine(url)
    start = time.perf_counter()
    for begin in range(0, len(attempts), 1000):
        with engine.begin() as connection:
            record_attempts(connection, attempts[begin : begin + 1000])
    written = len(attempts) / (time.perf_counter() - start)
    relay = Relay(engine, settings, RelayOptions())
    start = time.perf_counter()
    relay.run(until_empty=True)
    relayed = relay.published / (time.perf_counter() - start)
    assert relay.published == len(attempts), (relay.published, len(attempts))
    relay.close()
    return written, relayed


def arrivals(settings: Settings, expected: int, seen: dict[str, float]) -> threading.Thread:
    """A consumer of the attempts topic noting when each attempt_id is readable."""
    ready = threading.Event()

    def run() -> None:
        consumer = KafkaConsumer(
            settings.attempts_topic,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
        )
        consumer.poll(timeout_ms=100)
        ready.set()
        deadline = time.monotonic() + 300
        while len(seen) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=50).values():
                now = time.monotonic()
                for record in records:
                    attempt_id = record.value.split(b'"attempt_id":"', 1)[1].split(b'"', 1)[0]
                    seen.setdefault(attempt_id.decode(), now)
        consumer.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(30)
    return thread


def paced(
    rate: float, seconds: float, send: Callable[[dict[str, Any]], None], seen: dict[str, float]
) -> dict[str, float]:
    """Warms the path up (20 attempts, until a consumer has read them: topic metadata,
    connections, the relay's start), then calls ``send`` for ``rate * seconds`` attempts at
    a steady pace; returns when each of those went."""
    attempts = generate_attempts(20 + int(rate * seconds), users=500, seed=int(time.time()))
    for attempt in attempts:
        attempt["attempt_id"] = f"lat-{uuid.uuid4().hex}"
    warm, attempts = attempts[:20], attempts[20:]
    for attempt in warm:
        send(attempt)
    deadline = time.monotonic() + 60
    while not all(a["attempt_id"] in seen for a in warm):
        assert time.monotonic() < deadline, "the warm-up attempts never arrived"
        time.sleep(0.05)
    sent: dict[str, float] = {}
    start = time.monotonic()
    for n, attempt in enumerate(attempts):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(attempt)
        sent[attempt["attempt_id"]] = time.monotonic()
    return sent


def percentiles(sent: dict[str, float], seen: dict[str, float]) -> tuple[float, float]:
    waits = sorted((seen[a] - t) * 1000 for a, t in sent.items() if a in seen)
    assert len(waits) == len(sent), f"{len(sent) - len(waits)} attempts never arrived"
    cuts = statistics.quantiles(waits, n=100)
    return cuts[49], cuts[98]


def direct_latency(settings: Settings, rate: float, seconds: float) -> tuple[float, float]:
    settings = fresh_topic(settings)
    seen: dict[str, float] = {}
    consumer = arrivals(settings, 20 + int(rate * seconds), seen)
    with AttemptProducer(settings=settings) as producer:
        sent = paced(rate, seconds, producer.emit, seen)
    consumer.join(timeout=60)
    return percentiles(sent, seen)


def outbox_latency(
    settings: Settings, url: str, rate: float, seconds: float, poll: float
) -> tuple[float, float]:
    """The relay runs as users run it, ``perf-engine relay`` in a process of its own."""
    settings = fresh_topic(settings)
    engine = relay_engine(url)
    env = {**os.environ, **settings_env(settings), "PERF_ENGINE_OUTBOX_URL": url}
    command = [sys.executable, "-m", "performance_engine.tools.cli", "relay", "--poll", str(poll)]
    relay = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        seen: dict[str, float] = {}
        consumer = arrivals(settings, 20 + int(rate * seconds), seen)

        def commit(attempt: dict[str, Any]) -> None:
            with engine.begin() as connection:
                record_attempts(connection, [attempt])

        sent = paced(rate, seconds, commit, seen)
        consumer.join(timeout=60)
    finally:
        relay.terminate()
        relay.wait(timeout=30)
        engine.dispose()
    return percentiles(sent, seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--attempts", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=500.0, help="attempts/s for latency")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of a latency run")
    parser.add_argument("--postgres", default=POSTGRES_URL, help="an admin URL of PostgreSQL")
    args = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        broker = start_tansu(port, Path(scratch) / "tansu.log")
        try:
            base = Settings(kafka_bootstrap=f"127.0.0.1:{port}", partitions=4)
            attempts = generate_attempts(args.attempts, users=2000, seed=3)
            with own_database(args.postgres) as url:
                create_outbox(create_engine(url))
                # latency first, while the outbox table is young (see docs/performance.md)
                direct_p = direct_latency(base, args.rate, args.seconds)
                relay_p = outbox_latency(base, url, args.rate, args.seconds, poll=0.2)
                fast_p = outbox_latency(base, url, args.rate, args.seconds, poll=0.05)
                direct = direct_throughput(fresh_topic(base), attempts)
                written, relayed = outbox_throughput(fresh_topic(base), url, attempts)
        finally:
            broker.terminate()
            broker.wait(timeout=20)

    table = Table(
        title=f"outbox on PostgreSQL: {args.attempts:,} attempts; latency at {args.rate:,.0f}/s"
    )
    for column in ("path", "attempts/s", "vs direct", "p50 ms", "p99 ms", "added p50 ms"):
        table.add_column(column, justify="right" if column != "path" else "left")
    table.add_row("direct producer (emit_many, acks=all)", f"{direct:,.0f}", "1.00", "", "", "")
    table.add_row(
        "record_attempts into the outbox (1,000 a transaction)",
        f"{written:,.0f}",
        f"{written / direct:.2f}",
        "",
        "",
        "",
    )
    table.add_row(
        "relay: committed rows to acked events",
        f"{relayed:,.0f}",
        f"{relayed / direct:.2f}",
        "",
        "",
        "",
    )
    table.add_row(
        "direct producer, one emit per attempt",
        "",
        "",
        f"{direct_p[0]:.1f}",
        f"{direct_p[1]:.1f}",
        "",
    )
    for label, (p50, p99) in (
        ("outbox + relay (--poll 0.2)", relay_p),
        ("outbox + relay (--poll 0.05)", fast_p),
    ):
        table.add_row(label, "", "", f"{p50:.1f}", f"{p99:.1f}", f"{p50 - direct_p[0]:.1f}")
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
