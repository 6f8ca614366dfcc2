"""Historical attempts as one normalised frame: validated column-wise, no file reading.

The normalised frame has one row per attempt with the columns of :data:`COLUMNS`:
``learning_mode`` canonical, ``difficulty`` the code 0/1/2 (easy/medium/hard),
``occurred_at`` epoch milliseconds, optional integers as nullable ``Int64``.

Validation is vectorised; a row the fast path cannot prove valid is re-checked by the one
record validator of :mod:`metrics.attempt`, which names the exact reason. So a file row
is accepted exactly when the same attempt would be accepted as a Kafka event.

The readers of files (``tools.history_files``) and of databases (``tools.sql_history``,
the Django app) hand their tables here. CSV cells are text: integers are decimal,
``is_correct`` is ``true``/``false`` (any case) or ``1``/``0``, ``occurred_at`` is RFC
3339 or epoch milliseconds, and an empty optional cell means absent. Parquet columns keep
their types: integers may also be floats with whole values (pandas writes integer columns
with gaps that way; NaN means absent), and ``occurred_at`` may be a time-zone-aware
timestamp column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from performance_engine.errors import InputFileError, InvalidAttemptError
from performance_engine.metrics.attempt import (
    ATTEMPT_COLUMNS,
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    RFC3339_PATTERN,
    Attempt,
    attempt_from_mapping,
)
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.types import DIFFICULTIES

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "LoadResult",
    "RowError",
    "attempts_to_frame",
    "frame_attempts",
    "load_row_chunks",
    "normalise_frame",
    "normalise_table",
]

OPTIONAL_COLUMNS = ("attempt_number", "time_spent_ms")
REQUIRED_COLUMNS = tuple(c for c in ATTEMPT_COLUMNS if c not in OPTIONAL_COLUMNS)
COLUMNS = ATTEMPT_COLUMNS
_ID_COLUMNS = ("user_id", "sub_topic_id", "question_id")
_CODE = {d.value: i for i, d in enumerate(DIFFICULTIES)}
_INT_RE = r"^[0-9]{1,18}$"  # always fits int64; longer numbers take the exact slow path
_TRUE = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True, slots=True)
class RowError:
    """One rejected row: its 1-based position among the source's records, and why (and,
    from a database, its ``attempt_id`` when it has one)."""

    row: int
    error_class: str
    reason: str
    attempt_id: str | None = None

    def __str__(self) -> str:
        if self.attempt_id is not None:
            return f"row {self.row} (attempt_id {self.attempt_id!r}): {self.reason}"
        return f"row {self.row}: {self.reason}"


@dataclass(slots=True)
class LoadResult:
    frame: pd.DataFrame
    errors: list[RowError] = field(default_factory=list)


def frame_attempts(frame: pd.DataFrame) -> list[Attempt]:
    """The attempts of a normalised frame, in order (one Python object per row, built
    column by column)."""
    names = list(DIFFICULTIES)
    number, spent = frame["attempt_number"], frame["time_spent_ms"]
    rows = zip(
        frame["attempt_id"].tolist(),
        frame["user_id"].tolist(),
        frame["sub_topic_id"].tolist(),
        frame["learning_mode"].tolist(),
        frame["question_id"].tolist(),
        frame["difficulty"].tolist(),
        frame["is_correct"].tolist(),
        frame["occurred_at"].tolist(),
        number.fillna(0).tolist(),
        number.isna().tolist(),
        spent.fillna(0).tolist(),
        spent.isna().tolist(),
        strict=True,
    )
    return [
        Attempt(
            attempt_id=str(i),
            user_id=u,
            sub_topic_id=s,
            learning_mode=m,
            question_id=q,
            difficulty=names[d],
            is_correct=c,
            occurred_at=at,
            attempt_number=None if no_n else int(n),
            time_spent_ms=None if no_t else int(t),
        )
        for i, u, s, m, q, d, c, at, n, no_n, t, no_t in rows
    ]


def attempts_to_frame(attempts: list[Attempt]) -> pd.DataFrame:
    """A normalised frame from validated attempts (the JSON Lines reader uses this)."""
    return pd.DataFrame(
        {
            "attempt_id": pd.array([a.attempt_id for a in attempts], dtype=object),
            "user_id": np.array([a.user_id for a in attempts], dtype=np.int64),
            "sub_topic_id": np.array([a.sub_topic_id for a in attempts], dtype=np.int64),
            "learning_mode": pd.array([a.learning_mode for a in attempts], dtype=object),
            "question_id": np.array([a.question_id for a in attempts], dtype=np.int64),
            "difficulty": np.array([_CODE[a.difficulty.value] for a in attempts], dtype=np.int8),
            "is_correct": np.array([a.is_correct for a in attempts], dtype=bool),
            "occurred_at": np.array([a.occurred_at for a in attempts], dtype=np.int64),
            "attempt_number": pd.array([a.attempt_number for a in attempts], dtype="Int64"),
            "time_spent_ms": pd.array([a.time_spent_ms for a in attempts], dtype="Int64"),
        }
    )


# --- validation: vectorised, with the record validator for suspect rows ---------------


def normalise_frame(
    frame: pd.DataFrame, modes: LearningModes, *, skip_invalid: bool = False, source: str = "frame"
) -> LoadResult:
    """Validate and normalise a DataFrame of raw attempts (as read from a file)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return normalise_table(table, Path(source), modes, skip_invalid)


