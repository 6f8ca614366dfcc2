"""A file's backfill shared out over processes, each taking a share of the scopes.

Scopes are independent, so the result is the single backfill's: each process reads and
validates the whole file (every process sees the same rows and the same errors), keeps
the rows of its scopes (a hash of ``user_id`` and ``sub_topic_id`` picks the process) and
merges them exactly as :func:`~performance_engine.tools.backfill.backfill_frame` does,
compare-and-set included. The processes are spawned, not forked: nothing of the caller's
threads, locks or connections is shared; each builds its calculator and Redis client
from the settings.

A process that fails (Redis gone, a bad row without ``skip_invalid``) does not stop the
others; its error is raised once all have ended. What was written stays written: a
backfill can always be run again.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from performance_engine.errors import PerformanceEngineError
from performance_engine.settings import Settings
from performance_engine.tools.backfill import BackfillReport, Progress, backfill_frame

__all__ = ["backfill_file_in_processes", "processes_for"]

#: A process per this much of the file at most (smaller files are done before a second
#: interpreter has started), up to one per CPU and MAX_PROCESSES.
BYTES_PER_PROCESS = 32 * 1024 * 1024
MAX_PROCESSES = 4


def processes_for(size: int, cpus: int | None = None) -> int:
    """How many processes a file of ``size`` bytes is shared out over by default."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(size // BYTES_PER_PROCESS, cpus, MAX_PROCESSES))


def share_of(frame: pd.DataFrame, processes: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """The process (0 to ``processes - 1``) that backfills each row's scope."""
    user = frame["user_id"].to_numpy(np.int64).astype(np.uint64)
    sub = frame["sub_topic_id"].to_numpy(np.int64).astype(np.uint64)
    mixed: np.ndarray[Any, np.dtype[np.uint64]] = user * np.uint64(0x9E3779B97F4A7C15) ^ sub
    return (mixed >> np.uint64(17)) % np.uint64(processes)


def backfill_file_in_processes(
    path: Path | str,
    settings: Settings,
    processes: int,
    *,
    skip_invalid: bool = False,
    progress: Progress | None = None,
) -> BackfillReport:
    """Backfill a file (see :func:`~performance_engine.tools.backfill.backfill_file`) with
    ``processes`` processes; the report is the single backfill's."""
    context = multiprocessing.get_context("spawn")
    messages: Any = context.Queue()
    workers = [
        context.Process(
            target=_backfill_share,
            args=(str(path), settings, share, processes, skip_invalid, messages),
            name=f"perf-engine-backfill-{share}",
            daemon=True,
        )
        for share in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        reports, errors = _collect(workers, messages, progress)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    if errors:
        raise errors[min(errors)]
    return _merged([reports[share] for share in range(processes)])


def _collect(
    workers: list[Any], messages: Any, progress: Progress | None
) -> tuple[dict[int, BackfillReport], dict[int, BaseException]]:
    """Every process's report or error; their progress summed on the way."""
    reports: dict[int, BackfillReport] = {}
    errors: dict[int, BaseException] = {}
    phases: dict[str, dict[int, tuple[int, int]]] = {}
    while len(reports) + len(errors) < len(workers):
        try:
            kind, share, payload = messages.get(timeout=0.5)
        except queue.Empty:
            for share, worker in enumerate(workers):
                ended = share in reports or share in errors
                if not ended and not worker.is_alive() and worker.exitcode != 0:
                    errors[share] = PerformanceEngineError(
                        f"backfill process {share} ended with exit code {worker.exitcode} "
                        "(killed, or out of memory?); what it wrote stays, run the backfill "
                        "again to finish"
                    )
            continue
        if kind == "progress":
            phase, done, total = payload
            phases.setdefault(phase, {})[share] = (done, total)
            if progress is not None:
                counts = phases[phase].values()
                progress(phase, sum(d for d, _ in counts), sum(t for _, t in counts))
        elif kind == "done":
            reports[share] = payload
        else:
            errors[share] = payload
    return reports, errors


def _merged(reports: list[BackfillReport]) -> BackfillReport:
    merged = BackfillReport(rejected=reports[0].rejected)  # every process saw the same rows
    for report in reports:
        merged.rows += report.rows
        merged.scopes += report.scopes
        merged.written += report.written
        merged.unchanged += report.unchanged
        merged.attempts_applied += report.attempts_applied
    return merged


def _backfill_share(
    path: str, settings: Settings, share: int, processes: int, skip_invalid: bool, messages: Any
) -> None:
    """One process: the whole file read and validated, its share of the scopes merged."""
    from performance_engine.metrics.loader import load_attempts
    from performance_engine.plugins import build_calculator
    from performance_engine.worker.store import StatsStore

    def progress(phase: str, done: int, total: int) -> None:
        messages.put(("progress", share, (phase, done, total)))

    try:
        calculator = build_calculator(settings)
        progress("reading", 0, 1)
        loaded = load_attempts(path, calculator.learning_modes, skip_invalid=skip_invalid)
        progress("reading", 1, 1)
        mine = share_of(loaded.frame, processes) == share
        frame = loaded.frame[mine].reset_index(drop=True)
        with StatsStore.from_settings(settings) as store:
            report = backfill_frame(frame, store, calculator, progress=progress)
        report.rejected = loaded.errors
        messages.put(("done", share, report))
    except BaseException as exc:  # handed to the caller, which raises it
        messages.put(("error", share, _portable(exc)))


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else one that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return PerformanceEngineError(f"{type(exc).__name__}: {exc}")
    return exc
