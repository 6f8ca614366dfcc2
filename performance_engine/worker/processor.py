"""The worker's hot path: one batch of attempt records in, durable state and events out.

For a batch (records of the partitions this worker owns, in offset order per partition):

1. decode every record; a rejected one becomes a dead letter (never an exception);
2. group attempts by scope, load the scopes' states (memory cache, else Redis, one round
   trip), apply the attempts through the metric code (duplicates change nothing); the
   few scopes that need their attempt history (an attempt arrived out of learning order,
   the learning parameters changed, frame-based metrics) read it in one more round trip
   and fold their sequential metrics again;
3. write every touched scope with the store's compare-and-set (one round trip), its
   history with it; a refused write (someone else wrote the scope) reloads that scope and
   applies again;
4. publish one ``stats-updated`` event per touched scope, and the dead letters, and wait
   for the broker's acknowledgement;
5. record in Redis how far its state now reaches in each partition (the positions ledger,
   :mod:`~performance_engine.store.ledger`; with replicas asked for, wait for them);
6. only then is the batch done: the caller commits its offsets.

Redis and broker errors are retried with back-off and block the batch; they never let
it finish, so an offset is never committed before its state is durable. A batch that
was redelivered (after a crash, a restart, a rebalance) finds its attempts already in the
state, changes nothing, and publishes the scopes' current stats again, so the last event
of every scope carries its final version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple, Protocol, TypeVar

import msgspec

from performance_engine.erasure import Erasure
from performance_engine.errors import DatabaseQueryError, InvalidAttemptError
from performance_engine.events import Source, dead_letter, stats_event
from performance_engine.metrics.attempt import Attempt, AttemptVoid, decode_record
from performance_engine.metrics.calculator import MetricsCalculator, Plan
from performance_engine.metrics.history import Entry, HistoryWrite
from performance_engine.metrics.state import ScopeState, fingerprint
from performance_engine.metrics.types import ScopeKey
from performance_engine.settings import Settings
from performance_engine.store.erasure import revision_floor
from performance_engine.store.ledger import Ledger
from performance_engine.store.params import ParamsFollower
from performance_engine.store.stats_store import AsyncStatsStore, ScopeWrite
from performance_engine.worker.erasures import ErasureLog
from performance_engine.worker.publisher import OutRecord

__all__ = [
    "BatchAbandoned",
    "BatchProcessor",
    "Counters",
    "Publisher",
    "Record",
    "partition_ends",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Record(Protocol):
    """What the processor reads of a consumed Kafka record (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...


#: Sends records (key, value, headers) to a topic; returns when the broker has them all.
Publisher = Callable[[str, Sequence[OutRecord]], Awaitable[None]]


class BatchAbandoned(Exception):
    """The batch gave up (its partitions were revoked while it waited); nothing was acked."""


@dataclass(slots=True)
class Counters:
    """Running totals for the worker's metrics."""

    batches: int = 0
    records: int = 0
    attempts_applied: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    stats_published: int = 0
    write_conflicts: int = 0
    refolds: int = 0
    histories_lost: int = 0
    state_recoveries: int = 0
    redis_retries: int = 0
    publish_retries: int = 0
    #: Attempts of erased learners from before their erasure, held back.
    erased_attempts: int = 0
    #: Erasures this worker learnt of while it ran.
    erasures: int = 0
    #: Attempts taken out of their scopes by voids.
    voided: int = 0


class _Touched(msgspec.Struct, gc=False):
    """A scope's attempts in this batch, and the record of the last one (the event source)."""

    attempts: list[tuple[Attempt, int]]
    record: Record
    attempt_id: str
    #: The ids of attempts voided in this batch, or None.
    voids: list[str] | None = None

    def source(self) -> Source:
        record = self.record
        return Source(record.topic, record.partition, record.offset, self.attempt_id)


class BatchProcessor:
    """Applies batches of attempt records effectively once (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        calculator: MetricsCalculator,
        store: AsyncStatsStore,
        publish: Publisher,
        *,
        max_backoff: float = 5.0,
        on_batch: Callable[[int, float, float], None] | None = None,
        ledger: Ledger | None = None,
        params: ParamsFollower | None = None,
        erasures: ErasureLog | None = None,
    ) -> None:
        """``on_batch`` is called after each batch with (records, seconds it took, age of
        its oldest record): the worker's Prometheus histograms. ``params`` follows the
        learning parameters published to Redis (checked before each batch); ``erasures``
        the erased learners (their attempts from before the erasure are held back)."""
        self.settings = settings
        self.calculator = calculator
        self.store = store
        self.publish = publish
        self.max_backoff = max_backoff
        self.counters = Counters()
        self._cache: OrderedDict[ScopeKey, ScopeState] = OrderedDict()
        self._abandon = False
        self._on_batch = on_batch
        self.ledger = ledger
        self.params = params
        self.erasures = erasures
        self._tombstones = 0

    # -- control --------------------------------------------------------------------

    def forget(self) -> None:
        """Drop every cached state (partitions were revoked; the next owner may write)."""
        self._cache.clear()

    def abandon(self) -> None:
        """Make a batch that is waiting on Redis or the broker give up, acking nothing."""
        self._abandon = True

    # -- the batch --------------------------------------------------------------------

    async def process(self, records: Sequence[Record]) -> None:
        """Apply, store and publish one batch; returns only when all of it is durable."""
        self._abandon = False
        self._tombstones = 0  # of this batch's events
        started = time.perf_counter()
        if self.params is not None:
            await self._retry(
                "reading the learning parameters", partial(self.params.refresh, self.store)
            )
        stats: list[tuple[bytes, bytes | None]] = []
        if self.erasures is not None:
            learnt = await self._retry(
                "reading the erasures", self.erasures.due, retry_on=Exception
            )
            self._learnt(learnt, stats)
        touched, dead = self._decode(records)
        await self._apply(touched, records, stats)
        await self._publish(stats, dead)
        if self.ledger is not None:
            ends = partition_ends(records, self.settings.attempts_topic)
            await self._retry("recording the positions", partial(self.ledger.record, ends))
        counters = self.counters
        counters.batches += 1
        counters.records += len(records)
        if self._on_batch is not None and records:
            oldest = min(r.timestamp for r in records) / 1000
            self._on_batch(len(records), time.perf_counter() - started, time.time() - oldest)

    async def learn_erasures(self) -> None:
        """Between batches (the worker's timer, after reading the erasures topic): what a
        batch first does with the erasures read since, without waiting for one."""
        if self.erasures is None:
            return
        events: list[tuple[bytes, bytes | None]] = []
        self._abandon = False
        self._tombstones = 0
        self._learnt(self.erasures.take(), events)
        if events:
            await self._publish(events, [])

    def _decode(
        self, records: Sequence[Record], only: set[int] | None = None
    ) -> tuple[dict[ScopeKey, _Touched], list[tuple[Record, InvalidAttemptError]]]:
        """The attempts of the records by scope (those of the learners ``only``, if given),
        and the rejected records. An erased learner's attempts from before the erasure
        are held back (counted)."""
        modes = self.calculator.learning_modes
        erased = self.erasures.known if self.erasures is not None else {}
        touched: dict[ScopeKey, _Touched] = {}
        dead: list[tuple[Record, InvalidAttemptError]] = []
        for record in records:
            try:
                attempt = decode_record(record.value, modes, record.timestamp)
            except InvalidAttemptError as exc:
                dead.append((record, exc))
                continue
            if only is not None and attempt.user_id not in only:
                continue
            if erased:
                erasure = erased.get(attempt.user_id)
                if erasure is not None and erasure.erases(
                    record.partition, record.offset, attempt.occurred_at
                ):
                    self.counters.erased_attempts += 1
                    continue
            scope = attempt.scope
            entry = touched.get(scope)
            if type(attempt) is AttemptVoid:
                if entry is None:
                    entry = touched[scope] = _Touched([], record, attempt.attempt_id)
                else:
                    entry.record = record
                    entry.attempt_id = attempt.attempt_id
                if entry.voids is None:
                    entry.voids = []
                entry.voids.append(attempt.attempt_id)
                continue
            assert type(attempt) is Attempt
            pair = (attempt, fingerprint(attempt.attempt_id))
            if entry is None:
                touched[scope] = _Touched([pair], record, attempt.attempt_id)
            else:
                entry.attempts.append(pair)
                entry.record = record
                entry.attempt_id = attempt.attempt_id
        return touched, dead

    async def _apply(
        self,
        touched: dict[ScopeKey, _Touched],
        records: Sequence[Record],
        events: list[tuple[bytes, bytes | None]],
    ) -> None:
        """Make every touched scope durable; adds the stats events to publish to
        ``events`` (and tombstones, where the batch learns of an erasure)."""
        calculator = self.calculator
        cache = self._cache
        pending = touched
        delay = 0.05
        now_ms = int(time.time() * 1000)  # one updated_at for the batch
        while pending:
            missing = [scope for scope in pending if scope not in cache]
            if missing:
                stored = await self._retry(
                    "reading state", partial(self.store.read_states, missing)
                )
                for scope, found in zip(missing, stored, strict=True):
                    cache[scope] = found if found is not None else calculator.new_state()
            scopes = list(pending)
            plans: list[Plan] = []
            for scope, entry in pending.items():
                cache.move_to_end(scope)
                plans.append(calculator.plan(scope, cache[scope], entry.attempts, entry.voids))
            histories = await self._histories(scopes, plans)
            writes, tallies = self._writes(scopes, plans, histories)
            try:
                refused = await self.store.write(writes)
            except DatabaseQueryError as exc:
                # Unknown which writes landed: forget them all and redo from Redis.
                for w in writes:
                    cache.pop(w.scope, None)
                await self._backoff("writing state", exc, delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            refused_scopes = {w.scope for w in refused}
            for w, tally in zip(writes, tallies, strict=True):
                if w.scope in refused_scopes:
                    cache.pop(w.scope, None)  # redone from Redis: counted when it lands
                else:
                    self._count(tally)
                    events.append(
                        stats_event(
                            w.scope, w.state.revision, w.stats_json, _source(touched, w), now_ms
                        )
                    )
            if refused:
                self.counters.write_conflicts += len(refused)
                logger.info("%d scopes changed elsewhere; reloading them", len(refused))
            pending = {scope: touched[scope] for scope in refused_scopes}
            created = {w.scope.user_id for w in refused if not w.expected_revision}
            if created and self.erasures is not None:  # erased meanwhile?
                learnt = await self._retry(
                    "reading erasure markers",
                    partial(self.erasures.check_markers, self.store, created),
                )
                if learnt:
                    self._learnt(learnt, events)
                    again = {e.user for e in learnt}
                    pending = {s: t for s, t in pending.items() if s.user_id not in again}
                    pending.update(self._decode(records, again)[0])
                    touched.update(pending)
        self._trim_cache()

    def _learnt(self, learnt: list[Erasure], events: list[tuple[bytes, bytes | None]]) -> None:
        """Erasures this worker did not know: forget the learners' cached scopes, and add
        a tombstone per erased scope to the events (after any event this worker published
        of them before: a compacted stats topic then drops their stats)."""
        if not learnt:
            return
        users = {erasure.user for erasure in learnt}
        cache = self._cache
        for scope in [scope for scope in cache if scope.user_id in users]:
            del cache[scope]
        for erasure in learnt:
            for name in erasure.revisions:
                events.append((f"{erasure.user_id}:{name}".encode(), None))
                self._tombstones += 1
        self.counters.erasures += len(learnt)
        logger.info("learnt of %d erasures: %s", len(learnt), ", ".join(map(str, sorted(users))))

    async def _publish(
        self,
        events: list[tuple[bytes, bytes | None]],
        dead: list[tuple[Record, InvalidAttemptError]],
    ) -> None:
        settings = self.settings

        dead_letters: list[OutRecord] = [
            dead_letter(
                record.key,
                record.value,
                error.error_class,
                error.reason,
                record.topic,
                record.partition,
                record.offset,
            )
            for record, error in dead
        ]
        stats_records: list[OutRecord] = [(key, value, []) for key, value in events]

        async def send_all() -> None:
            await asyncio.gather(
                self.publish(settings.stats_topic, stats_records),
                self.publish(settings.dlq_topic, dead_letters),
            )

        await self._retry("publishing", send_all, retry_on=Exception)
        self.counters.stats_published += len(events) - self._tombstones
        for _record, error in dead:
            rejected = self.counters.rejected
            rejected[error.error_class] = rejected.get(error.error_class, 0) + 1

    def _writes(
        self,
        scopes: list[ScopeKey],
        plans: list[Plan],
        histories: dict[ScopeKey, list[Entry] | None],
    ) -> tuple[list[ScopeWrite], list[_Tally]]:
        """Apply each scope's plan to its cached state: the compare-and-set writes, and
        what each one counts once it lands."""
        calculator = self.calculator
        erased = self.erasures.known if self.erasures is not None else {}
        states: list[ScopeState] = []
        expected: list[int] = []
        entries: list[list[Entry] | None] = []
        history_writes: list[HistoryWrite | None] = []
        tallies: list[_Tally] = []
        for scope, plan in zip(scopes, plans, strict=True):
            state = self._cache[scope]
            states.append(state)
            expected.append(state.revision)
            history: list[Entry] | None = None
            lost = False
            if scope in histories:
                loaded = histories[scope]
                lost = loaded is None
                history = [] if loaded is None else loaded
                if lost:
                    logger.error(
                        "the stored attempt history of %s is missing or damaged; its learning "
                        "metrics are unknown until it is rebuilt (perf-engine backfill with "
                        "the platform's history)",
                        scope,
                    )
            outcome = calculator.apply_plan(scope, state, plan, history, lost=lost)
            stored = expected[-1]
            if outcome.applied or outcome.voided or plan.refold or not stored:
                # its stored stats change: the next revision (a scope of an erased learner
                # starts above its erased one)
                state.revision = (stored or revision_floor(erased, scope)) + 1
            entries.append(outcome.entries)
            history_writes.append(outcome.history)
            tallies.append(_Tally(outcome.applied, plan.given, plan.refold, lost, outcome.voided))
        stats = calculator.stats_json_many(
            scopes, states, entries if calculator.frame_metrics else None
        )
        # Unchanged scopes are written too: the compare-and-set then proves the cached
        # revision is current before its stats are published again.
        writes = [
            ScopeWrite(scope, revision, state, stats_json, history_write)
            for scope, revision, state, stats_json, history_write in zip(
                scopes, expected, states, stats, history_writes, strict=True
            )
        ]
        if erased:  # the epochs of the erasures known, for creations of those learners
            writes = [
                msgspec.structs.replace(w, erasure=_epoch(erased, w.scope))
                if w.scope.user_id in erased
                else w
                for w in writes
            ]
        return writes, tallies

    def _count(self, tally: _Tally) -> None:
        counters = self.counters
        counters.attempts_applied += tally.applied
        counters.duplicates += tally.given - tally.applied
        counters.refolds += tally.refold
        counters.histories_lost += tally.lost
        counters.voided += tally.voided

    async def _histories(
        self, scopes: list[ScopeKey], plans: list[Plan]
    ) -> dict[ScopeKey, list[Entry] | None]:
        """The stored histories of the scopes whose plan needs one (None: lost)."""
        wanted = [
            (scope, self._cache[scope].history)
            for scope, plan in zip(scopes, plans, strict=True)
            if plan.needs_history
        ]
        if not wanted:
            return {}
        found = await self._retry("reading histories", partial(self.store.read_histories, wanted))
        return {scope: history for (scope, _), history in zip(wanted, found, strict=True)}

    # -- helpers --------------------------------------------------------------------

    async def _retry(
        self,
        what: str,
        action: Callable[[], Awaitable[T]],
        *,
        retry_on: type[Exception] = DatabaseQueryError,
    ) -> T:
        delay = 0.05
        while True:
            self._check_abandon(what)
            try:
                return await action()
            except retry_on as exc:
                await self._backoff(what, exc, delay)
                delay = min(delay * 2, self.max_backoff)

    async def _backoff(self, what: str, exc: Exception, delay: float) -> None:
        self._check_abandon(what)
        if isinstance(exc, DatabaseQueryError):
            self.counters.redis_retries += 1
        else:
            self.counters.publish_retries += 1
        logger.warning("%s failed (%s); retrying in %.2fs", what, exc, delay)
        await asyncio.sleep(delay)

    def _check_abandon(self, what: str) -> None:
        if self._abandon:
            raise BatchAbandoned(f"gave up {what}: the partitions were revoked")

    def _trim_cache(self) -> None:
        cache, limit = self._cache, self.settings.cache_size
        while len(cache) > limit:
            cache.popitem(last=False)


class _Tally(NamedTuple):
    """What one scope's write counts in the Prometheus totals, once it has landed."""

    applied: int
    given: int
    refold: bool
    lost: bool
    voided: int


def partition_ends(records: Sequence[Record], topic: str) -> dict[int, int]:
    """The next offset after the batch in each partition of ``topic``."""
    ends: dict[int, int] = {}
    for record in records:
        if record.topic == topic and record.offset >= ends.get(record.partition, 0):
            ends[record.partition] = record.offset + 1
    return ends


def _epoch(erased: dict[int, Erasure], scope: ScopeKey) -> str:
    erasure = erased.get(scope.user_id) if erased else None
    return "" if erasure is None else erasure.epoch


def _source(touched: dict[ScopeKey, _Touched], write: ScopeWrite) -> Source:
    return touched[write.scope].source()
