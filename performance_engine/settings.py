"""The one settings object, and the table that reads it from the environment.

Each field of :class:`Settings` says, in its metadata, the environment variable it is read
from (``PERF_ENGINE_`` + the field's name in capitals unless it says otherwise), how the
text is parsed and what a valid value is. :func:`load_settings`, :data:`ENV_NAMES`,
:func:`settings_env` and the checks of ``Settings.__post_init__`` all follow that table.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from performance_engine.errors import ConfigurationError

if TYPE_CHECKING:
    from performance_engine.metrics.modes import LearningModes
    from performance_engine.metrics.params import ParameterSet

__all__ = [
    "ENV_NAMES",
    "ENV_PREFIX",
    "KAFKA_SASL_MECHANISMS",
    "KAFKA_SECURITY_PROTOCOLS",
    "Settings",
    "load_learning_modes",
    "load_parameter_file",
    "load_settings",
    "settings_env",
]

ENV_PREFIX = "PERF_ENGINE_"

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


#: A parser turns the variable's text (stripped, never empty) into the field's value.
Parser = Callable[[str, str], Any]
#: A check returns what is wrong with a value ("" when nothing), for the variable's name.
Check = Callable[[Any], str]


def _text(raw: str, env_name: str) -> str:
    return raw


def _upper(raw: str, env_name: str) -> str:
    return raw.upper()


def _number(kind: type[int] | type[float]) -> Parser:
    def parse(raw: str, env_name: str) -> Any:
        try:
            return kind(raw)
        except ValueError:
            raise ConfigurationError(
                f"{env_name}={raw!r} is not a number; unset it or give a number"
            ) from None

    return parse


def _flag(raw: str, env_name: str) -> bool:
    value = raw.lower()
    if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ConfigurationError(f"{env_name}={value!r} is not true or false")
    return value in ("1", "true", "yes", "on")


def _path(raw: str, env_name: str) -> Path:
    return Path(raw)


def _names(raw: str, env_name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _host(value: str) -> str:
    """A listening address: an IP address (``0.0.0.0``, ``::``) or a host name."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", value):
            return "is not an IP address or a host name"
    return ""


