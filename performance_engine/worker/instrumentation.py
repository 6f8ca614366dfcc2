"""The worker's Prometheus metrics, served at ``GET /metrics``.

Counters are read from the processor's running totals at scrape time (no second
bookkeeping on the hot path); histograms are observed once per batch.

=========================================  ===============================================
``perf_engine_attempts_processed_total``   valid attempts handled, ``result`` = applied,
                                           duplicate or erased (an erased learner's, from
                                           before the erasure: held back)
``perf_engine_attempts_rejected_total``    records sent to the dead-letter topic, by
                                           ``reason`` (the error class)
``perf_engine_stats_published_total``      ``stats-updated`` events published
``perf_engine_batches_total``              batches completed
``perf_engine_redis_retries_total``        Redis calls retried (Redis down or failing)
``perf_engine_publish_retries_total``      publish rounds retried (broker failing)
``perf_engine_write_conflicts_total``      compare-and-set writes refused (scope changed
                                           elsewhere) and redone
``perf_engine_refolds_total``              scopes whose sequential metrics were folded
                                           again over their history (a late attempt, or
                                           changed parameters)
``perf_engine_histories_lost_total``       stored histories found missing or damaged
                                           (learning metrics unknown until rebuilt)
``perf_engine_state_recoveries_total``     times Redis was found to have lost state and
                                           partitions were replayed from where it ends
``perf_engine_erasures_total``             erasures the worker learnt of while it ran
``perf_engine_attempts_voided_total``      attempts taken out of their scopes by voids
``perf_engine_state_refused``              1 while the worker refuses to go on (Redis lost
                                           state the topic no longer holds), else 0
``perf_engine_batch_size``                 records per batch (histogram)
``perf_engine_batch_duration_seconds``     processing time of a batch (histogram)
``perf_engine_attempt_latency_seconds``    age of each batch's oldest record when the batch
                                           became durable and published (histogram)
``perf_engine_consumer_lag``               records not yet read, per ``partition`` (gauge)
``perf_engine_xapi_statements_total``      xAPI statements taken (over HTTP and from the
                                           statements topic), ``result`` = counted, void,
                                           void_held, ``ignored:<reason>`` or
                                           ``refused:<error class>``
=========================================  ===============================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from performance_engine.worker.processor import Counters

__all__ = ["EngineMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Totals(Collector):
    def __init__(
        self,
        counters: Callable[[], Counters | None],
        lag: Callable[[], Mapping[int, int]],
        refused: Callable[[], bool],
        statements: Mapping[str, int],
    ) -> None:
        self._counters = counters
        self._lag = lag
        self._refused = refused
        self._statements = statements

    def collect(self) -> Iterator[Metric]:
        counters = self._counters() or Counters()
        yield _by_label(
            CounterMetricFamily(
                "perf_engine_attempts_processed", "Valid attempts handled.", labels=["result"]
            ),
            {
                "applied": counters.attempts_applied,
                "duplicate": counters.duplicates,
                "erased": counters.erased_attempts,
            },
        )
        yield _by_label(
            CounterMetricFamily(
                "perf_engine_attempts_rejected",
                "Records sent to the dead-letter topic.",
                labels=["reason"],
            ),
            counters.rejected,
        )
        for name, help_text, value in (
            (
                "perf_engine_stats_published",
                "stats-updated events published.",
                counters.stats_published,
            ),
            ("perf_engine_batches", "Batches completed.", counters.batches),
            ("perf_engine_redis_retries", "Redis calls retried.", counters.redis_retries),
            ("perf_engine_publish_retries", "Publish rounds retried.", counters.publish_retries),
            (
                "perf_engine_write_conflicts",
                "Compare-and-set writes refused and redone.",
                counters.write_conflicts,
            ),
            (
                "perf_engine_refolds",
                "Scopes whose sequential metrics were folded again over their history.",
                counters.refolds,
            ),
            (
                "perf_engine_histories_lost",
                "Stored attempt histories found missing or damaged.",
                counters.histories_lost,
            ),
            (
                "perf_engine_state_recoveries",
                "Times Redis had lost state and partitions were replayed.",
                counters.state_recoveries,
            ),
            (
                "perf_engine_erasures",
                "Erasures the worker learnt of while it ran.",
                counters.erasures,
            ),
            (
                "perf_engine_attempts_voided",
                "Attempts taken out of their scopes by voids.",
                counters.voided,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        yield GaugeMetricFamily(
            "perf_engine_state_refused",
            "1 while the worker refuses to go on: Redis lost state the topic no longer holds.",
            value=1 if self._refused() else 0,
        )
        yield _by_label(
            GaugeMetricFamily(
                "perf_engine_consumer_lag",
                "Records not yet read, per partition.",
                labels=["partition"],
            ),
            self._lag(),
        )
        yield _by_label(
            CounterMetricFamily(
                "perf_engine_xapi_statements",
                "xAPI statements taken, by what became of them.",
                labels=["result"],
            ),
            self._statements,
        )


def _by_label(
    family: CounterMetricFamily | GaugeMetricFamily, values: Mapping[Any, float]
) -> Metric:
    """A family with one sample per label value (in order)."""
    for label, value in sorted(values.items()):
        family.add_metric([str(label)], value)
    return family


class EngineMetrics:
    """A registry of the worker's metrics (one per app, never the global one)."""

    def __init__(
        self,
        counters: Callable[[], Counters | None],
        lag: Callable[[], Mapping[int, int]] = dict,
        refused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        #: xAPI statements taken, by what became of them (``xapi_ingest.Ingested``).
        self.xapi_statements: dict[str, int] = {}
        self.registry.register(_Totals(counters, lag, refused, self.xapi_statements))
        self.batch_size = Histogram(
            "perf_engine_batch_size",
            "Records per batch.",
            registry=self.registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000),
        )
        self.batch_duration = Histogram(
            "perf_engine_batch_duration_seconds",
            "Processing time of a batch.",
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.latency = Histogram(
            "perf_engine_attempt_latency_seconds",
            "Age of each batch's oldest record when the batch was durable and published.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )

    def count_statements(self, results: Iterable[str]) -> None:
        """Count xAPI statements by what became of them."""
        taken = self.xapi_statements
        for result in results:
            taken[result] = taken.get(result, 0) + 1

    def observe_batch(self, records: int, seconds: float, oldest_age: float) -> None:
        self.batch_size.observe(records)
        self.batch_duration.observe(seconds)
        self.latency.observe(max(oldest_age, 0.0))

    def batch_seconds(self, quantiles: tuple[float, ...] = (0.5, 0.99)) -> dict[str, float | None]:
        """Quantiles of the batches' processing time since start, read off the histogram
        (the upper bound of the bucket each falls in; None before the first batch)."""
        buckets: list[tuple[float, float]] = []
        for metric in self.batch_duration.collect():
            for sample in metric.samples:
                if sample.name.endswith("_bucket"):
                    buckets.append((float(sample.labels["le"]), sample.value))
        buckets.sort()
        total = buckets[-1][1] if buckets else 0.0
        found: dict[str, float | None] = {}
        for q in quantiles:
            bound = next((le for le, count in buckets if total and count >= q * total), None)
            found[f"p{round(q * 100)}"] = bound
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
