"""The worker's HTTP endpoints against a running worker (real broker, real Redis)."""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from performance_engine.settings import Settings
from performance_engine.tools.simulator import generate_attempts
from tests.helpers import oracle, results_json, wait_for_oracle, web_worker
from tests.services import attempt_records, produce, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _, body = get(f"{base}/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_endpoints(stream_settings: Settings, workers: Callable[..., Any]) -> None:
    _, base = web_worker(stream_settings, workers)
    status, content_type, body = get(f"{base}/health")
    health = json.loads(body)
    assert (status, content_type.split(";")[0]) == (200, "application/json")
    assert health["status"] == "ok"
    assert health["redis"] == {"ok": True}
    assert health["kafka"]["ok"] is True

    before = samples(base)
    rows = generate_attempts(600, users=6, seed=41)
    records = [*attempt_records(rows), (b"1", b"{oops"), (b"1", b'{"user_id": "x"}')]
    expected = oracle(records)
    produce(stream_settings.kafka_bootstrap, stream_settings.attempts_topic, records)
    wait_for_oracle(stream_settings, expected)

    for scope, stats in expected.items():
        status, content_type, body = get(
            f"{base}/stats/{scope.user_id}/{scope.sub_topic_id}/{scope.learning_mode}"
        )
        assert (status, content_type.split(";")[0]) == (200, "application/json")
        assert results_json(body) == results_json(stats.to_json())
        assert json.loads(body)["learning"]["mastery_probability"] is not None

    # ETag from the scope's revision; 304 when the client has it, 200 when it is stale.
    scope = min(expected)
    url = f"{base}/stats/{scope.user_id}/{scope.sub_topic_id}/{scope.learning_mode}"
    with urllib.request.urlopen(url, timeout=10) as response:
        tag = response.headers["ETag"]
        revision = json.loads(response.read())["revision"]
    assert tag == f'"{revision}"'
    for header in (tag, f"W/{tag}", f'"0", {tag}', "*"):
        asked = urllib.request.Request(url, headers={"If-None-Match": header})
        with pytest.raises(urllib.error.HTTPError) as not_modified:
            urllib.request.urlopen(asked, timeout=10)
        not_modified.value.close()
        assert not_modified.value.code == 304, header
        assert not_modified.value.headers["ETag"] == tag
    stale = urllib.request.Request(url, headers={"If-None-Match": f'"{revision - 1}"'})
    with urllib.request.urlopen(stale, timeout=10) as response:
        assert response.status == 200
        assert results_json(response.read()) == results_json(expected[scope].to_json())

    status, content_type, body = get(f"{base}/stats/999999/1/standard")
    assert (status, content_type.split(";")[0]) == (404, "application/json")
    assert "no stats for user 999999" in json.loads(body)["error"]
    status, _, body = get(f"{base}/stats/1/2/nosuchmode")  # a mode nobody configured
    assert status == 400
    assert (
        "is not configured; known modes: mastery, practice, standard" in json.loads(body)["error"]
    )
    for bad in ("abc/1/standard", "1/-2/standard", "1/2/std*"):
        status, _, body = get(f"{base}/stats/{bad}")
        assert status == 400, bad
        assert json.loads(body)["error"]

    def counters_moved() -> bool:
        after = samples(base)
        applied = ("perf_engine_attempts_processed_total", (("result", "applied"),))
        published = ("perf_engine_stats_published_total", ())
        return (
            after[applied] - before.get(applied, 0) == 600
            and after[published] > before.get(published, 0)
            and after[("perf_engine_attempts_rejected_total", (("reason", "invalid_json"),))] == 1
            and after[("perf_engine_attempts_rejected_total", (("reason", "invalid_field"),))] == 1
            and after[("perf_engine_batch_size_count", ())] >= 1
        )

    wait_until(counters_moved, 20, "the counters to count the attempts")
    after = samples(base)
    lags = {k: v for k, v in after.items() if k[0] == "perf_engine_consumer_lag"}
    assert lags
    assert all(v == 0 for v in lags.values())
    assert after[("perf_engine_attempt_latency_seconds_count", ())] >= 1
    # attempts that came in learning order: no history was folded again, none was lost
    assert after[("perf_engine_refolds_total", ())] == 0
    assert after[("perf_engine_histories_lost_total", ())] == 0


def listening(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) != port or fields[3] != "0A":  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            if width == 8:
                found.add(str(ipaddress.IPv4Address(raw[::-1])))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(str(ipaddress.IPv6Address(words)))
    return found


@pytest.mark.timeout(300)  # two workers start, one after the other
def test_a_default_worker_listens_on_loopback_only(
    stream_settings: Settings, workers: Callable[..., Any]
) -> None:
    assert Settings().web_host == "127.0.0.1"
    worker = workers(stream_settings)
    port = int(worker.env["PERF_ENGINE_WEB_PORT"])
    assert worker.env["PERF_ENGINE_WEB_HOST"] == "127.0.0.1"
    wait_until(lambda: bool(listening(port)), 60, "the worker's web server")
    assert listening(port) == {"127.0.0.1"}
    # asked for, and told that something in front authenticates: every interface
    opened = workers(replace(stream_settings, web_host="0.0.0.0", insecure_open_http=True))
    port = int(opened.env["PERF_ENGINE_WEB_PORT"])
    wait_until(lambda: bool(listening(port)), 60, "the second worker's web server")
    assert listening(port) == {"0.0.0.0"}