def load_row_chunks(
    chunks: Iterable[pd.DataFrame],
    modes: LearningModes,
    *,
    skip_invalid: bool = False,
    source: str = "query",
    progress: Callable[[int], None] = lambda rows: None,
) -> LoadResult:
    """Validate and normalise attempts read from a database in chunks of rows.

    Database types are read as a database gives them: ``is_correct`` may be a boolean or
    the integers 0 and 1 (MySQL's ``BOOLEAN`` is ``TINYINT(1)``), and an ``occurred_at``
    timestamp without a zone (``DATETIME``, ``timestamp without time zone``, or SQLite's
    text ``2026-11-24 09:00:00.000000``) is taken as UTC, as Django and most platforms
    store it. A bad row raises :class:`InputFileError`
    naming its position in the results and its ``attempt_id``, unless ``skip_invalid``.
    ``progress`` is called with the number of rows read so far.
    """
    frames: list[pd.DataFrame] = []
    errors: list[RowError] = []
    read = 0
    for chunk in chunks:
        table = pa.Table.from_pandas(_database_types(chunk), preserve_index=False)
        loaded = normalise_table(table, Path(source), modes, skip_invalid, first_row=read + 1)
        frames.append(loaded.frame)
        errors += loaded.errors
        read += len(chunk)
        progress(read)
    if not frames:
        return LoadResult(attempts_to_frame([]), errors)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return LoadResult(frame, errors)


def _database_types(chunk: pd.DataFrame) -> pd.DataFrame:
    changes: dict[str, Any] = {}
    correct = chunk.get("is_correct")
    if (
        correct is not None
        and pd.api.types.is_integer_dtype(correct.dtype)
        and correct.isin([0, 1]).all()
    ):
        changes["is_correct"] = correct.astype(bool)
    occurred = chunk.get("occurred_at")
    if (
        occurred is not None
        and pd.api.types.is_datetime64_dtype(occurred.dtype)
        and getattr(occurred.dtype, "tz", None) is None
    ):
        changes["occurred_at"] = occurred.dt.tz_localize("UTC")
    elif occurred is not None and (
        pd.api.types.is_object_dtype(occurred.dtype) or pd.api.types.is_string_dtype(occurred.dtype)
    ):
        values = occurred.astype(object).map(_utc_if_naive)
        first = values.dropna()
        if len(first) and isinstance(first.iloc[0], datetime):  # a driver's datetimes
            values = pd.to_datetime(values, utc=True, errors="coerce")
        changes["occurred_at"] = values
    return chunk.assign(**changes) if changes else chunk


#: A date and time without a zone, as SQLite's text keeps SQLAlchemy's DateTime.
_NAIVE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,9})?$")


def _utc_if_naive(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value, str) and _NAIVE_TEXT.match(value):
        return value.replace(" ", "T") + "Z"
    return value


