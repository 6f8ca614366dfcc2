"""The worker leans on Faust's private consumer API; these fail, naming what is missing,
when the installed Faust no longer has it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from performance_engine.errors import ConfigurationError
from performance_engine.worker.faust_internals import (
    RELIED_ON,
    SUPPORTED_FAUST,
    missing_internals,
    require_faust_internals,
)
from tests.helpers import ROOT


def test_the_installed_faust_has_every_private_name_the_worker_uses() -> None:
    require_faust_internals()
    assert missing_internals(RELIED_ON) == []


def test_a_built_consumer_has_the_instance_attributes_too(tmp_path: Path) -> None:
    """Instance attributes exist only on a built consumer; Faust leaves an event loop
    behind when it builds one, so this runs in a process of its own."""
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from faust.types import TP\n"
        "from performance_engine.settings import Settings\n"
        "from performance_engine.worker.app import create_app\n"
        "from performance_engine.worker import faust_internals as fi\n"
        "consumer = create_app(Settings(data_dir=Path(sys.argv[1]))).consumer\n"
        "assert fi.next_offset(consumer, TP('attempts', 0)) is None\n"
        "print(json.dumps(fi.missing_internals(fi.RELIED_ON, [consumer])))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_a_missing_name_is_named_in_one_line() -> None:
    class OlderConsumer:
        _read_offset = 0

    relied_on: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
        "faust aiokafka Consumer": (OlderConsumer, ("_drain_messages",), ("_stopped",))
    }
    missing = missing_internals(relied_on, [OlderConsumer()])
    assert missing == [
        "faust aiokafka Consumer._drain_messages",
        "faust aiokafka Consumer._stopped",
    ]

    original = dict(RELIED_ON)
    RELIED_ON.clear()
    RELIED_ON.update(relied_on)
    try:
        with pytest.raises(ConfigurationError) as raised:
            require_faust_internals()
    finally:
        RELIED_ON.clear()
        RELIED_ON.update(original)
    message = str(raised.value)
    assert "\n" not in message
    assert "Consumer._drain_messages" in message
    assert f"faust-streaming{SUPPORTED_FAUST}" in message


def test_the_package_pins_the_faust_versions_the_module_was_written_against() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if re.match(r"faust-streaming\b", d)]
    worker = project["optional-dependencies"]["worker"]  # the platform's install has no Faust
    pins = [d for d in worker if re.match(r"faust-streaming\b", d)]
    assert pins == [f"faust-streaming{SUPPORTED_FAUST}"]
    assert version("faust-streaming") in SpecifierSet(SUPPORTED_FAUST.replace(",", ", "))


def test_no_other_module_touches_faust_internals() -> None:
    """The private names live in one module: any other use of them is a leak."""
    names = {n for _, cls, inst in RELIED_ON.values() for n in (*cls, *inst)}
    names.add("_ensure_producer")
    pattern = re.compile(r"\.(" + "|".join(sorted(names)) + r")\b")
    leaks = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "performance_engine").rglob("*.py"))
        if path.name != "faust_internals.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert leaks == []
