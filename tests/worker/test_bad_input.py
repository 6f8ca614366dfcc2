"""Bad input: a fuzzer against the record decoder, dead letters for every rejection, and
hostile identifiers that must never reach outside the scope's keys.

Only :class:`InvalidAttemptError` may come out of the decoder, with one of the SPEC 2
error classes and a reason; time and memory per record stay bounded whatever the bytes.
"""

from __future__ import annotations

import asyncio
import json
import platform
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from performance_engine.errors import ConfigurationError, InvalidAttemptError
from performance_engine.events import DEAD_LETTER_MAX_VALUE, TRUNCATED_HEADER
from performance_engine.metrics.attempt import (
    ERROR_CLASSES,
    MAX_EPOCH_MS,
    MAX_ID,
    MAX_VALUE_BYTES,
    Attempt,
    decode_attempt,
)
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.frame import normalise_frame
from performance_engine.metrics.modes import LearningModes
from performance_engine.settings import Settings, load_learning_modes
from performance_engine.store.stats_store import StatsStore
from performance_engine.tools.backfill import backfill_frame
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import TESTS

MODES = LearningModes.default()
VALID = generate_attempts(1, users=1, seed=5)[0]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
boundary_values: st.SearchStrategy[Any] = st.sampled_from(
    [0, 1, -1, MAX_ID, MAX_ID + 1, 2**64, MAX_EPOCH_MS, MAX_EPOCH_MS + 1, 1.5, 1e308, -0.0,
     "", " ", "0", "1", "true", "null", "\x00", "\ud800", "\u202e", "x" * 129, "x" * 128,
     "*", "{u1}", "pe:{u1}:1:standard", "a\nb", "EASY", "Practice", "1970-01-01T00:00:00Z",
     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59-01:00",
     "2026-02-30T00:00:00Z", "2026-01-01T00:00:00.123456789Z", True, False, None, [], {}]
)  # fmt: skip


@st.composite
def mutated_attempts(draw: st.DrawFn) -> bytes:
    """A valid attempt with fields replaced, removed or added."""
    row: dict[str, Any] = dict(VALID)
    for name in draw(st.lists(st.sampled_from([*VALID, "extra", "schema_version"]), max_size=4)):
        action = draw(st.sampled_from(["replace", "boundary", "remove"]))
        if action == "remove":
            row.pop(name, None)
        else:
            row[name] = draw(json_values if action == "replace" else boundary_values)
    return json.dumps(row, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@st.composite
def structural_garbage(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["deep", "huge_string", "huge_number", "truncated", "bom"]))
    depth = draw(st.integers(1, 30_000))
    if kind == "deep":
        return b'{"attempt_id": ' + b"[" * depth + b"]" * draw(st.sampled_from([0, depth])) + b"}"
    if kind == "huge_string":
        return json.dumps({**VALID, "attempt_id": "x" * depth}).encode()
    if kind == "huge_number":
        return json.dumps(VALID).encode().replace(b'"user_id": 1', b'"user_id": 1' + b"9" * depth)
    if kind == "truncated":
        text = json.dumps(VALID).encode()
        return text[: draw(st.integers(0, len(text) - 1))]
    return b"\xef\xbb\xbf" + json.dumps(VALID).encode()


payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_attempts(),
    structural_garbage(),
)


def check(value: bytes) -> Attempt | InvalidAttemptError:
    try:
        return decode_attempt(value, MODES)
    except InvalidAttemptError as exc:
        error = exc
    assert error.error_class in ERROR_CLASSES
    assert error.reason
    return error


