"""Checks a command makes before it starts: Redis answers, and may not evict state."""

from __future__ import annotations

import redis

from performance_engine.errors import ConfigurationError, DatabaseQueryError
from performance_engine.settings import Settings
from performance_engine.store.failures import REDIS_ERRORS
from performance_engine.store.stats_store import StatsStore

__all__ = ["eviction_policy", "require_redis", "require_safe_redis"]


def require_redis(settings: Settings) -> None:
    """Raise DatabaseQueryError unless Redis answers a PING."""
    with StatsStore.from_settings(settings) as store:
        store.ping()


def eviction_policy(settings: Settings) -> str | None:
    """Redis's ``maxmemory-policy`` (on a cluster: any node's that may evict, else
    ``noeviction``), or None when this user may not read it.

    Read from ``INFO memory``, which a restricted ACL user can be granted without CONFIG.
    """
    with StatsStore.from_settings(settings) as store:
        try:
            info = store.client.info("memory")
        except redis.ResponseError:  # e.g. an ACL user without INFO
            return None
        except REDIS_ERRORS as exc:
            store.ping()  # raises the engine's DatabaseQueryError with the reason
            raise DatabaseQueryError(f"reading Redis's memory settings failed: {exc}") from exc
    nodes = [info] if "maxmemory_policy" in info else list(info.values())
    found = (node.get("maxmemory_policy") for node in nodes if isinstance(node, dict))
    policies = {str(policy) for policy in found if policy is not None}
    evicting = sorted(policies - {"noeviction"})
    if evicting:
        return evicting[0]
    return "noeviction" if policies else None


def require_safe_redis(settings: Settings) -> str | None:
    """Refuse a Redis that may evict state, unless ``allow_eviction``; returns the policy."""
    policy = eviction_policy(settings)
    if policy not in (None, "noeviction") and not settings.allow_eviction:
        raise ConfigurationError(
            f"Redis's maxmemory-policy is {policy!r}: it may evict the engine's state and "
            "lose attempts; set it to noeviction (CONFIG SET maxmemory-policy noeviction, or "
            "in redis.conf), or accept the risk with --allow-eviction / "
            "PERF_ENGINE_ALLOW_EVICTION=true"
        )
    return policy
