"""``manage.py perf_engine_relay``: the outbox relay on a Django database."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from performance_engine.contrib.django.database import sqlalchemy_url
from performance_engine.errors import PerformanceEngineError
from performance_engine.settings import load_settings
from performance_engine.tools.relay import RelayOptions, relay_engine, serve


class Command(BaseCommand):
    help = (
        "Publish the outbox's committed attempts to Kafka (Kafka and Redis settings from "
        "the PERF_ENGINE_* environment, as for perf-engine relay)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default="default", help="Django database alias")
        parser.add_argument(
            "--database-url", help="an SQLAlchemy URL instead of the alias's settings"
        )
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--poll", type=float, default=0.2, help="seconds between empty rounds")
        parser.add_argument(
            "--retention", type=float, default=86_400.0, help="seconds sent rows are kept"
        )
        parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics")
        parser.add_argument("--drain", action="store_true", help="stop once nothing is pending")

    def handle(self, *args: Any, **options: Any) -> None:
        engine_logger = logging.getLogger("performance_engine")
        if engine_logger.getEffectiveLevel() > logging.INFO:
            engine_logger.setLevel(logging.INFO)
        if not engine_logger.handlers and not logging.getLogger().handlers:
            logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            url = options["database_url"] or sqlalchemy_url(options["database"])
            sent = serve(
                relay_engine(url),
                load_settings(),
                RelayOptions(
                    batch_size=options["batch_size"],
                    poll_seconds=options["poll"],
                    retention_seconds=options["retention"],
                ),
                metrics_port=options["metrics_port"],
                drain=options["drain"],
            )
        except PerformanceEngineError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"relayed {sent} attempts")
