"""What the worker's web views may read of the running worker: a narrow, typed view.

The views (``worker.web``, ``worker.dashboard.views``) are module-level classes that read
the worker through :class:`WorkerStatus` only; ``create_app`` puts the running service on
the app (:func:`attach_status`), where each view finds it (:func:`status_of`). So the web
layer knows nothing of the service's internals, and the app imports the views, never
the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from performance_engine.metrics.calculator import MetricsCalculator
    from performance_engine.settings import Settings
    from performance_engine.store.dashboard_index import DashboardIndex
    from performance_engine.store.stats_store import AsyncStatsStore
    from performance_engine.worker.dashboard.feed import StatsFeed
    from performance_engine.worker.instrumentation import EngineMetrics
    from performance_engine.worker.processor import Counters, Publisher

__all__ = ["WorkerStatus", "attach_status", "status_of"]

_ATTRIBUTE = "engine_status"


class WorkerStatus(Protocol):
    """The running worker as its views see it (``EngineService`` is one)."""

    @property
    def settings(self) -> Settings:
        """The worker's settings."""

    @property
    def store(self) -> AsyncStatsStore | None:
        """The Redis store, once the worker has started."""

    @property
    def dashboard_index(self) -> DashboardIndex | None:
        """The dashboard's index of cohorts and learners (None without the dashboard)."""

    @property
    def feed(self) -> StatsFeed | None:
        """The dashboard's feed of stats updates (None without the dashboard)."""

    @property
    def publish(self) -> Publisher | None:
        """Sends records to a topic (the worker's producer), once the worker has started."""

    @property
    def calculator(self) -> MetricsCalculator:
        """The metrics and the learning parameters in use (fitted ones when published)."""

    @property
    def refusal(self) -> str | None:
        """Why the worker refuses to go on, if it does."""

    @property
    def metrics(self) -> EngineMetrics:
        """The Prometheus metrics."""

    @property
    def should_stop(self) -> bool:
        """The worker is stopping."""

    def counters(self) -> Counters | None:
        """The batch processor's running totals (None before it started)."""

    def lag(self) -> dict[int, int]:
        """Per assigned partition of the attempts topic, the records not read yet."""

    def assigned_partitions(self) -> set[int]:
        """The partitions of the attempts topic this worker reads."""


def attach_status(app: Any, status: WorkerStatus) -> None:
    """Let the views registered on ``app`` read ``status``."""
    setattr(app, _ATTRIBUTE, status)


def status_of(view: Any) -> WorkerStatus:
    """The status the view's app carries (see :func:`attach_status`)."""
    return cast("WorkerStatus", getattr(view.app, _ATTRIBUTE))