def is_loopback(host: str) -> bool:
    """Whether a listening address reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\*$")


def _origins(values: tuple[str, ...]) -> str:
    wrong = [v for v in values if not _ORIGIN_RE.fullmatch(v)]
    if wrong:
        return (
            f"has {', '.join(map(repr, wrong))}: an origin is scheme://host[:port] "
            "(no path, no trailing slash), or *"
        )
    return ""


def _matches(pattern: re.Pattern[str], rule: str) -> Check:
    return lambda value: "" if pattern.fullmatch(value) else rule


def _at_least(low: float) -> Check:
    return lambda value: "" if value >= low else f"must be at least {low}"


def _one_of(choices: tuple[str, ...]) -> Check:
    return lambda value: "" if value in choices else f"must be one of {', '.join(choices)}"


_TOPIC_RULE = "is not a valid Kafka topic name: use letters, digits, '.', '_' and '-'"


def setting(
    default: Any,
    parse: Parser = _text,
    check: Check | None = None,
    *,
    env: str | None = None,
    secret: bool = False,
) -> Any:
    """A field of :class:`Settings`: its default, how its variable is parsed, what it must
    satisfy, and the variable's name when it is not the field's name in capitals."""
    meta = {"parse": parse, "check": check, "env": env, "secret": secret}
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the engine can be configured with; every value has a working default."""

    kafka_bootstrap: str = setting("localhost:9092")
    redis_url: str = setting(
        "redis://localhost:6379/0",
        check=lambda v: (
            ""
            if v.startswith(("redis://", "rediss://", "unix://"))
            else "must start with redis://, rediss:// or unix://"
        ),
    )
    key_prefix: str = setting(
        "pe",
        check=_matches(
            _PREFIX_RE,
            "is not allowed: use 1 to 64 of letters, digits and _ . : - (no braces, they "
            "would break the hash tag)",
        ),
    )
    attempts_topic: str = setting("attempts", check=_matches(_TOPIC_RE, _TOPIC_RULE))
    stats_topic: str = setting("stats-updated", check=_matches(_TOPIC_RE, _TOPIC_RULE))
    dlq_topic: str = setting("attempts.dlq", check=_matches(_TOPIC_RE, _TOPIC_RULE))
    #: A TOML file whose ``[xapi]`` section maps xAPI statements to attempts
    #: (performance_engine/xapi.py); the defaults when unset.
    xapi_mapping_path: Path | None = setting(None, _path, env="XAPI_MAPPING")
    #: A topic of xAPI statements the worker reads beside the attempts (none when unset).
    xapi_topic: str | None = setting(None, check=_matches(_TOPIC_RE, _TOPIC_RULE))
    #: Days the xAPI ingest remembers a statement it took, counted from its first receipt
    #: (its digest for conflicts, its scope for a later void); 0: for good.
    xapi_statement_days: int = setting(365, _number(int), _at_least(0))
    #: The erasure records (compacted; see performance_engine/erasure.py).
    erasures_topic: str = setting("learner-erasures", check=_matches(_TOPIC_RE, _TOPIC_RULE))
    app_id: str = setting("performance-engine")
    learning_modes_path: Path | None = setting(None, _path, env="LEARNING_MODES")
    #: A fitted parameter file (``perf-engine fit``); a set published to Redis wins.
    learning_params_path: Path | None = setting(None, _path, env="LEARNING_PARAMS")
    #: The address the worker's web server listens on: loopback unless asked, since it
    #: serves learners' stats (a container sets 0.0.0.0 to publish the port).
    web_host: str = setting("127.0.0.1", check=_host)
    web_port: int = setting(
        6066, _number(int), lambda v: "" if 0 < v < 65536 else "is not a TCP port"
    )
    #: Custom metrics to register, as ``package.module:ClassName`` import paths.
    metrics: tuple[str, ...] = setting((), _names)
    #: Run against a Redis whose maxmemory-policy may evict keys (state could be lost).
    allow_eviction: bool = setting(False, _flag)
    #: Partitions (and replication factor) of the topics the worker creates when missing.
    partitions: int = setting(8, _number(int), _at_least(1))
    replication: int = setting(1, _number(int), _at_least(1))
    #: Most records one batch of the worker holds (one Redis round trip, one commit).
    batch_size: int = setting(5000, _number(int), _at_least(1))
    #: Seconds the group waits for a silent worker before giving its partitions away.
    session_timeout: float = setting(
        10.0, _number(float), lambda v: "" if v > 0 else "must be positive"
    )
    #: Longest the broker may hold a fetch waiting for records (lower: less latency).
    fetch_max_wait_ms: int = setting(10, _number(int), _at_least(1))
    #: Scope states the worker keeps in memory (least recently used go first).
    cache_size: int = setting(10_000, _number(int), _at_least(0))
    #: Faust's data directory (the engine keeps no local state; Faust wants one).
    data_dir: Path = setting(Path("/tmp/performance-engine"), _path)
    #: Talk to a Redis Cluster (REDIS_URL names any one of its nodes).
    redis_cluster: bool = setting(False, _flag)
    #: TLS to Redis (with a rediss:// URL): CA bundle, and a client certificate and key.
    redis_tls_ca_file: Path | None = setting(None, _path)
    redis_tls_cert_file: Path | None = setting(None, _path)
    redis_tls_key_file: Path | None = setting(None, _path)
    #: Kafka security: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    kafka_security_protocol: str = setting("PLAINTEXT", _upper, _one_of(KAFKA_SECURITY_PROTOCOLS))
    #: SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and credentials.
    kafka_sasl_mechanism: str = setting("PLAIN", _upper)
    kafka_sasl_username: str | None = setting(None)
    kafka_sasl_password: str | None = setting(None, secret=True)
    #: TLS to Kafka: CA bundle, and a client certificate and key.
    kafka_ssl_ca_file: Path | None = setting(None, _path)
    kafka_ssl_cert_file: Path | None = setting(None, _path)
    kafka_ssl_key_file: Path | None = setting(None, _path)
    #: The platform's database holding the outbox (an SQLAlchemy URL), for the relay.
    outbox_url: str | None = setting(None, secret=True)
    #: Redis Sentinel: its addresses (``host:port,host:port``) and the master's name; the
    #: clients ask the Sentinels for the master (REDIS_URL then gives only the database,
    #: the password and TLS) and follow a failover.
    redis_sentinels: tuple[str, ...] = setting((), _names)
    redis_sentinel_master: str = setting("mymaster")
    #: Wait for this many replicas to acknowledge a batch's writes (Redis WAIT) before its
    #: offsets are committed; 0: don't wait.
    redis_wait_replicas: int = setting(0, _number(int), _at_least(0))
    redis_wait_timeout_ms: int = setting(1000, _number(int), _at_least(1))
    #: Seconds between the worker's checks that Redis still holds the state it wrote.
    state_check_seconds: float = setting(
        10.0, _number(float), lambda v: "" if v > 0 else "must be positive"
    )
    #: Serve the web dashboard (``/dashboard``) and follow the stats topic for it.
    dashboard: bool = setting(True, _flag)
    #: Resume even though Redis lost state that the attempts topic no longer holds (after
    #: the platform's history has been backfilled).
    accept_state_gap: bool = setting(False, _flag)
    #: The HTTP tokens (``perf-engine token add``): with it every request but ``/health``
    #: needs a token of the right scope (see worker/auth.py).
    web_tokens_file: Path | None = setting(None, _path)
    #: Serve HTTP beyond loopback without tokens (the worker refuses to otherwise).
    insecure_open_http: bool = setting(False, _flag)
    #: Browser origins (``https://school.example:8443``) whose pages may read the HTTP API
    #: (CORS); ``*`` for any; none by default.
    cors_origins: tuple[str, ...] = setting((), _names, _origins)

    def __post_init__(self) -> None:
        for f in fields(self):
            check = f.metadata["check"]
            value = getattr(self, f.name)
            problem = check(value) if check is not None and value is not None else ""
            if problem:
                shown = value if isinstance(value, (int, float)) else repr(value)
                raise ConfigurationError(f"{ENV_NAMES[f.name]}={shown} {problem}")
        self._check_together()

    def _check_together(self) -> None:
        """The rules that tie settings to each other."""
        p = ENV_PREFIX
        tls_files = (self.redis_tls_ca_file, self.redis_tls_cert_file, self.redis_tls_key_file)
        if any(tls_files) and not self.redis_url.startswith("rediss://"):
            raise ConfigurationError(
                f"{p}REDIS_TLS_* files are set but {p}REDIS_URL does not start with "
                "rediss://; use rediss:// for TLS"
            )
        for address in self.redis_sentinels:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigurationError(
                    f"{p}REDIS_SENTINELS has {address!r}; give host:port pairs, comma-separated"
                )
        for cert, key in (
            ("redis_tls_cert_file", "redis_tls_key_file"),
            ("kafka_ssl_cert_file", "kafka_ssl_key_file"),
        ):
            if (getattr(self, cert) is None) != (getattr(self, key) is None):
                raise ConfigurationError(f"{ENV_NAMES[cert]} and {ENV_NAMES[key]} go together")
        if self.kafka_security_protocol.startswith("SASL_"):
            problem = _one_of(KAFKA_SASL_MECHANISMS)(self.kafka_sasl_mechanism)
            if problem:
                raise ConfigurationError(
                    f"{p}KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r} {problem}"
                )
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ConfigurationError(
                    f"{p}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    f"{p}KAFKA_SASL_USERNAME and {p}KAFKA_SASL_PASSWORD"
                )

    @property
    def heartbeat_seconds(self) -> float:
        """How often a consumer of the worker tells its group it is alive: a third of
        ``session_timeout``, at most 3 s."""
        return min(3.0, self.session_timeout / 3)

    @property
    def xapi_statement_seconds(self) -> int:
        """``xapi_statement_days`` in seconds (0: for good)."""
        return self.xapi_statement_days * 86_400

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")