def normalise_table(
    table: pa.Table, path: Path, modes: LearningModes, skip_invalid: bool, first_row: int = 0
) -> LoadResult:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise InputFileError(
            f"{path}: missing column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}"
        )
    n = table.num_rows
    ok = np.ones(n, dtype=bool)
    out: dict[str, Any] = {}

    # Text columns stay Arrow strings (no Python str per row) unless a suspect row that
    # the record validator accepts has to be written back (see _with_fixes).
    text = table.column("attempt_id")
    if _is_text(text):
        length = pc.utf8_length(text).to_numpy(zero_copy_only=False)
        ok &= _filled(text) & (length >= 1) & (length <= 128)
        out["attempt_id"] = text
    else:
        ok[:] = False
        out["attempt_id"] = pa.nulls(n, pa.string())

    for name in _ID_COLUMNS:
        values, good = _int_column(table.column(name), minimum=1)
        out[name] = values
        ok &= good
    for name, minimum in (("attempt_number", 1), ("time_spent_ms", 0)):
        if name in table.column_names:
            values, good, present = _optional_int_column(table.column(name), minimum)
            out[name] = pd.arrays.IntegerArray(values, ~present)
            ok &= good
        else:
            out[name] = pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, dtype=bool))

    for name, allowed in (("learning_mode", list(modes.rules)), ("difficulty", list(_CODE))):
        column = table.column(name)
        if _is_text(column):
            lowered = pc.utf8_lower(column)
            index = pc.index_in(lowered, value_set=pa.array(allowed))
            ok &= _filled(index)
            codes = pc.fill_null(index, 0).to_numpy(zero_copy_only=False).astype(np.int8)
        else:
            ok[:] = False
            lowered = pa.nulls(n, pa.string())
            codes = np.zeros(n, dtype=np.int8)
        out[name] = lowered if name == "learning_mode" else codes

    correct, good = _bool_column(table.column("is_correct"))
    out["is_correct"] = correct
    ok &= good
    occurred, good = _timestamp_column(table.column("occurred_at"))
    out["occurred_at"] = occurred
    ok &= good

    errors: list[RowError] = []
    fixes: dict[int, Attempt] = {}
    suspects = np.flatnonzero(~ok)
    if len(suspects):
        rows = table.take(pa.array(suspects)).to_pylist()
        for position, row in zip(suspects.tolist(), rows, strict=True):
            try:
                attempt = attempt_from_mapping(_typed(row), modes)
            except InvalidAttemptError as exc:
                if first_row:  # from a database: the results' position and the attempt_id
                    attempt_id = row.get("attempt_id")
                    error = RowError(
                        first_row + position,
                        exc.error_class,
                        exc.reason,
                        None if attempt_id is None else str(attempt_id),
                    )
                else:
                    error = RowError(position + 1, exc.error_class, exc.reason)
                if not skip_invalid:
                    raise InputFileError(
                        f"{path}: {error}; fix it or pass --skip-invalid"
                    ) from None
                errors.append(error)
                continue
            fixes[position] = attempt
            ok[position] = True
    # The columns are this function's own arrays: no copy, and no consolidation of the
    # integer columns into one block (a copy of them all).
    frame = pd.DataFrame(
        {name: _with_fixes(name, out[name], fixes) for name in COLUMNS}, copy=False
    )
    if errors:
        frame = frame[ok].reset_index(drop=True)
    return LoadResult(frame, errors)


def _is_text(column: pa.ChunkedArray) -> bool:
    return bool(pa.types.is_string(column.type) or pa.types.is_large_string(column.type))


