"""What a failed Redis call means, said once for every user of the store."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
from redis.exceptions import RedisClusterException

from performance_engine.errors import DatabaseQueryError

__all__ = ["REDIS_ERRORS", "failure", "failure_hint", "redact_url"]


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


#: What a Redis client may raise (cluster routing errors are not RedisErrors).
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


def failure_hint(exc: Exception) -> str:
    """What the operator can do about a failed Redis call."""
    if any(sign in str(exc) for sign in ("MOVED", "CROSSSLOT", "hash to the same slot")):
        return "it is a Redis Cluster: set PERF_ENGINE_REDIS_CLUSTER=true"
    if "maxmemory" in str(exc):
        return "Redis is out of memory (maxmemory with noeviction): raise maxmemory"
    if isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in str(exc):
        return "the Redis user lacks a permission: see the ACL line in docs/operations.md"
    return "check that it is running and that PERF_ENGINE_REDIS_URL points at it"


def failure(url: str, exc: Exception) -> DatabaseQueryError:
    error = DatabaseQueryError(f"Redis at {redact_url(url)} failed: {exc}; {failure_hint(exc)}")
    error.__cause__ = exc
    return error
