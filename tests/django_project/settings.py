"""A learning platform's Django settings, as the tests run it: the database from
``TEST_DJANGO_DATABASE_URL`` (PostgreSQL or SQLite), time zones on."""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url

_url = make_url(os.environ["TEST_DJANGO_DATABASE_URL"])
if _url.get_backend_name() == "sqlite":
    _database = {"ENGINE": "django.db.backends.sqlite3", "NAME": _url.database}
else:
    _database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.database,
        "USER": _url.username,
        "HOST": _url.host,
        "PORT": str(_url.port or 5432),
    }

DATABASES = {"default": _database}
INSTALLED_APPS = ["performance_engine.contrib.django", "tests.django_project.platform_app"]
USE_TZ = True
TIME_ZONE = "Europe/Berlin"  # the platform's local zone; the database keeps UTC
SECRET_KEY = "tests-only"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