def _with_fixes(name: str, values: Any, fixes: dict[int, Attempt]) -> Any:
    """A column with the rows the record validator accepted written back, as pandas."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        if not fixes:
            return values.to_pandas()
        values = values.to_numpy(zero_copy_only=False).astype(object)
    for position, attempt in fixes.items():
        value = getattr(attempt, name)
        values[position] = _CODE[value.value] if name == "difficulty" else value
    return values


def _filled(column: pa.ChunkedArray) -> np.ndarray[Any, np.dtype[np.bool_]]:
    result: np.ndarray[Any, np.dtype[np.bool_]] = pc.is_valid(column).to_numpy(zero_copy_only=False)
    return result


def _int_column(
    column: pa.ChunkedArray, minimum: int
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.bool_]]]:
    n = len(column)
    kind = column.type
    if pa.types.is_integer(kind) and not pa.types.is_uint64(kind):
        values = np.array(pc.fill_null(column.cast(pa.int64()), 0), dtype=np.int64)
        return values, _filled(column) & (values >= minimum)
    if pa.types.is_floating(kind):  # pandas stores integers with gaps as floats
        floats = np.array(pc.fill_null(column, np.nan), dtype=np.float64)
        whole = np.isfinite(floats) & (np.abs(floats) < 2.0**53)
        whole[whole] = floats[whole] == np.floor(floats[whole])
        values = np.where(whole, floats, 0).astype(np.int64)
        return values, whole & (values >= minimum)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        good = pc.fill_null(pc.match_substring_regex(column, _INT_RE), False)
        digits = pc.if_else(good, column, "0")
        values = digits.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
        good_np: np.ndarray[Any, np.dtype[np.bool_]] = good.to_numpy(zero_copy_only=False)
        return values, good_np & (values >= minimum)
    return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)


def _optional_int_column(
    column: pa.ChunkedArray, minimum: int
) -> tuple[
    np.ndarray[Any, np.dtype[np.int64]],
    np.ndarray[Any, np.dtype[np.bool_]],
    np.ndarray[Any, np.dtype[np.bool_]],
]:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        present = _filled(column) & (pc.utf8_length(column).to_numpy(zero_copy_only=False) > 0)
    elif pa.types.is_floating(column.type):
        present = ~np.isnan(np.array(pc.fill_null(column, np.nan), dtype=np.float64))
    else:
        present = _filled(column)
    values, good = _int_column(column, minimum)
    return values, good | ~present, present


def _bool_column(
    column: pa.ChunkedArray,
) -> tuple[np.ndarray[Any, np.dtype[np.bool_]], np.ndarray[Any, np.dtype[np.bool_]]]:
    n = len(column)
    if pa.types.is_boolean(column.type):
        values = pc.fill_null(column, False).to_numpy(zero_copy_only=False)
        return values, _filled(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        lowered = pc.utf8_lower(column)
        good = pc.fill_null(pc.is_in(lowered, value_set=pa.array(list(_TRUE))), False)
        truthy = pc.fill_null(pc.is_in(lowered, value_set=pa.array(["true", "1"])), False)
        return truthy.to_numpy(zero_copy_only=False), good.to_numpy(zero_copy_only=False)
    return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)


def _timestamp_column(
    column: pa.ChunkedArray,
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.bool_]]]:
    n = len(column)
    kind = column.type
    if pa.types.is_timestamp(kind):
        if kind.tz is None:  # a zone-less timestamp is rejected, as in the event
            return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        millis = pc.fill_null(column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()), -1)
        values = millis.to_numpy(zero_copy_only=False).astype(np.int64)
        return values, _filled(column) & (values >= 0) & (values <= MAX_EPOCH_MS)
    if pa.types.is_integer(kind):  # epoch milliseconds, from 2000 on (SPEC 2)
        values = np.array(pc.fill_null(column.cast(pa.int64()), -1), dtype=np.int64)
        return values, (values >= MIN_EPOCH_MS) & (values <= MAX_EPOCH_MS)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    digits = pc.fill_null(pc.match_substring_regex(column, r"^[0-9]{1,15}$"), False)
    stamped = pc.fill_null(pc.match_substring_regex(column, RFC3339_PATTERN), False)
    values = np.zeros(n, dtype=np.int64)
    digits_np = digits.to_numpy(zero_copy_only=False)
    if digits_np.any():
        values[digits_np] = (
            pc.filter(column, digits).cast(pa.int64()).to_numpy(zero_copy_only=False)
        )
    stamped_np = stamped.to_numpy(zero_copy_only=False)
    if stamped_np.any():
        text = pd.Series(pc.filter(column, stamped).to_numpy(zero_copy_only=False)).str.upper()
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        parsed_ok = ~parsed.isna().to_numpy()
        naive = parsed.dt.as_unit("ms").dt.tz_convert(None).to_numpy(dtype="datetime64[ms]")
        millis = np.where(parsed_ok, naive.view(np.int64), -1)
        values[stamped_np] = millis
        stamped_np = stamped_np.copy()
        stamped_np[stamped_np] = parsed_ok
    good = ((digits_np & (values >= MIN_EPOCH_MS)) | (stamped_np & (values >= 0))) & (
        values <= MAX_EPOCH_MS
    )
    return values, good


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """A file row as the event's JSON types, for the record validator to judge."""
    result: dict[str, Any] = {}
    for name, value in row.items():
        if name not in COLUMNS:
            continue
        if isinstance(value, str):
            stripped = value.strip()
            if name in OPTIONAL_COLUMNS and stripped == "":
                continue
            if name in (*_ID_COLUMNS, *OPTIONAL_COLUMNS) or (
                name == "occurred_at" and stripped.isdigit()
            ):
                value = int(stripped) if _is_decimal(stripped) else value
            elif name == "is_correct":
                value = _TRUE.get(stripped.lower(), value)
        elif name == "occurred_at" and hasattr(value, "isoformat"):
            value = _datetime_text(value)
        elif value is None and name in OPTIONAL_COLUMNS:
            continue
        elif isinstance(value, float) and name in (*_ID_COLUMNS, *OPTIONAL_COLUMNS):
            if math.isnan(value) and name in OPTIONAL_COLUMNS:
                continue
            if value.is_integer():
                value = int(value)
        result[name] = value
    return result


def _is_decimal(text: str) -> bool:
    body = text[1:] if text[:1] == "-" else text
    return body.isdigit() and body.isascii()


def _datetime_text(value: Any) -> str:
    if getattr(value, "tzinfo", None) is None:
        return str(value)  # zone-less: the validator rejects it with its reason
    text: str = value.isoformat()
    return text
