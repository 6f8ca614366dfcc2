"""JSON Schemas of what the engine reads and writes on Kafka and in Redis, for platforms
in any language: generated from the engine's own types (:func:`documents`), shipped as
files in this package and in the repository's ``schemas/`` folder.

- ``attempt.schema.json``: an attempt event (SPEC 2), ``metrics.attempt.AttemptEvent``;
- ``stats.schema.json``: a scope's stats (SPEC 4), ``metrics.types.PerformanceStatsData``,
  as Redis's stats hashes, the HTTP API and the events carry them;
- ``stats-updated.schema.json``: a ``stats-updated`` event's value, ``events.StatsUpdated``;
- ``dead-letter-headers.schema.json``: a dead letter's headers as an object of UTF-8
  strings, ``events.DeadLetterHeaders`` (with every error class);
- ``erasure.schema.json``: an erasure record, a value of the erasures topic,
  ``erasure.Erasure``;
- ``void.schema.json``: a void, a record of the attempts topic of its own (SPEC 2),
  ``metrics.attempt.VoidEvent``.

``python -m performance_engine.schemas DIR`` writes them (the repository's copies are
written so; a test fails when a type and its file disagree). :func:`load` reads one.
"""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import msgspec

from performance_engine.erasure import Erasure
from performance_engine.events import DeadLetterHeaders, StatsUpdated
from performance_engine.metrics.attempt import AttemptEvent, VoidEvent
from performance_engine.metrics.types import PerformanceStatsData

__all__ = ["DIALECT", "NAMES", "documents", "load", "render"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: name -> (type, title, whether the engine always writes every field)
_SOURCES: dict[str, tuple[type, str, bool]] = {
    "attempt": (AttemptEvent, "Attempt event (SPEC 2)", False),
    "stats": (PerformanceStatsData, "Stats of one scope (SPEC 4)", True),
    "stats-updated": (StatsUpdated, "stats-updated event value (SPEC 4)", True),
    "dead-letter-headers": (DeadLetterHeaders, "Dead letter headers", False),
    "erasure": (Erasure, "Erasure record (a value of the erasures topic)", True),
    "void": (VoidEvent, "Void (a record of the attempts topic, SPEC 2)", False),
}
NAMES = tuple(_SOURCES)


def _document(kind: type, title: str, written: bool) -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(kind)
    defs: dict[str, Any] = schema.pop("$defs")
    root = defs.pop(schema["$ref"].rsplit("/", 1)[1])
    if written:  # what the engine writes carries every field, defaults included
        for item in [root, *defs.values()]:
            if item.get("type") == "object" and "properties" in item:
                item["required"] = list(item["properties"])
    document = {
        "$schema": DIALECT,
        "$comment": "Generated from the engine's types: python -m performance_engine.schemas",
        **root,
        "title": title,
    }
    if defs:
        document["$defs"] = defs
    return document


def documents() -> dict[str, dict[str, Any]]:
    """Every schema, by name (its file is ``<name>.schema.json``)."""
    return {name: _document(*source) for name, source in _SOURCES.items()}


def render(document: dict[str, Any]) -> str:
    """A schema's file content."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def load(name: str) -> dict[str, Any]:
    """A shipped schema by name (``attempt``, ``stats``, ``stats-updated``,
    ``dead-letter-headers``, ``erasure``)."""
    if name not in _SOURCES:
        raise KeyError(f"no schema {name!r}; there are {', '.join(NAMES)}")
    found: dict[str, Any] = json.loads((files(__name__) / f"{name}.schema.json").read_text())
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m performance_engine.schemas DIR", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    folder.mkdir(parents=True, exist_ok=True)
    for name, document in documents().items():
        (folder / f"{name}.schema.json").write_text(render(document))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
