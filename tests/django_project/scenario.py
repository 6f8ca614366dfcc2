"""What a Django platform does with the engine, step by step, in a process of its own (a
Django process has one set of settings): ``python -m tests.django_project.scenario STEP``.

- ``record``: migrate, then save answers with their attempts in the outbox, each in one
  ``transaction.atomic()``, every seventh rolled back; prints the committed attempts (JSON).
- ``relay``: ``manage.py perf_engine_relay --drain``.
- ``backfill``: ``manage.py perf_engine_backfill`` of the Answer model.
- ``read USER SUB_TOPIC MODE``: the old module's call, printing the stats JSON.
- ``manage ARGS...``: ``manage.py ARGS...``.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")


class Rollback(Exception):
    """The platform's next write failed: its transaction rolls back."""


def record(count: int) -> list[dict[str, Any]]:
    from django.core.management import call_command
    from django.db import transaction

    from performance_engine.contrib.django import record_attempt
    from performance_engine.tools.simulator import generate_attempts
    from tests.django_project.platform_app.models import Answer

    call_command("migrate", run_syncdb=True, verbosity=0)
    committed = []
    for n, attempt in enumerate(generate_attempts(count, users=12, seed=21)):
        try:
            with transaction.atomic():
                Answer.objects.create(
                    uuid=attempt["attempt_id"],
                    learner_id=attempt["user_id"],
                    sub_topic_id=attempt["sub_topic_id"],
                    learning_mode=attempt["learning_mode"],
                    question_id=attempt["question_id"],
                    difficulty=attempt["difficulty"],
                    is_correct=attempt["is_correct"],
                    answered_at=datetime.fromtimestamp(attempt["occurred_at"] / 1000, tz=UTC),
                )
                record_attempt(attempt)
                if n % 7 == 3:
                    raise Rollback
        except Rollback:
            continue
        committed.append(attempt)
    return committed


def main(step: str, *args: str) -> None:
    django.setup()
    from django.core.management import call_command

    if step == "record":
        print(json.dumps(record(int(args[0]))))
    elif step == "relay":
        call_command("perf_engine_relay", "--drain", "--poll", "0.05")
    elif step == "backfill":
        call_command(
            "perf_engine_backfill",
            "platform_app.Answer",
            "--field",
            "attempt_id=uuid",
            "--field",
            "user_id=learner_id",
            "--field",
            "occurred_at=answered_at",
            *args,
        )
    elif step == "read":
        from performance_engine import LearningModeType, PerformanceStats

        stats = PerformanceStats.create_performance_stats(
            user_id=int(args[0]),
            sub_topic_id=int(args[1]),
            learning_mode=LearningModeType(args[2]),
        )()
        print(stats.to_json().decode())
    elif step == "manage":
        from django.core.management import execute_from_command_line

        execute_from_command_line(["manage.py", *args])
    else:
        raise SystemExit(f"unknown step {step!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
