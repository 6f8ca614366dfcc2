"""The latency benchmark's load and its stopwatch, each in a process of its own (aiokafka),
so that neither the sending nor the reading competes with the other for one interpreter.

    python bench/probe.py consume BOOTSTRAP TOPIC --idle 5      # prints latencies (ms), JSON
    python bench/probe.py produce BOOTSTRAP TOPIC --rate 2000 --count 40000 --users 100000

``produce`` sends attempts at a steady rate, each ``attempt_id`` carrying its send time
(``lat-<ns>-<n>``; ``--warm`` marks them as warm-up, ``lat-<ns>-w<n>``). ``consume`` reads
a topic from its end (it prints ``ready`` on stderr once positioned, and ``flowing`` at
the first warm-up attempt it reads), finds the ``attempt_id`` in each value (a stats
event's source, or the relay baseline's record) and notes how long ago each timed one was
sent; it stops when no timed one has arrived for ``--idle`` seconds after the first.
Both use the wall clock of one
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from performance_engine.tools.simulator import generate_attempts

SENT = re.compile(rb'"attempt_id": ?"lat-(\d+)-(w?)')


async def produce(
    bootstrap: str, topic: str, rate: float, count: int, users: int, warm: bool = False
) -> None:
    attempts = generate_attempts(count, users=users, seed=7 if not warm else 8)
    tag = "w" if warm else ""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, attempt in enumerate(attempts):
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            attempt["attempt_id"] = f"lat-{time.time_ns()}-{tag}{n}"
            key = str(attempt["user_id"]).encode()
            await producer.send(topic, json.dumps(attempt).encode(), key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, idle: float) -> list[float]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=5
    )
    await consumer.start()
    waits: list[float] = []
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=50)
        await consumer.seek_to_end()
        for tp in consumer.assignment():
            await consumer.position(tp)
        print("ready", file=sys.stderr, flush=True)
        last = None
        flowing = False
        while last is None or time.monotonic() - last < idle:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time_ns()
            for records in batches.values():
                for record in records:
                    found = SENT.search(record.value or b"")
                    if found is None:
                        continue
                    if found.group(2):  # a warm-up attempt: the path is open end to end
                        if not flowing:
                            print("flowing", file=sys.stderr, flush=True)
                            flowing = True
                        continue
                    waits.append((now - int(found.group(1))) / 1e6)
                    last = time.monotonic()
    finally:
        await consumer.stop()
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("mode", choices=["produce", "consume"])
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--count", type=int, default=40_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--warm", action="store_true", help="warm-up attempts (not timed)")
    args = parser.parse_args()
    if args.mode == "produce":
        asyncio.run(
            produce(args.bootstrap, args.topic, args.rate, args.count, args.users, args.warm)
        )
    else:
        print(json.dumps(asyncio.run(consume(args.bootstrap, args.topic, args.idle))))


if __name__ == "__main__":
    main()
