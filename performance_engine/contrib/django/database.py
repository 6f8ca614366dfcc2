"""A Django database's settings as an SQLAlchemy URL (for the relay)."""

from __future__ import annotations

import importlib.util

from django.db import connections
from sqlalchemy.engine import URL

from performance_engine.errors import ConfigurationError

__all__ = ["sqlalchemy_url"]


def sqlalchemy_url(alias: str = "default") -> URL:
    """The SQLAlchemy URL of Django database ``alias`` (its NAME, USER, PASSWORD, HOST and
    PORT; a driver the environment has). For OPTIONS the URL cannot carry (TLS files, say)
    give the relay ``--database-url`` instead."""
    try:
        connection = connections[alias]
    except Exception as exc:
        raise ConfigurationError(f"no Django database {alias!r}: {exc}") from exc
    config = connection.settings_dict
    vendor = connection.vendor
    if vendor == "sqlite":
        return URL.create("sqlite", database=str(config["NAME"]))
    if vendor == "postgresql":
        driver = "postgresql+psycopg" if _has("psycopg") else "postgresql+psycopg2"
    elif vendor == "mysql":
        driver = "mysql+mysqldb" if _has("MySQLdb") and not _has("pymysql") else "mysql+pymysql"
    else:
        raise ConfigurationError(
            f"Django database {alias!r} is {vendor}; the outbox supports PostgreSQL, "
            "MySQL/MariaDB and SQLite"
        )
    return URL.create(
        driver,
        username=config.get("USER") or None,
        password=config.get("PASSWORD") or None,
        host=config.get("HOST") or None,
        port=int(config["PORT"]) if config.get("PORT") else None,
        database=config.get("NAME") or None,
    )


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
