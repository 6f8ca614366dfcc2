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
