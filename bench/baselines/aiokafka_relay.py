"""Baseline: the broker's own floor for the latency benchmark. A bare aiokafka relay: consume
attempts, produce one small record per attempt to the stats topic, wait for the acks,
commit. No Redis, no metrics, no validation beyond finding the attempt id.
Settings from PERF_ENGINE_* variables. Run: python bench/baselines/aiokafka_relay.py
"""

from __future__ import annotations

import asyncio
import json
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from performance_engine.settings import load_settings


async def main() -> None:
    settings = load_settings()
    consumer = AIOKafkaConsumer(
        settings.attempts_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.batch_size,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=int(settings.session_timeout * 1000),
        heartbeat_interval_ms=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    announced = False
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            if not announced and consumer.assignment():
                print("Worker ready", flush=True)
                announced = True
            if not batches:
                continue
            futures = []
            for records in batches.values():
                for record in records:
                    attempt_id = json.loads(record.value)["attempt_id"]
                    value = json.dumps({"source": {"attempt_id": attempt_id}}).encode()
                    futures.append(await producer.send(settings.stats_topic, value, key=record.key))
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
