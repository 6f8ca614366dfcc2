"""The module Faust's own CLI loads: ``faust -A performance_engine.worker.main worker``.

Importing it builds nothing; the app is made from the environment's settings the first
time the attribute ``app`` is read (which is what ``faust -A`` does).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(name)
    from performance_engine.settings import load_settings
    from performance_engine.worker.app import create_app

    built = create_app(load_settings())
    globals()["app"] = built
    return built
