"""Shared fixtures. Redis is real: PERF_ENGINE_TEST_REDIS_URL, else the local server.

Markers say what a test needs (declared in pyproject.toml): ``kafka``, ``redis``, ``db``
(PostgreSQL or MariaDB), ``browser`` (chromium), ``slow``. A test that uses a fixture of
one of those services is marked for it here, whatever its file says, so ``-m "not
kafka"`` never starts a broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from performance_engine.metrics.modes import LearningModes
from performance_engine.settings import Settings

TEST_REDIS_URL = os.environ.get("PERF_ENGINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: The fixtures that reach a service, and the marker a test using one gets.
SERVICE_FIXTURES = {
    "broker": "kafka",
    "stream_settings": "kafka",
    "own_broker": "kafka",
    "redis_url": "redis",
    "database_url": "db",
    "django_database_url": "db",
    "postgresql_url": "db",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = SERVICE_FIXTURES.get(fixture)
            callspec = getattr(item, "callspec", None)
            if callspec is not None and callspec.params.get(fixture) == "sqlite":
                continue  # a file of the test's own: no server
            if marker is not None and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # the suite needs Redis: fail loudly, never skip
        raise RuntimeError(
            f"the tests need a Redis server at {TEST_REDIS_URL} (set PERF_ENGINE_TEST_REDIS_URL "
            "or run .ci/run, which starts one)"
        ) from exc
    finally:
        client.close()
    return TEST_REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"pe-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=key_prefix)


@pytest.fixture
def modes() -> LearningModes:
    return LearningModes.default()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker (tansu, memory only) for the whole session."""
    from performance_engine.tools.demo import free_port
    from tests.services import start_tansu

    port = free_port()
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    process = start_tansu(port, log)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture
def stream_settings(broker: str, redis_url: str, key_prefix: str) -> Settings:
    """Settings with topics and a consumer group of this test's own."""
    from tests.services import own_stream_settings

    return own_stream_settings(broker, redis_url, key_prefix, 4, batch_size=500)


@pytest.fixture
def workers(tmp_path: pytest.TempPathFactory) -> Iterator[Any]:
    """Start workers with ``workers(settings, **env)``; all are stopped afterwards."""
    from tests.services import Worker, worker_env

    started: list[Worker] = []

    def start(settings: Settings, **env: str) -> Worker:
        n = len(started)
        worker = Worker(
            worker_env(settings, Path(str(tmp_path)) / f"w{n}", **env),
            Path(str(tmp_path)) / f"worker{n}.log",
        )
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop()


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    d = tmp_path / "tls"
    d.mkdir()
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=perf-engine test CA",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.crt"),
    )
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "")):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
        )
        ext = d / f"{name}.ext"
        ext.write_text(extra + "\n" if extra else "basicConstraints=CA:FALSE\n")
        openssl(
            "x509",
            "-req",
            "-in",
            str(d / f"{name}.csr"),
            "-CA",
            str(d / "ca.crt"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(d / f"{name}.crt"),
        )
    return {p.stem + p.suffix: p for p in d.iterdir()}


#: The development and CI machines' database servers (trust auth / root without password).
POSTGRES_ADMIN_URL = os.environ.get(
    "PERF_ENGINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get(
    "PERF_ENGINE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)


@contextmanager
def own_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A database of the caller's own, dropped afterwards: SQLite in a file, or a new
    database on the machine's PostgreSQL or MariaDB server."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'platform.db'}"
        return
    admin_url = POSTGRES_ADMIN_URL if kind == "postgresql" else MARIADB_ADMIN_URL
    name = f"pe_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:  # the server must run here: say so, loudly
        admin.dispose()
        pytest.fail(f"the {kind} server at {make_url(admin_url)} is needed: {exc}")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            if kind == "postgresql":
                connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
            else:
                connection.execute(text(f"DROP DATABASE {name}"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own on each of the three kinds, dropped afterwards."""
    with own_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def django_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own for a Django project: SQLite and PostgreSQL."""
    with own_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def postgresql_url(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped afterwards."""
    with own_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A tansu of this test's own (the test may stop and pause it), and its address."""
    from performance_engine.tools.demo import free_port
    from tests.services import start_tansu

    port = free_port()
    process = start_tansu(port, tmp_path / "tansu.log")
    yield process, f"127.0.0.1:{port}"
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(timeout=20)
