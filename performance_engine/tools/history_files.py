"""Reading historical attempts from files: CSV, JSON Lines (optionally gzipped), Parquet.

Each reader hands what it read to :mod:`performance_engine.metrics.frame`, which validates
and normalises it, so a file row is accepted exactly when the same attempt would be
accepted as a Kafka event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from performance_engine.erasure import Erasure
from performance_engine.errors import InputFileError, InvalidAttemptError
from performance_engine.metrics.attempt import Attempt, decode_attempt
from performance_engine.metrics.frame import (
    LoadResult,
    RowError,
    attempts_to_frame,
    normalise_table,
)
from performance_engine.metrics.modes import LearningModes

__all__ = ["load_attempts", "without_erased"]


def load_attempts(
    path: Path | str, modes: LearningModes, *, skip_invalid: bool = False
) -> LoadResult:
    """Read and validate a CSV, JSON Lines or Parquet file of attempts.

    A bad row raises :class:`InputFileError` naming the row, unless ``skip_invalid``,
    when it is dropped and listed in ``LoadResult.errors``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file; give the path of a CSV, JSONL or Parquet file")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    if suffix in (".csv", ".csv.gz"):
        return _load_csv(path, modes, skip_invalid)
    if suffix in (".jsonl", ".ndjson", ".json", ".jsonl.gz"):
        return _load_jsonl(path, modes, skip_invalid)
    if suffix in (".parquet", ".pq"):
        return _load_parquet(path, modes, skip_invalid)
    raise InputFileError(
        f"{path}: unknown file type {suffix!r}; use .csv, .jsonl (JSON Lines) or .parquet"
    )


# --- JSON Lines: every line through the Kafka decoder ---------------------------------


def _load_jsonl(path: Path, modes: LearningModes, skip_invalid: bool) -> LoadResult:
    opener: Callable[..., Any] = open
    if path.suffix == ".gz":
        import gzip

        opener = gzip.open
    attempts: list[Attempt] = []
    errors: list[RowError] = []
    row = 0
    with opener(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            row += 1
            try:
                attempts.append(decode_attempt(line.rstrip(b"\r\n"), modes))
            except InvalidAttemptError as exc:
                error = RowError(row, exc.error_class, exc.reason)
                if not skip_invalid:
                    raise InputFileError(
                        f"{path}: {error}; fix it or pass --skip-invalid"
                    ) from None
                errors.append(error)
    return LoadResult(attempts_to_frame(attempts), errors)


# --- CSV and Parquet: vectorised, with the record validator for suspect rows -----------


def _load_csv(path: Path, modes: LearningModes, skip_invalid: bool) -> LoadResult:
    try:
        header = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema
        names = header.names
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(f"{path}: not a readable CSV file: {exc}") from None
    return normalise_table(table, path, modes, skip_invalid)


def _load_parquet(path: Path, modes: LearningModes, skip_invalid: bool) -> LoadResult:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(f"{path}: not a readable Parquet file: {exc}") from None
    return normalise_table(table, path, modes, skip_invalid)


def without_erased(
    frame: pd.DataFrame, erasures: Mapping[int, Erasure]
) -> tuple[pd.DataFrame, int, int]:
    """The frame without the attempts of erased learners that occurred up to their
    erasure; and how many attempts, of how many learners, it left out."""
    if not erasures or frame.empty:
        return frame, 0, 0
    until = frame["user_id"].map({user: e.erased_at_ms for user, e in erasures.items()})
    skip = np.asarray((frame["occurred_at"] <= until).fillna(False), dtype=bool)
    if not skip.any():
        return frame, 0, 0
    learners = int(frame["user_id"][skip].nunique())
    return frame[~skip].reset_index(drop=True), int(skip.sum()), learners
