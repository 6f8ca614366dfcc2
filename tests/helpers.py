"""What the tests share: builders of attempts, the oracle (the stats every scope must end
with), and waiting for the worker to reach it. Running the broker, Redis servers and
workers is in ``tests/services.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import msgspec
import pandas as pd
from aiokafka import AIOKafkaProducer
from kafka import KafkaProducer

from performance_engine.errors import DatabaseQueryError, InvalidAttemptError
from performance_engine.events import DLQ_HEADERS, Source, decode_stats_event, event_id, stats_event
from performance_engine.metrics.attempt import (
    ATTEMPT_COLUMNS,
    MAX_VALUE_BYTES,
    Attempt,
    AttemptVoid,
    attempt_from_mapping,
    decode_attempt,
)
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.history import Entry, decode_entries
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.state import ScopeState, fingerprint
from performance_engine.metrics.types import (
    DIFFICULTIES,
    DifficultyEnum,
    PerformanceStatsData,
    ScopeKey,
)
from performance_engine.plugins import build_calculator
from performance_engine.schemas import NAMES as SCHEMA_NAMES
from performance_engine.schemas import load as load_schema
from performance_engine.settings import Settings, settings_env
from performance_engine.store.failures import REDIS_ERRORS, failure
from performance_engine.store.stats_store import AsyncStatsStore, StatsStore
from performance_engine.tools.history_files import load_attempts
from performance_engine.tools.simulator import generate_attempts
from performance_engine.worker.processor import Publisher
from performance_engine.worker.publisher import BatchPublisher
from tests.oracle import oracle_stats
from tests.services import (
    attempt_records,
    committed,
    produce,
    read_topic,
    topic_end,
    wait_until,
)

#: The checkout's root, and the tests' folder (data, fuzz seeds, the Django project).
ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

_COUNTER = iter(range(1, 10**9))


def raw(**overrides: Any) -> dict[str, Any]:
    """A valid SPEC 2 attempt object, with overrides."""
    base: dict[str, Any] = {
        "attempt_id": f"a{next(_COUNTER)}",
        "user_id": 123,
        "sub_topic_id": 456,
        "learning_mode": "standard",
        "question_id": 1,
        "difficulty": "easy",
        "is_correct": True,
        "occurred_at": "2026-11-24T09:00:00Z",
    }
    base.update(overrides)
    return base


def attempt(**overrides: Any) -> Attempt:
    return attempt_from_mapping(raw(**overrides), LearningModes.default())


class StreamModel:
    """The worker's way of applying batches, without Kafka or Redis: states, and each
    scope's history kept as the bytes the store would hold (appended or replaced as the
    calculator says, decoded only when a plan needs it)."""

    def __init__(self, calculator: MetricsCalculator) -> None:
        self.calculator = calculator
        self.states: dict[ScopeKey, ScopeState] = {}
        self.blobs: dict[ScopeKey, bytes] = {}
        #: Plans that made the store read a history, and plans that refolded one.
        self.history_reads = 0
        self.refolds = 0

    def apply(self, batch: Iterable[Attempt | AttemptVoid]) -> None:
        """One batch: per scope, its attempts in the batch's order (and its voids)."""
        calculator = self.calculator
        by_scope: dict[ScopeKey, list[tuple[Attempt, int]]] = {}
        voids: dict[ScopeKey, list[str]] = {}
        for a in batch:
            if isinstance(a, AttemptVoid):
                voids.setdefault(a.scope, []).append(a.attempt_id)
                by_scope.setdefault(a.scope, [])
            else:
                by_scope.setdefault(a.scope, []).append((a, fingerprint(a.attempt_id)))
        for scope, pairs in by_scope.items():
            state = self.states.get(scope)
            if state is None:
                state = self.states[scope] = calculator.new_state()
            plan = calculator.plan(scope, state, pairs, voids.get(scope))
            self.refolds += plan.refold
            history = None
            if plan.needs_history:
                self.history_reads += state.history > 0  # the store reads nothing for 0
                history = self.history(scope)
            write = calculator.apply_plan(scope, state, plan, history).history
            if write is not None:
                kept = b"" if write.replace else self.blobs.get(scope, b"")
                self.blobs[scope] = kept + write.data

    def apply_each(self, attempts: Iterable[Attempt | AttemptVoid]) -> StreamModel:
        for a in attempts:
            self.apply([a])
        return self

    def history(self, scope: ScopeKey) -> list[Entry]:
        """The scope's history, wherever it is kept (its own key or its state)."""
        state = self.states[scope]
        if not state.spilled:
            return state.inline_entries()
        return decode_entries(self.blobs.get(scope, b""), state.history)

    def stats(self) -> dict[ScopeKey, PerformanceStatsData]:
        calculator = self.calculator
        return {
            scope: calculator.stats(
                scope, state, self.history(scope) if calculator.frame_metrics else None
            )
            for scope, state in self.states.items()
        }


