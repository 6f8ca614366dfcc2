"""A backfill from a Django model or queryset: the ORM's rows, in chunks, into Redis."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
from django.conf import settings as django_settings
from django.db.models import F, QuerySet
from django.utils import timezone

from performance_engine.erasure import Erasure
from performance_engine.errors import InputFileError
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import COLUMNS, REQUIRED_COLUMNS, load_row_chunks
from performance_engine.store.stats_store import StatsStore
from performance_engine.tools.backfill import BackfillReport, Progress, backfill_loaded

__all__ = ["backfill_queryset", "queryset_columns"]

CHUNK_ROWS = 50_000


def queryset_columns(
    queryset: QuerySet[Any], fields: Mapping[str, str] | None = None
) -> QuerySet[Any]:
    """The queryset's attempts as dicts with the event's column names.

    ``fields`` maps an attempt column to the model's field (or lookup) that holds it,
    ``{"attempt_id": "uuid", "user_id": "learner_id", "difficulty": "question__difficulty"}``;
    a column not given is read from the field of its own name, when the model has one."""
    fields = dict(fields or {})
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:
        raise ValueError(f"not attempt columns: {', '.join(unknown)}; use {', '.join(COLUMNS)}")
    names = {f.attname for f in queryset.model._meta.concrete_fields}
    names |= {f.name for f in queryset.model._meta.concrete_fields}
    plain = [c for c in COLUMNS if c not in fields and c in names]
    renamed = {c: F(source) for c, source in fields.items() if source != c}
    plain += [c for c, source in fields.items() if source == c]
    return queryset.values(*plain, **renamed)


def backfill_queryset(
    queryset: QuerySet[Any],
    store: StatsStore,
    calculator: MetricsCalculator,
    *,
    fields: Mapping[str, str] | None = None,
    skip_invalid: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress = lambda phase, done, total: None,
    erasures: Mapping[int, Erasure] | None = None,
    include_erased: bool = False,
) -> BackfillReport:
    """Backfill the attempts of a queryset (see :func:`queryset_columns` for ``fields``),
    read in chunks and validated like a file's rows; exact like every backfill; erased
    learners' attempts skipped unless ``include_erased`` (see
    :func:`~performance_engine.tools.backfill.backfill_frame`)."""
    rows = queryset_columns(queryset, fields).order_by()
    label = queryset.model._meta.label
    missing = [
        c
        for c in REQUIRED_COLUMNS
        if c not in rows.query.values_select + tuple(rows.query.annotation_select)
    ]
    if missing:
        raise InputFileError(
            f"{label} has no field for {', '.join(missing)}; say which field holds each: "
            f"fields={{'{missing[0]}': 'field_name'}} (manage.py perf_engine_backfill "
            f"--field {missing[0]}=field_name)"
        )
    total = rows.count()
    progress("reading", 0, total)
    loaded = load_row_chunks(
        _chunks(rows, chunk_rows),
        calculator.learning_modes,
        skip_invalid=skip_invalid,
        source=f"{label} rows",
        progress=lambda done: progress("reading", done, max(total, done)),
    )
    return backfill_loaded(
        loaded, store, calculator, progress, erasures=erasures, include_erased=include_erased
    )


def _chunks(rows: QuerySet[Any], size: int) -> Iterator[pd.DataFrame]:
    chunk: list[dict[str, Any]] = []
    for row in rows.iterator(chunk_size=min(size, 10_000)):
        chunk.append(row)
        if len(chunk) >= size:
            yield _frame(chunk)
            chunk = []
    if chunk:
        yield _frame(chunk)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, coerce_float=True)
    if not django_settings.USE_TZ and "occurred_at" in frame:
        # Django without time zones keeps local times of TIME_ZONE: make them aware
        frame["occurred_at"] = frame["occurred_at"].map(_aware)
    return frame


def _aware(value: Any) -> Any:
    if hasattr(value, "tzinfo") and value.tzinfo is None and hasattr(value, "hour"):
        return timezone.make_aware(value, timezone.get_default_timezone())
    return value
