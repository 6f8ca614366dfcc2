"""How every client connects: Redis (plain, TLS, cluster) and Kafka (TLS, SASL).

One place turns :class:`Settings` into the options of each client library, so the worker
(Faust, redis.asyncio), the commands (kafka-python, redis) and the platform clients
connect the same way. See docs/operations.md, Security.
"""

from __future__ import annotations

import ssl
from typing import Any

from performance_engine.settings import Settings

__all__ = [
    "aiokafka_options",
    "async_redis_client",
    "faust_credentials",
    "kafka_python_options",
    "kafka_ssl_context",
    "redis_client",
    "redis_options",
]


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url`` / ``RedisCluster.from_url``."""
    options: dict[str, Any] = {
        "socket_timeout": 10.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
    }
    if settings.redis_tls_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_tls_cert_file is not None:
        options["ssl_certfile"] = str(settings.redis_tls_cert_file)
    if settings.redis_tls_key_file is not None:
        options["ssl_keyfile"] = str(settings.redis_tls_key_file)
    return options


def redis_client(settings: Settings) -> Any:
    """A redis-py client for the settings: one server, a cluster, or the master that the
    Sentinels name (re-asked after a failover)."""
    import redis
    import redis.cluster
    import redis.sentinel

    options = redis_options(settings)
    if settings.redis_sentinels:
        _no_cluster_with_sentinels(settings)
        # Typed as Any: redis-py annotates Sentinel in some releases and not in others.
        sentinel: Any = redis.sentinel.Sentinel
        return sentinel(_sentinel_addresses(settings), **_sentinel_options()).master_for(
            settings.redis_sentinel_master, **options, **_master_options(settings)
        )
    if settings.redis_cluster:
        return redis.cluster.RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


def async_redis_client(settings: Settings) -> Any:
    """The asyncio twin of :func:`redis_client`."""
    import redis.asyncio as aioredis
    import redis.asyncio.cluster as aiocluster
    import redis.asyncio.sentinel as aiosentinel

    options = redis_options(settings)
    if settings.redis_sentinels:
        _no_cluster_with_sentinels(settings)
        sentinel: Any = aiosentinel.Sentinel
        return sentinel(_sentinel_addresses(settings), **_sentinel_options()).master_for(
            settings.redis_sentinel_master, **options, **_master_options(settings)
        )
    if settings.redis_cluster:
        return aiocluster.RedisCluster.from_url(settings.redis_url, **options)
    return aioredis.Redis.from_url(settings.redis_url, **options)


def _no_cluster_with_sentinels(settings: Settings) -> None:
    if settings.redis_cluster:
        from performance_engine.errors import ConfigurationError

        raise ConfigurationError(
            "PERF_ENGINE_REDIS_SENTINELS and PERF_ENGINE_REDIS_CLUSTER exclude each other "
            "(a cluster fails over by itself); set one of them"
        )


def _sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    pairs = (address.rpartition(":") for address in settings.redis_sentinels)
    return [(host, int(port)) for host, _, port in pairs]


def _sentinel_options() -> dict[str, Any]:
    return {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}


def _master_options(settings: Settings) -> dict[str, Any]:
    """What REDIS_URL gives a Sentinel's master: database, user, password, TLS."""
    from redis.connection import parse_url

    parsed = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    options = {k: v for k, v in parsed.items() if k in ("db", "username", "password")}
    if settings.redis_url.startswith("rediss://"):
        options["ssl"] = True
    return options


def _kafka_protocol(settings: Settings) -> dict[str, Any]:
    """The protocol and SASL options, named alike by kafka-python and aiokafka."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return options


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for kafka-python's producer, consumer and admin client."""
    options = _kafka_protocol(settings)
    if settings.kafka_tls:
        options.update(
            ssl_check_hostname=True,
            ssl_cafile=_text(settings.kafka_ssl_ca_file),
            ssl_certfile=_text(settings.kafka_ssl_cert_file),
            ssl_keyfile=_text(settings.kafka_ssl_key_file),
        )
    return options


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for aiokafka's consumer and producer."""
    options = _kafka_protocol(settings)
    if settings.kafka_tls:
        options["ssl_context"] = kafka_ssl_context(settings)
    return options


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for Kafka (None without TLS): the CA file, else the system's CAs."""
    if not settings.kafka_tls:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=_text(settings.kafka_ssl_ca_file)
    )
    if settings.kafka_ssl_cert_file is not None:
        context.load_cert_chain(
            str(settings.kafka_ssl_cert_file), _text(settings.kafka_ssl_key_file)
        )
    return context


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(kafka_ssl_context(settings))
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=kafka_ssl_context(settings),
    )


def _text(path: object) -> str | None:
    return None if path is None else str(path)