#: History limits for calculators whose histories stay in the state, move to their own
#: keys after an attempt or two (40 bytes), or are in their own keys from the first.
SPILL_LIMITS = (512, 40, 0)


# -- the oracle, and waiting for the stream to reach it ----------------------------------


Records = list[tuple[bytes | None, bytes | None]]


def malformed_records() -> dict[str, tuple[bytes | None, bytes | None]]:
    good = generate_attempts(1, users=1, seed=99)[0]

    def variant(**changes: Any) -> bytes:
        row = {**good, **changes}
        return json.dumps({k: v for k, v in row.items() if v is not ...}).encode()

    return {
        "oversized": (b"1", b'{"pad": "' + b"x" * MAX_VALUE_BYTES + b'"}'),
        "invalid_utf8": (b"1", b'{"attempt_id": "\xff\xfe"}'),
        "invalid_json": (b"1", b'{"attempt_id": '),
        "missing_field": (b"1", variant(question_id=...)),
        "invalid_field": (b"1", variant(is_correct="yes")),
        "unknown_learning_mode": (b"1", variant(learning_mode="cram")),
        "unknown_difficulty": (b"1", variant(difficulty="legendary")),
        "implausible_time": (b"1", variant(occurred_at=good["occurred_at"] // 1000)),
    }


_VALIDATORS = {name: jsonschema_rs.validator_for(load_schema(name)) for name in SCHEMA_NAMES}


def assert_conforms(schema: str, document: Any) -> None:
    """``document`` (parsed JSON) is valid against the shipped schema ``schema``."""
    errors = [error.message for error in _VALIDATORS[schema].iter_errors(document)]
    assert not errors, f"not a valid {schema}: {errors[:3]} in {document!r:.300}"


def conforms(schema: str, document: Any) -> bool:
    return bool(_VALIDATORS[schema].is_valid(document))


def assert_attempt_conforms(value: bytes) -> None:
    """An attempt the engine accepts is valid against the attempt schema, once its learning
    mode and difficulty are in the canonical lower case the schema names (the decoder
    takes any case)."""
    found = json.loads(value)
    found["learning_mode"] = found["learning_mode"].lower()
    found["difficulty"] = found["difficulty"].lower()
    assert_conforms("attempt", found)


def dataset(count: int, users: int, seed: int) -> tuple[Records, dict[str, Any]]:
    """Valid attempts, redelivered duplicates and one malformed record of each class."""
    rng = random.Random(seed)
    rows = generate_attempts(count, users=users, seed=seed)
    for row in rows[::7]:  # ids as decimal strings, as a platform in JavaScript sends them
        row.update({k: str(row[k]) for k in ("user_id", "sub_topic_id", "question_id")})
    records: Records = list(attempt_records(rows))
    records += rng.sample(records, count // 20)  # the same attempt again, at a later offset
    for key, value in rng.sample(records, 10):  # same attempt_id, other content: first wins
        assert value is not None
        changed = {**json.loads(value), "is_correct": True, "question_id": 1}
        records.append((key, json.dumps(changed).encode()))
    rng.shuffle(records)
    malformed = malformed_records()
    for item in malformed.values():
        records.insert(rng.randrange(len(records)), item)
    return records, malformed


def oracle(
    source: Sequence[tuple[bytes | None, bytes | None]] | Sequence[Mapping[str, Any]] | Path,
    calculator: MetricsCalculator | None = None,
) -> dict[ScopeKey, PerformanceStatsData]:
    """The stats every scope must end with, by the tests' own pandas oracle
    (``tests/oracle.py``) over the valid attempts of ``source`` (Kafka records as (key,
    value) pairs, attempt objects, or a history file); invalid records are left out, as
    the worker dead-letters them."""
    calculator = calculator or MetricsCalculator()
    modes = calculator.learning_modes
    if isinstance(source, Path):
        frame = load_attempts(source, modes).frame
        names = [d.value for d in DIFFICULTIES]
        return oracle_stats(
            frame.assign(difficulty=frame["difficulty"].map(names.__getitem__)), calculator
        )
    attempts: list[Attempt] = []
    for item in source:
        try:
            if isinstance(item, Mapping):
                attempts.append(attempt_from_mapping(item, modes))
            else:
                attempts.append(decode_attempt(item[1], modes))
                assert item[1] is not None
                assert_attempt_conforms(item[1])  # what the suite sends the engine
        except InvalidAttemptError:
            continue
    return oracle_stats(attempts_frame_of(attempts), calculator)


def attempts_frame_of(attempts: Sequence[Attempt]) -> pd.DataFrame:
    """Attempts as a plain frame for the oracle (SPEC 2 fields, difficulty by name)."""
    columns = ATTEMPT_COLUMNS
    rows = [{c: getattr(a, c) for c in columns} for a in attempts]
    frame = pd.DataFrame(rows, columns=list(columns))
    return frame.assign(difficulty=frame["difficulty"].map(lambda d: DifficultyEnum(d).value))


def results(stats: Any) -> Any:
    """Stats (one, or a mapping of scopes to stats or None) with ``revision`` set to 0:
    the revision says how a writer batched the attempts, which the guarantees leave open
    (SPEC 4), so results are compared without it."""
    if isinstance(stats, PerformanceStatsData):
        return msgspec.structs.replace(stats, revision=0)
    if isinstance(stats, Mapping):
        return {scope: None if s is None else results(s) for scope, s in stats.items()}
    return stats


def results_json(stats_json: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """A stats JSON (text or parsed) without its ``revision``: see :func:`results`."""
    found: dict[str, Any] = (
        dict(stats_json) if isinstance(stats_json, dict) else json.loads(stats_json)
    )
    found.pop("revision", None)
    return found


def plain_stats(
    settings: Settings, scopes: list[ScopeKey], *, validate: bool = False
) -> dict[ScopeKey, Any]:
    """Each scope's stats as a client in another language reads them (docs/redis-layout.md):
    one ``HGETALL`` per learner, the values parsed as JSON and nothing else; None where there
    are none. Checks what a reader relies on: a value is never torn (it parses, its
    ``scope`` names it) and never of a newer revision than the state beside it (the state
    is read after the stats, and revisions only rise); with ``validate``, each is valid
    against the stats schema."""
    with StatsStore.from_settings(settings) as store:
        client, keys = store.client, store.keys
        users = sorted({scope.user_id for scope in scopes})
        try:
            with client.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.hgetall(keys.stats(user))
                hashes = dict(zip(users, pipe.execute(), strict=True))
        except REDIS_ERRORS as exc:  # as the store reports it
            raise failure(settings.redis_url, exc) from exc
        states = store.read_states(scopes)
    found: dict[ScopeKey, Any] = {}
    for scope, state in zip(scopes, states, strict=True):
        raw = hashes[scope.user_id].get(f"{scope.sub_topic_id}:{scope.learning_mode}".encode())
        if raw is None:
            found[scope] = None
            continue
        parsed = json.loads(raw)  # plain JSON: never torn
        if validate:
            assert_conforms("stats", parsed)
        assert parsed["scope"] == f"{scope.user_id}:{scope.sub_topic_id}:{scope.learning_mode}"
        assert state is not None, f"stats of {scope} without a state beside them"
        assert parsed["revision"] <= state.revision, f"stats of {scope} ahead of its state"
        found[scope] = PerformanceStatsData.from_json(raw)
    return found


def stored(settings: Settings, scopes: list[ScopeKey]) -> dict[ScopeKey, Any]:
    """The stats recomputed from each scope's stored state (and history, for frame-based
    metrics), or None where there is none; the plain reads are checked on the way
    (:func:`plain_stats`)."""
    plain_stats(settings, scopes)
    with StatsStore.from_settings(settings) as store:
        found = store.read(scopes)
        calculator = build_calculator(settings)
        histories: list[Any] = [None] * len(scopes)  # None: kept in the state
        if calculator.frame_metrics:
            spilled = [i for i, item in enumerate(found) if item is not None and item.state.spilled]
            wanted = [(scopes[i], found[i].state.history) for i in spilled]  # type: ignore[union-attr]
            for i, history in zip(spilled, store.read_histories(wanted), strict=True):
                histories[i] = history
        found_stats: dict[ScopeKey, Any] = results(
            {
                scope: None if item is None else calculator.stats(scope, item.state, history)
                for scope, item, history in zip(scopes, found, histories, strict=True)
            }
        )
        return found_stats


def wait_for_oracle(
    settings: Settings, expected: dict[ScopeKey, PerformanceStatsData], timeout: float = 120
) -> None:
    scopes = sorted(expected)
    last: dict[ScopeKey, Any] = {}

    def done() -> bool:
        nonlocal last
        try:
            last = stored(settings, scopes)
        except DatabaseQueryError:  # the test's own reads, during a failover: not yet
            return False
        return all(last[s] is not None and last[s].version >= expected[s].version for s in scopes)

    try:
        wait_until(done, timeout, "the worker to apply every attempt", every=0.5)
    finally:
        behind = [s for s in scopes if last.get(s) is None or last[s].version < expected[s].version]
        print(f"{len(behind)} of {len(scopes)} scopes behind")
    # Every record committed: the worker has handled all of them, nothing more can change.
    end = topic_end(settings)
    wait_until(lambda: committed(settings) >= end, 60, "the worker to commit every record")
    assert stored(settings, scopes) == expected
    with StatsStore.from_settings(settings) as store:
        assert results({s: store.stats(s) for s in scopes}) == expected  # the stored JSON too
    plain = plain_stats(settings, scopes, validate=True)
    assert results(plain) == expected  # and as other languages read it


def assert_last_events_carry_final_versions(
    settings: Settings, expected: dict[ScopeKey, PerformanceStatsData]
) -> None:
    """The last event of every scope carries its final version, and the revision stored
    in Redis (events are identified by scope and revision)."""
    with StatsStore.from_settings(settings) as store:
        revisions = {str(s): store.stats(s).revision for s in expected}

    def last_versions() -> dict[str, tuple[int, int]]:
        last: dict[str, tuple[int, int]] = {}
        for message in read_topic(settings.kafka_bootstrap, settings.stats_topic):
            event = decode_stats_event(message.value)
            assert_conforms("stats-updated", json.loads(message.value))
            assert event.event_id == event_id(event.stats.scope_key, event.stats.revision)
            assert message.key.decode() == str(event.stats.scope_key)
            last[message.key.decode()] = (event.stats.version, event.stats.revision)
        return last

    want = {str(scope): (stats.version, revisions[str(scope)]) for scope, stats in expected.items()}
    wait_until(lambda: last_versions() == want, 60, "the final stats events", every=1.0)


def assert_dead_letters(settings: Settings, malformed: dict[str, Any]) -> None:
    letters: list[Any] = []

    def all_there() -> bool:
        nonlocal letters
        letters = read_topic(settings.kafka_bootstrap, settings.dlq_topic)
        return len(letters) >= len(malformed)

    wait_until(all_there, 60, "every dead letter")
    by_class = {}
    for message in letters:
        headers = dict(message.headers)
        assert [name for name, _ in message.headers] == list(DLQ_HEADERS)
        assert_conforms("dead-letter-headers", {k: v.decode() for k, v in message.headers})
        assert headers["pe-source-topic"].decode() == settings.attempts_topic
        assert int(headers["pe-source-offset"]) >= 0
        assert headers["pe-error-reason"]
        by_class[headers["pe-error-class"].decode()] = (message.key, message.value)
    assert len(letters) == len(malformed)
    assert by_class == malformed


def produce_slowly(
    settings: Settings, records: Records, chunks: int, pause: float = 0.5
) -> threading.Thread:
    def run() -> None:
        size = len(records) // chunks + 1
        for start in range(0, len(records), size):
            produce(
                settings.kafka_bootstrap, settings.attempts_topic, records[start : start + size]
            )
            time.sleep(pause)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def applied(settings: Settings, scopes: list[ScopeKey]) -> int:
    return sum(s.version for s in stored(settings, scopes).values() if s is not None)


# -- the batch processor in-process, and stats events by hand ---------------------------


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


def records(settings: Settings, rows: list[dict[str, Any]]) -> list[Rec]:
    return [
        Rec(settings.attempts_topic, 0, offset, str(r["user_id"]).encode(), json.dumps(r).encode())
        for offset, r in enumerate(rows)
    ]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def real_store_and_broker(
    settings: Settings,
) -> AsyncIterator[tuple[AsyncStatsStore, Publisher]]:
    """The real Redis store and a publisher on the real broker, closed afterwards."""
    store = AsyncStatsStore.from_settings(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        yield store, BatchPublisher(producer).publish
    finally:
        await producer.stop()
        await store.close()


def publish_events(settings: Settings, events: list[tuple[ScopeKey, int]]) -> None:
    """Stats events of these scopes at these revisions (each one's version the same)."""
    calculator = MetricsCalculator()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for scope, revision in events:
        state = calculator.new_state()
        state.version = state.revision = revision
        stats_json = calculator.stats(scope, state).to_json()
        key, value = stats_event(scope, revision, stats_json, Source("attempts", 0, revision, "a"))
        producer.send(settings.stats_topic, key=key, value=value)
    producer.flush()
    producer.close()


# -- the SPEC 4 example scope ---------------------------------------------------------------

#: The SPEC 4 example scope (user 123, sub-topic 456, standard): in learning order, one
#: second apart from 2026-11-24T09:00:00Z; (attempt_id, difficulty, question_id, is_correct).
SPEC_SCOPE = [
    ("a-1", "easy", 1, False),
    ("a-2", "easy", 1, True),
    ("a-3", "easy", 2, True),
    ("a-4", "medium", 10, False),
    ("a-5", "medium", 10, True),
    ("a-6", "medium", 11, False),
    ("a-7", "medium", 10, True),
]
SPEC_START_MS = 1_795_510_800_000


def spec_rows() -> list[dict[str, Any]]:
    """The SPEC 4 example scope as SPEC 2 attempt objects."""
    return [
        {
            "attempt_id": attempt_id,
            "user_id": 123,
            "sub_topic_id": 456,
            "learning_mode": "standard",
            "question_id": question,
            "difficulty": difficulty,
            "is_correct": correct,
            "occurred_at": SPEC_START_MS + 1000 * n,
        }
        for n, (attempt_id, difficulty, question, correct) in enumerate(SPEC_SCOPE)
    ]


def spec_attempts() -> list[Attempt]:
    """The SPEC 4 example scope as validated attempts."""
    modes = LearningModes.default()
    return [attempt_from_mapping(row, modes) for row in spec_rows()]


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`perf-engine ARGS` in a subprocess with these settings."""
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run(
        [sys.executable, "-m", "performance_engine.tools.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


# -- the worker's web server -------------------------------------------------------------


def http_call(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    token: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; ``body`` bytes as they are, else as JSON;
    ``token`` as a bearer token."""
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def web_worker(settings: Settings, workers: Callable[..., Any]) -> tuple[Any, str]:
    """A worker started with ``settings`` and its web server's base URL, once ``/health``
    (open with tokens too) answers 200."""
    worker = workers(settings)
    base = f"http://127.0.0.1:{worker.env['PERF_ENGINE_WEB_PORT']}"

    def up() -> bool:
        try:
            return http_call(f"{base}/health")[0] == 200
        except OSError:
            return False

    wait_until(up, 60, "the worker's web server")
    return worker, base


def guide_files(guide: Path, language: str) -> dict[str, str]:
    """A platform guide's code blocks of ``language``, by the file name each one's first
    line gives (``// emit.mjs``): what the guides' tests run."""
    blocks = re.findall(rf"```{language}\n// (\S+)\n(.*?)```", guide.read_text(), re.S)
    return {name: f"// {name}\n{code}" for name, code in blocks}
