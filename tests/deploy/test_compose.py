"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine here)."""

from __future__ import annotations

from typing import Any

import yaml

from performance_engine.settings import ENV_NAMES, Settings, load_settings
from performance_engine.topics import ERASURES_CONFIG, new_topic
from tests.helpers import ROOT


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_env_names_cover_every_setting() -> None:
    assert set(ENV_NAMES) == set(Settings.__dataclass_fields__)


def test_services_images_and_kraft() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "redis", "topics", "worker"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["topics"]["image"] == services["kafka"]["image"]
    kafka_env = services["kafka"]["environment"]
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(kafka_env)
    assert services["redis"]["image"].startswith("redis:")
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_every_port_is_published_on_loopback_only() -> None:
    """Redis has no password in the compose file: nothing may reach it from outside."""
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_the_container_listens_on_its_interfaces_and_the_host_publishes_on_loopback() -> None:
    worker = compose()["services"]["worker"]
    assert worker["environment"]["PERF_ENGINE_WEB_HOST"] == "0.0.0.0"
    # open without tokens only because the port is published on the host's loopback
    assert worker["environment"]["PERF_ENGINE_INSECURE_OPEN_HTTP"] == "true"
    assert worker["ports"] == ["127.0.0.1:6066:6066"]
    assert "PERF_ENGINE_WEB_HOST=0.0.0.0" in (ROOT / "Dockerfile").read_text()


def test_health_checks_and_start_order() -> None:
    services = compose()["services"]
    for name in ("kafka", "redis", "worker"):
        assert services[name]["healthcheck"]["test"], name
    depends = services["worker"]["depends_on"]
    assert depends == {
        "kafka": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "topics": {"condition": "service_completed_successfully"},
    }
    assert services["topics"]["restart"] == "no"


def test_worker_env_matches_the_settings() -> None:
    worker = compose()["services"]["worker"]
    env = {k: str(v) for k, v in worker["environment"].items()}
    assert set(env) <= set(ENV_NAMES.values())
    settings = load_settings(env)  # every value parses
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.redis_url == "redis://redis:6379/0"
    assert worker["ports"] == [f"127.0.0.1:{settings.web_port}:{settings.web_port}"]
    assert f":{settings.web_port}/health" in " ".join(worker["healthcheck"]["test"])
    topics_command = " ".join(compose()["services"]["topics"]["command"])
    for topic in (settings.attempts_topic, settings.stats_topic, settings.dlq_topic):
        assert topic in topics_command
    assert f"--partitions {settings.partitions}" in topics_command


def test_dockerfile_builds_the_worker() -> None:
    assert compose()["services"]["worker"]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = [
        line.split()[0] for line in dockerfile.splitlines() if line and not line.startswith("#")
    ]
    assert lines[0] == "FROM"
    assert "COPY performance_engine ./performance_engine" in dockerfile
    assert 'CMD ["perf-engine", "worker"]' in dockerfile
    assert "pip install '.[worker]'" in dockerfile  # the plain install is the platform's client
    assert "USER engine" in dockerfile
    for kernels in ("metrics", "store"):  # compiled in the image
        assert f"python -m performance_engine.{kernels}.kernels" in dockerfile
    assert "EXPOSE 6066" in dockerfile


def created_topics() -> dict[str, dict[str, str]]:
    """The topics the compose file's one-shot job creates, with their ``--config``s (and
    ``partitions``)."""
    command = " ".join(compose()["services"]["topics"]["command"])
    topics: dict[str, dict[str, str]] = {}
    for part in command.split("create --topic ")[1:]:
        words = part.replace("&&", " ").split()
        configs = {"partitions": words[words.index("--partitions") + 1]}
        for i, word in enumerate(words):
            if word == "--config":
                key, _, value = words[i + 1].partition("=")
                configs[key] = value
        topics[words[0]] = configs
    return topics


def test_the_topics_forget_within_the_documented_time() -> None:
    """Every topic the compose file creates has its settings in the retention table of
    docs/learner-data.md, the stated time to forget is the attempts' retention plus the
    stats topic's compaction, and the erasures topic is made as the engine makes it."""
    settings = load_settings({})
    topics = created_topics()
    assert set(topics) == {
        settings.attempts_topic,
        settings.stats_topic,
        settings.dlq_topic,
        settings.erasures_topic,
    }
    docs = (ROOT / "docs" / "learner-data.md").read_text()
    for topic, configs in topics.items():
        row = next(line for line in docs.splitlines() if line.startswith(f"| `{topic}` |"))
        for key, value in configs.items():
            if key != "partitions":
                assert f"{key}={value}" in row, (topic, key)
    day = 86_400_000
    attempts = int(topics[settings.attempts_topic]["retention.ms"])
    assert int(topics[settings.dlq_topic]["retention.ms"]) <= attempts
    stats = topics[settings.stats_topic]
    assert stats["cleanup.policy"] == "compact"
    lag = int(stats["max.compaction.lag.ms"]) + int(stats["delete.retention.ms"])
    assert f"from the stats topic within {lag // day} days" in docs
    assert f"from the broker entirely\nwithin {attempts // day} days" in docs
    erasures = topics[settings.erasures_topic]
    assert erasures == {"partitions": "1", **ERASURES_CONFIG}
    made = new_topic(settings, settings.erasures_topic)
    assert made.topic_configs == ERASURES_CONFIG
    assert made.num_partitions == 1
