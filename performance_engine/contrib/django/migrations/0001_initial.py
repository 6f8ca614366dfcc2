"""Creates the outbox tables with the engine's own DDL (nothing if they exist)."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations, models

from performance_engine.platform.outbox import LANES_TABLE, OUTBOX_TABLE, outbox_ddl

#: Django's database vendors, as the engine's DDL names their dialects.
DIALECTS = {"postgresql": "postgresql", "mysql": "mysql", "sqlite": "sqlite"}


def create_tables(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if OUTBOX_TABLE in connection.introspection.table_names():
        return  # made earlier by `perf-engine outbox init`: the same schema
    dialect = DIALECTS.get(connection.vendor)
    if dialect is None:
        raise RuntimeError(
            f"the outbox supports PostgreSQL, MySQL/MariaDB and SQLite, not {connection.vendor}"
        )
    for statement in outbox_ddl(dialect):
        schema_editor.execute(statement, params=None)


def drop_tables(apps: Any, schema_editor: Any) -> None:
    for table in (OUTBOX_TABLE, LANES_TABLE):
        schema_editor.execute(f"DROP TABLE {schema_editor.quote_name(table)}", params=None)


class Migration(migrations.Migration):
    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []

    operations: ClassVar[list[Any]] = [
        migrations.CreateModel(
            name="OutboxRow",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("user_id", models.BigIntegerField()),
                ("lane", models.IntegerField()),
                ("attempt_id", models.CharField(max_length=128)),
                ("payload", models.TextField()),
                ("created_at", models.DateTimeField()),
                ("sent_at", models.DateTimeField(null=True)),
            ],
            options={"db_table": OUTBOX_TABLE, "managed": False},
        ),
        migrations.CreateModel(
            name="OutboxLane",
            fields=[("lane", models.IntegerField(primary_key=True, serialize=False))],
            options={"db_table": LANES_TABLE, "managed": False},
        ),
        migrations.RunPython(create_tables, drop_tables),
    ]
