"""The Django app in a Django project of the tests' own (tests/django_project), on SQLite
and PostgreSQL: migrate, record inside transaction.atomic(), roll one back, relay with the
management command, read the stats with the old module's call, backfill from the model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from performance_engine.outbox import LANES_TABLE, OUTBOX_TABLE, outbox_engine
from performance_engine.platform.outbox import outbox_table
from performance_engine.settings import Settings
from tests.helpers import ROOT, oracle, results_json, stored, wait_for_oracle
from tests.services import read_topic, worker_env


def scenario(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.django_project.scenario", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(180)  # a Django project's migrations, relay and backfill per database
def test_a_django_platform_records_in_its_transactions_relays_reads_and_backfills(
    django_database_url: str,
    stream_settings: Settings,
    workers: Callable[..., Any],
    tmp_path: Path,
) -> None:
    env = {
        **worker_env(stream_settings, tmp_path / "django"),
        "TEST_DJANGO_DATABASE_URL": django_database_url,
    }
    committed = json.loads(scenario(env, "record", "300").stdout)
    assert 200 < len(committed) < 300  # every seventh transaction rolled back

    engine = outbox_engine(django_database_url)
    tables = set(inspect(engine).get_table_names())
    assert {OUTBOX_TABLE, LANES_TABLE} <= tables  # made by `migrate`
    migrated = {
        (c["name"], c["type"].compile(engine.dialect), c["nullable"])
        for c in inspect(engine).get_columns(OUTBOX_TABLE)
    }
    assert migrated == {  # the schema of `perf-engine outbox init`
        (c.name, c.type.compile(engine.dialect), c.nullable) for c in outbox_table.columns
    }
    engine.dispose()

    workers(stream_settings)
    relayed = scenario(env, "relay")
    assert f"relayed {len(committed)} attempts" in relayed.stdout
    expected = oracle(committed)
    wait_for_oracle(stream_settings, expected)
    messages = read_topic(stream_settings.kafka_bootstrap, stream_settings.attempts_topic)
    assert sorted(json.loads(m.value)["attempt_id"] for m in messages) == sorted(
        a["attempt_id"] for a in committed
    )

    scope = sorted(expected)[0]
    read = scenario(env, "read", str(scope.user_id), str(scope.sub_topic_id), scope.learning_mode)
    assert results_json(read.stdout) == results_json(expected[scope].to_json())

    from_model = replace(stream_settings, key_prefix=f"{stream_settings.key_prefix}:model")
    backfilled = scenario(
        {**env, "PERF_ENGINE_KEY_PREFIX": from_model.key_prefix}, "backfill", "--quiet"
    )
    assert f"backfilled {len(committed)} attempts into {len(expected)} scopes" in backfilled.stdout
    assert stored(from_model, sorted(expected)) == expected


def test_migrate_keeps_an_outbox_made_by_the_command_line(tmp_path: Path) -> None:
    """`perf-engine outbox init` first, Django's migrate after: the same tables, kept."""
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    from performance_engine.outbox import create_outbox

    engine = outbox_engine(url)
    assert create_outbox(engine) is True
    engine.dispose()
    env = {"TEST_DJANGO_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    committed = json.loads(scenario(env, "record", "20").stdout)
    engine = outbox_engine(url)
    with engine.connect() as connection:
        from sqlalchemy import text

        assert connection.scalar(text(f"SELECT count(*) FROM {OUTBOX_TABLE}")) == len(committed)
        assert connection.scalar(text(f"SELECT count(*) FROM {LANES_TABLE}")) == 16
    engine.dispose()


@pytest.mark.slow
@pytest.mark.timeout(120)  # one Django process per refusal
def test_the_management_commands_refuse_with_one_clear_line(tmp_path: Path) -> None:
    env = {"TEST_DJANGO_DATABASE_URL": f"sqlite:///{tmp_path / 'platform.db'}"}
    scenario(env, "record", "5")
    unmapped = scenario(env, "manage", "perf_engine_backfill", "platform_app.Answer", check=False)
    assert unmapped.returncode == 1
    assert unmapped.stderr.strip().splitlines() == [
        "CommandError: platform_app.Answer has no field for attempt_id, user_id, occurred_at; "
        "say which field holds each: fields={'attempt_id': 'field_name'} (manage.py "
        "perf_engine_backfill --field attempt_id=field_name)"
    ]
    for args, message in [
        (["platform_app.Nothing"], "CommandError: no model 'platform_app.Nothing'"),
        (["--field", "user_id"], "CommandError: give a model (app_label.ModelName) or --queryset"),
        (["platform_app.Answer", "--field", "userid"], "CommandError: --field 'userid': write"),
    ]:
        refused = scenario(env, "manage", "perf_engine_backfill", *args, check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip().startswith(message), refused.stderr
