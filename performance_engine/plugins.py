"""Building the calculator the commands and the worker use, custom metrics included.

``PERF_ENGINE_METRICS`` lists custom metrics as ``package.module:ClassName``, separated by
commas; each class is imported, instantiated without arguments and registered, the same
for ``perf-engine worker``, ``backfill`` and every other command, so the stream and the
batch path compute the same ``custom_metrics``.
"""

from __future__ import annotations

import importlib

from performance_engine.errors import ConfigurationError
from performance_engine.metrics.base import BaseMetric
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.settings import Settings, load_learning_modes, load_parameter_file

__all__ = ["build_calculator", "load_metric"]


def load_metric(path: str) -> BaseMetric:
    """Import ``package.module:ClassName`` and instantiate it."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"custom metric {path!r} must be written package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"custom metric {path!r}: cannot import {module_name}: {exc}"
        ) from exc
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ConfigurationError(f"custom metric {path!r}: {module_name} has no {attribute}")
    try:
        metric = factory()
    except Exception as exc:
        raise ConfigurationError(f"custom metric {path!r} failed to instantiate: {exc}") from exc
    if not isinstance(metric, BaseMetric):
        raise ConfigurationError(f"custom metric {path!r} is not a BaseMetric subclass")
    return metric


def build_calculator(settings: Settings) -> MetricsCalculator:
    """The learning-mode rules, the fitted parameter file and the custom metrics the
    settings name, in one calculator (a set published to Redis replaces the file's where
    a ``store.params.ParamsFollower`` follows it)."""
    calculator = MetricsCalculator(
        learning_modes=load_learning_modes(settings.learning_modes_path),
        parameters=load_parameter_file(settings.learning_params_path),
    )
    calculator.register_metrics([load_metric(path) for path in settings.metrics])
    return calculator
