"""The public surface: __all__ matches the exports; importing has no side effects."""

from __future__ import annotations

import inspect
import subprocess
import sys

import performance_engine
import performance_engine.metrics
from performance_engine import errors


def public_names(module: object) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }


def test_all_matches_the_exports() -> None:
    assert set(performance_engine.__all__) == public_names(performance_engine)
    assert set(performance_engine.metrics.__all__) == public_names(performance_engine.metrics)
    assert len(performance_engine.__all__) == len(set(performance_engine.__all__))


def test_every_error_derives_from_the_root_and_is_exported() -> None:
    raised = {
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, Exception)
    }
    for error in raised:
        assert issubclass(error, errors.PerformanceEngineError)
        assert error.__name__ in performance_engine.__all__
        assert error.__name__ in (errors.__doc__ or ""), f"{error.__name__} missing from the tree"


def test_import_connects_to_nothing_and_skips_faust() -> None:
    """The platform imports the client (kafka-python) without Faust or aiokafka."""
    code = (
        "import sys, socket\n"
        "def refuse(*a, **k): raise AssertionError('network at import time')\n"
        "socket.socket.connect = refuse\n"
        "import performance_engine, performance_engine.platform.read_api\n"
        "import performance_engine.metrics\n"
        "assert 'faust' not in sys.modules, 'faust imported'\n"
        "assert 'aiokafka' not in sys.modules, 'aiokafka imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "", "PERF_ENGINE_REDIS_URL": "not-a-url"},
    )
    assert done.returncode == 0, done.stderr


def test_the_worker_and_the_client_do_not_load_pandas() -> None:
    """pandas and pyarrow (about 100 MB) load only for the batch path and frame metrics;
    numpy only when a batch of stats is computed column-wise (metrics.columnar)."""
    code = (
        "import sys\n"
        "import performance_engine, performance_engine.worker.app, performance_engine.tools.cli\n"
        "loaded = sorted(m for m in ('pandas', 'pyarrow', 'numpy') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_workers_columnar_stats_do_without_the_compiled_loops() -> None:
    """A worker's large batch takes the columnar stats (numpy), not the backfill's
    compiled loops: numba and its compiler (tens of MB) stay out of the worker."""
    code = (
        "import sys\n"
        "from performance_engine.metrics.calculator import COLUMNAR_MIN_SCOPES, "
        "MetricsCalculator\n"
        "from performance_engine.metrics.types import ScopeKey\n"
        "calculator = MetricsCalculator()\n"
        "scopes = [ScopeKey(u, 1, 'standard') for u in range(COLUMNAR_MIN_SCOPES)]\n"
        "states = [calculator.new_state() for _ in scopes]\n"
        "calculator.stats_json_many(scopes, states)\n"
        "assert 'numpy' in sys.modules, 'not the columnar path'\n"
        "assert 'numba' not in sys.modules, 'numba loaded'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