@pytest.mark.slow
@pytest.mark.timeout(300)  # 12,000 generated payloads: about a minute on a busy box
@settings(
    max_examples=12_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(payloads)
def test_the_decoder_only_ever_rejects_with_its_own_error(value: bytes) -> None:
    result = check(value)
    if isinstance(result, Attempt):  # accepted: then it is a real, canonical attempt
        assert 1 <= result.user_id <= MAX_ID
        assert 0 <= result.occurred_at <= MAX_EPOCH_MS
        assert result.learning_mode in MODES.rules
        assert 1 <= len(result.attempt_id) <= 128


@pytest.mark.parametrize(
    "value",
    [
        b"x" * (10 * 1024 * 1024),  # 10 MB of anything
        b'{"attempt_id": "' + b"a" * (10 * 1024 * 1024) + b'"}',
        b"[" * (10 * 1024 * 1024),
    ],
    ids=["10MB-bytes", "10MB-string", "10MB-nesting"],
)
def test_a_10_mb_value_is_refused_before_it_is_parsed(value: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(InvalidAttemptError) as caught:
            decode_attempt(value, MODES)
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.error_class == "oversized"
    assert peak < 64 * 1024  # nothing of the value was copied or parsed


def test_deep_nesting_within_the_size_limit_is_invalid_json_not_a_crash() -> None:
    depth = MAX_VALUE_BYTES // 2 - 16
    value = b'{"attempt_id": ' + b"[" * depth + b"]" * depth + b"}"
    assert check(value).error_class in ("invalid_json", "invalid_field")  # type: ignore[union-attr]


def test_timestamps_before_1970_are_refused_as_in_files() -> None:
    for stamp in ("1969-12-31T23:59:59.999Z", "0001-01-01T00:00:00+01:00", -1):
        with pytest.raises(InvalidAttemptError, match="occurred_at"):
            decode_attempt(json.dumps({**VALID, "occurred_at": stamp}).encode(), MODES)


# --- dead letters for every rejection ------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.redis
@settings(
    max_examples=1,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.lists(payloads, min_size=300, max_size=300))
def test_every_fuzzed_rejection_reaches_the_dead_letter_topic(
    stream_settings: Settings, fuzzed: list[bytes]
) -> None:
    from tests.helpers import Rec, real_store_and_broker, run
    from tests.services import read_topic

    values = [*fuzzed, json.dumps(VALID).encode(), b"x" * (10 * 1024 * 1024)]
    outcomes = [check(v) for v in values]
    rejected = {
        offset: outcome
        for offset, outcome in enumerate(outcomes)
        if isinstance(outcome, InvalidAttemptError)
    }
    recs = [Rec(stream_settings.attempts_topic, 0, i, b"k", v) for i, v in enumerate(values)]

    async def process() -> None:
        from performance_engine.worker.processor import BatchProcessor

        async with real_store_and_broker(stream_settings) as (store, publish):
            processor = BatchProcessor(stream_settings, MetricsCalculator(), store, publish)
            await asyncio.wait_for(processor.process(recs), timeout=60)
            assert sum(processor.counters.rejected.values()) == len(rejected)

    run(process())
    letters = read_topic(stream_settings.kafka_bootstrap, stream_settings.dlq_topic)
    assert sorted(int(dict(m.headers)["pe-source-offset"]) for m in letters) == sorted(rejected)
    for message in letters:
        headers = dict(message.headers)
        offset = int(headers["pe-source-offset"])
        assert headers["pe-error-class"].decode() == rejected[offset].error_class
        assert 0 < len(headers["pe-error-reason"]) <= 1000
        original = values[offset]
        if len(original) > DEAD_LETTER_MAX_VALUE:  # the 10 MB record: kept in part
            assert int(headers[TRUNCATED_HEADER]) == len(original)
            assert message.value == original[:DEAD_LETTER_MAX_VALUE]
        else:
            assert TRUNCATED_HEADER not in headers
            assert message.value == original


# --- hostile identifiers ------------------------------------------------------------------

HOSTILE = ["*", "{", "}", ":", "{u1}", "pe:{u1}:1:standard", "a\nb", "\r\n", " ", "x" * 5000,
           "../../etc", "\x00", "KEYS *", "'; FLUSHALL; --", "practice\n", "pe\n"]  # fmt: skip
KEY_RE = re.compile(
    r"^pe-test-[0-9a-f]+:(\{u[0-9]+\}:[0-9]+:(standard|practice|mastery)(:history)?"
    r"|stats:\{u[0-9]+\})$"
)


@pytest.mark.parametrize("field", ["learning_mode", "difficulty"])
def test_hostile_names_are_refused(field: str) -> None:
    for name in HOSTILE:
        with pytest.raises(InvalidAttemptError):
            decode_attempt(json.dumps({**VALID, field: name}).encode(), MODES)


def test_hostile_mode_names_and_prefixes_cannot_be_configured(tmp_path: Any) -> None:
    for name in HOSTILE:
        path = tmp_path / "modes.toml"
        path.write_text(f"[modes.{json.dumps(name)}]\neasy = 1\nmedium = 1\nhard = 1\n")
        with pytest.raises(ConfigurationError):
            load_learning_modes(path)
        if name != ":":  # a colon is a fine prefix separator ("app:pe"); the rest are not
            with pytest.raises(ConfigurationError):
                Settings(key_prefix=name)


@pytest.mark.redis
def test_hostile_attempt_ids_stay_inside_the_scope_keys(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """attempt_id is free text (up to 128 characters): it is hashed, never part of a key."""
    rows = generate_attempts(len(HOSTILE), users=3, seed=8)
    for row, name in zip(rows, HOSTILE, strict=True):
        row["attempt_id"] = name[:128]
    calculator = MetricsCalculator()
    frame = normalise_frame(pd.DataFrame(rows), calculator.learning_modes).frame
    with StatsStore.from_settings(settings) as store:
        report = backfill_frame(frame, store, calculator)
    assert report.attempts_applied == len(HOSTILE)
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{settings.key_prefix}*")]
    assert keys
    assert all(KEY_RE.fullmatch(key) for key in keys), keys
    fields = [f.decode() for k in keys if ":stats:" in k for f in redis_client.hkeys(k)]  # type: ignore[union-attr]
    assert fields
    assert all(re.fullmatch(r"[0-9]+:(standard|practice|mastery)", f) for f in fields), fields


#: Where the dev extra installs atheris (the marker in pyproject.toml).
ATHERIS_PLATFORM = (
    sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info < (3, 13)
)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_coverage_guided_fuzzing_with_atheris(tmp_path: Path) -> None:
    """1,000,000 coverage-guided inputs from the seeds in tests/fuzz/seeds (atheris)."""
    if not ATHERIS_PLATFORM:
        pytest.skip("atheris has no wheel for this platform (the dev extra's marker leaves it out)")
    import atheris  # noqa: F401  on a platform with a wheel, a missing install fails here

    here = TESTS / "fuzz"
    corpus = tmp_path / "corpus"
    shutil.copytree(here / "seeds", corpus)
    done = subprocess.run(
        [sys.executable, str(here / "decoder.py"), "-runs=1000000", "-max_len=4096", str(corpus)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 1000000 runs" in done.stderr
