"""``manage.py perf_engine_backfill``: a model's or a queryset's attempts into Redis."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.utils.module_loading import import_string

from performance_engine.contrib.django.backfill import backfill_queryset
from performance_engine.errors import PerformanceEngineError
from performance_engine.platform.erase import erased_learners
from performance_engine.plugins import build_calculator
from performance_engine.settings import load_settings
from performance_engine.store.stats_store import StatsStore
from performance_engine.tools.cli import backfill_progress, print_report


class Command(BaseCommand):
    help = (
        "Backfill the attempts of a model (app_label.Model) or of a queryset "
        "(--queryset dotted.path.to.function) into Redis, exactly like perf-engine backfill."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", nargs="?", help="app_label.ModelName of the attempts")
        parser.add_argument(
            "--queryset",
            help="dotted path of a function that returns the QuerySet (instead of a model)",
        )
        parser.add_argument(
            "--field",
            action="append",
            default=[],
            metavar="COLUMN=FIELD",
            help="the model field (or lookup) of an attempt column, e.g. user_id=learner_id",
        )
        parser.add_argument("--using", default="default", help="Django database alias")
        parser.add_argument("--skip-invalid", action="store_true", help="skip bad rows")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.add_argument(
            "--include-erased",
            action="store_true",
            help="keep the attempts of erased learners (skipped by default)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queryset = self._queryset(options["model"], options["queryset"]).using(options["using"])
        fields = dict(self._pair(text) for text in options["field"])
        try:
            settings = load_settings()
            calculator = build_calculator(settings)
            with (
                StatsStore.from_settings(settings) as store,
                backfill_progress(options["quiet"]) as progress,
            ):
                store.ping()
                erasures = erased_learners(settings, required=not options["include_erased"])
                report = backfill_queryset(
                    queryset,
                    store,
                    calculator,
                    fields=fields,
                    skip_invalid=options["skip_invalid"],
                    progress=progress,
                    erasures=erasures,
                    include_erased=options["include_erased"],
                )
        except (PerformanceEngineError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        print_report(report, self.stdout.write)

    @staticmethod
    def _queryset(model: str | None, factory: str | None) -> QuerySet[Any]:
        if (model is None) == (factory is None):
            raise CommandError("give a model (app_label.ModelName) or --queryset, one of them")
        if model is not None:
            try:
                return apps.get_model(model)._default_manager.all()
            except (LookupError, ValueError) as exc:
                raise CommandError(f"no model {model!r}: {exc}") from exc
        assert factory is not None
        try:
            made = import_string(factory)()
        except ImportError as exc:
            raise CommandError(f"cannot import {factory!r}: {exc}") from exc
        if not isinstance(made, QuerySet):
            raise CommandError(f"{factory} returned {type(made).__name__}, not a QuerySet")
        return made

    @staticmethod
    def _pair(text: str) -> tuple[str, str]:
        column, sep, field = text.partition("=")
        if not sep or not column or not field:
            raise CommandError(f"--field {text!r}: write COLUMN=FIELD, e.g. user_id=learner_id")
        return column.strip(), field.strip()
