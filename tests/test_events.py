"""Stats events and dead letters: their ids and shapes."""

from __future__ import annotations

import uuid

from performance_engine.events import EVENT_NAMESPACE, StatsUpdated, event_id
from performance_engine.metrics.types import ScopeKey


def test_event_ids_are_uuid5_of_scope_and_version() -> None:
    for scope, version in ((ScopeKey(1, 2, "standard"), 1), (ScopeKey(2**63 - 1, 7, "x-y"), 10**6)):
        assert event_id(scope, version) == str(uuid.uuid5(EVENT_NAMESPACE, f"{scope}:{version}"))


def test_stats_event_embeds_the_stored_json() -> None:
    from performance_engine.events import Source, decode_stats_event, stats_event
    from performance_engine.metrics.calculator import MetricsCalculator
    from tests.helpers import attempt

    calculator = MetricsCalculator()
    state = calculator.new_state()
    scope = attempt().scope
    calculator.apply(scope, state, [attempt()])
    stats = calculator.stats(scope, state)
    key, value = stats_event(scope, 1, stats.to_json(), Source("t", 3, 9, "a1"), now_ms=0)
    assert key == b"123:456:standard"
    assert decode_stats_event(value) == StatsUpdated(
        event_id=event_id(scope, 1),
        stats=stats,
        updated_at="1970-01-01T00:00:00.000Z",
        source=Source("t", 3, 9, "a1"),
    )


def test_dead_letter_headers() -> None:
    from performance_engine.events import DLQ_HEADERS, dead_letter_headers

    headers = dead_letter_headers("invalid_json", "x" * 5000, "attempts", 2, 41)
    assert [name for name, _ in headers] == list(DLQ_HEADERS)
    assert dict(headers)["pe-error-reason"] == b"x" * 1000
    assert dict(headers)["pe-source-offset"] == b"41"