#: The environment variable of each setting.
ENV_NAMES: dict[str, str] = {
    f.name: ENV_PREFIX + (f.metadata["env"] or f.name.upper()) for f in fields(Settings)
}


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``PERF_ENGINE_*`` variables that :func:`load_settings` reads back as ``settings``
    (for starting another process with the same settings)."""
    env: dict[str, str] = {}
    for attr, name in ENV_NAMES.items():
        value = getattr(settings, attr)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = ",".join(value)
        else:
            text = str(value)
        env[name] = text
    return env


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from the ``PERF_ENGINE_*`` variables (``os.environ`` by
    default); a variable that is unset or blank keeps the setting's default."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = ENV_NAMES[f.name]
        raw = env.get(name, "")
        text = raw if f.metadata["secret"] else raw.strip()  # a password is taken as given
        if text:
            values[f.name] = f.metadata["parse"](text, name)
    return Settings(**values)


def load_learning_modes(path: Path | None) -> LearningModes:
    """The learning-mode rules: the built-in ones, merged with the TOML file at ``path``
    (``PERF_ENGINE_LEARNING_MODES``) when one is given; every value checked on load."""
    from performance_engine.metrics.modes import LearningModes

    if path is None:
        return LearningModes.default()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"learning-mode file {path} does not exist; fix PERF_ENGINE_LEARNING_MODES"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"learning-mode file {path} cannot be read: {exc}") from exc
    return LearningModes.default().merged(document, source=str(path))


def load_parameter_file(path: Path | None) -> ParameterSet | None:
    """The fitted parameter set at ``path`` (``PERF_ENGINE_LEARNING_PARAMS``, or a
    command's ``--params``), validated; None without a path. A bad file is refused with
    one line naming the group and the parameter."""
    import json

    from performance_engine.metrics.params import ParameterSet

    if path is None:
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"parameter file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"parameter file {path} cannot be read: {exc}") from None
    return ParameterSet.from_dict(document, f"parameter file {path}")
