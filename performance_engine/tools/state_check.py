"""``perf-engine check``'s look at the state: does Redis still hold what the committed
offsets stand for? The same judgement the worker makes when it is assigned partitions
(:func:`performance_engine.store.ledger.judge`), made from outside it."""

from __future__ import annotations

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from performance_engine.broker import broker_failed
from performance_engine.connections import kafka_python_options
from performance_engine.errors import DatabaseQueryError
from performance_engine.settings import Settings
from performance_engine.store.failures import REDIS_ERRORS
from performance_engine.store.ledger import Judgement, judge, parse_ledger
from performance_engine.store.stats_store import StatsStore

__all__ = ["describe", "judge_state"]


def judge_state(settings: Settings) -> Judgement | None:
    """The judgement on the attempts topic's partitions; None when the group has committed
    nothing yet (nothing to compare)."""
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            group_id=settings.app_id,
            enable_auto_commit=False,
            **kafka_python_options(settings),
        )
    except KafkaError as exc:
        raise broker_failed(settings, exc) from exc
    try:
        known = consumer.partitions_for_topic(settings.attempts_topic) or set()
        tps = [TopicPartition(settings.attempts_topic, p) for p in sorted(known)]
        committed = {tp.partition: consumer.committed(tp) for tp in tps}
        earliest = {tp.partition: o for tp, o in consumer.beginning_offsets(tps).items()}
    except KafkaError as exc:
        raise broker_failed(settings, exc) from exc
    finally:
        consumer.close()
    if all(offset is None for offset in committed.values()):
        return None
    with StatsStore.from_settings(settings) as store:
        try:
            ledger = parse_ledger(
                store.client.hgetall(store.keys.positions()), settings.attempts_topic
            )
            has_state = ledger is None and any(
                True for _ in store.client.scan_iter(match=store.keys.scope_pattern(), count=1000)
            )
        except REDIS_ERRORS as exc:
            raise DatabaseQueryError(f"reading the positions ledger failed: {exc}") from exc
    return judge(ledger, committed, earliest, has_state=has_state)


def describe(verdict: Judgement | None) -> tuple[bool | None, str]:
    """(ok, one line) for ``perf-engine check``: True fine, None a warning, False failing."""
    if verdict is None:
        return True, "nothing committed yet: a new deployment"
    if verdict.gaps:
        parts = ", ".join(
            f"partition {p}: offsets {first} to {after - 1}"
            for p, (first, after) in sorted(verdict.gaps.items())
        )
        return False, (
            f"Redis lost state the attempts topic no longer holds ({parts}); backfill the "
            "platform's history, then start the worker with --accept-state-gap"
        )
    if verdict.resume:
        parts = ", ".join(f"partition {p} from {o}" for p, o in sorted(verdict.resume.items()))
        return None, f"Redis lost state; the worker replays it from the topic ({parts})"
    if verdict.adopted:
        return None, "no positions ledger yet (state from an earlier release); the worker adopts it"
    return True, "Redis's state reaches the committed offsets"
