"""Learning parameters published to Redis (SPEC 3.2): ``perf-engine params publish``.

A published set is stored as its JSON and its version, in one transaction (keys:
:meth:`KeySpace.learning_params`, :meth:`KeySpace.learning_params_version`). Whoever
computes learning values (the worker before each batch, the read API before each
prediction, the backfill and ``refold`` when they start) reads the version, a few bytes,
and loads the set only when it changed: a newly published set is in use from the next
batch on, without a restart. Where a set is published it wins over the parameter file of
``PERF_ENGINE_LEARNING_PARAMS``; when it is withdrawn, the file's set (or none) is used
again.

A published set that cannot be read (edited in Redis by hand, or by a newer release) is
refused with one logged line, and the parameters in use stay; it never stops a worker.
"""

from __future__ import annotations

import logging
import threading

import msgspec

from performance_engine.errors import ConfigurationError
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.params import ParameterSet
from performance_engine.settings import Settings, load_learning_modes, load_parameter_file
from performance_engine.store.failures import REDIS_ERRORS, failure
from performance_engine.store.keyspace import KeySpace
from performance_engine.store.stats_store import AsyncStatsStore, StatsStore

__all__ = [
    "ParamsFollower",
    "publish_params",
    "published_params",
    "reading_follower",
    "withdraw_params",
]

logger = logging.getLogger(__name__)
_WHERE = "the parameter set published to Redis"


def publish_params(store: StatsStore, params: ParameterSet) -> str:
    """Publish a set; returns its version."""
    keys = store.keys
    document = msgspec.json.encode(params.to_dict())
    try:
        with store.client.pipeline(transaction=True) as pipe:
            pipe.set(keys.learning_params(), document)
            pipe.set(keys.learning_params_version(), params.version)
            pipe.execute()
    except REDIS_ERRORS as exc:
        raise failure(store.url, exc) from exc
    return params.version


def withdraw_params(store: StatsStore) -> bool:
    """Remove the published set; True if there was one."""
    keys = store.keys
    try:
        with store.client.pipeline(transaction=True) as pipe:
            pipe.delete(keys.learning_params_version())
            pipe.delete(keys.learning_params())
            removed = pipe.execute()
    except REDIS_ERRORS as exc:
        raise failure(store.url, exc) from exc
    return bool(removed[0])


def published_params(store: StatsStore) -> ParameterSet | None:
    """The published set, None if there is none; ConfigurationError if it cannot be
    read."""
    (raw,) = store.values([store.keys.learning_params()])
    return None if raw is None else _parse(raw)


def _parse(raw: bytes) -> ParameterSet:
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ConfigurationError(f"{_WHERE} is not JSON: {exc}") from None
    return ParameterSet.from_dict(document, _WHERE)


class ParamsFollower:
    """Keeps a calculator on the parameters in force: the published set, else ``fallback``
    (the file's set, or None for the modes' parameters)."""

    def __init__(
        self, calculator: MetricsCalculator, keys: KeySpace, fallback: ParameterSet | None
    ) -> None:
        self.calculator = calculator
        self.keys = keys
        self.fallback = fallback
        #: The published version last acted on (None: none was published).
        self.seen: bytes | None = None
        calculator.use_parameters(fallback)

    async def refresh(self, store: AsyncStatsStore) -> None:
        """Follow the published set: one GET of a few bytes when nothing changed."""
        (version,) = await store.values([self.keys.learning_params_version()])
        if version != self.seen:
            found = await store.values([self.keys.learning_params()]) if version else [None]
            self._adopt(version, found[0])

    def refresh_sync(self, store: StatsStore) -> None:
        """:meth:`refresh` through a synchronous store."""
        (version,) = store.values([self.keys.learning_params_version()])
        if version != self.seen:
            found = store.values([self.keys.learning_params()]) if version else [None]
            self._adopt(version, found[0])

    def _adopt(self, version: bytes | None, raw: bytes | None) -> None:
        self.seen = version
        calculator = self.calculator
        if version is None or raw is None:
            if calculator.parameters is not self.fallback:
                calculator.use_parameters(self.fallback)
                logger.info(
                    "no learning parameters are published any more; using %s",
                    "the parameter file's" if self.fallback is not None else "the modes'",
                )
            return
        try:
            found = _parse(raw)
            if found.version != version.decode("utf-8", "replace"):
                raise ConfigurationError(
                    f"{_WHERE} has version {found.version}, not the published "
                    f"{version.decode('utf-8', 'replace')!r}"
                )
        except ConfigurationError as exc:
            logger.error("%s; the parameters in use stay", exc)
            return
        calculator.use_parameters(found)
        logger.info("learning parameters %s are in use from this batch on", found.version)


_readers: dict[Settings, ParamsFollower] = {}
_readers_lock = threading.Lock()


def reading_follower(settings: Settings) -> ParamsFollower:
    """A calculator of the learning parameters in force for readers (the read API, the
    worker's ``/predict``), one per settings, made on first use: the learning modes and
    ``PERF_ENGINE_LEARNING_PARAMS`` of the settings; refresh it before each read to follow
    a published set. Kept apart from the worker's own calculator, which changes
    parameters only between batches."""
    with _readers_lock:
        follower = _readers.get(settings)
        if follower is None:
            calculator = MetricsCalculator(
                learning_modes=load_learning_modes(settings.learning_modes_path),
                parameters=load_parameter_file(settings.learning_params_path),
            )
            follower = _readers[settings] = ParamsFollower(
                calculator, KeySpace(settings.key_prefix), calculator.parameters
            )
        return follower
