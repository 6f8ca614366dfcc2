"""The Django app's configuration."""

from __future__ import annotations

from django.apps import AppConfig


class PerformanceEngineConfig(AppConfig):
    name = "performance_engine.contrib.django"
    label = "performance_engine"
    verbose_name = "Performance engine"
    default_auto_field = "django.db.models.BigAutoField"
