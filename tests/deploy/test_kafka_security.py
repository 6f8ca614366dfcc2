"""Kafka security settings: SASL and TLS options for every client library the engine uses
(kafka-python for the platform's clients and the commands, Faust/aiokafka for the worker).
These build and check the options; no test here connects through a SASL listener."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from performance_engine.connections import faust_credentials, kafka_python_options
from performance_engine.errors import ConfigurationError
from performance_engine.settings import Settings, load_settings, settings_env


def test_kafka_sasl_ssl_settings_give_every_client_library_its_options(
    certificates: dict[str, Path],
) -> None:
    settings = load_settings(
        {
            "PERF_ENGINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "PERF_ENGINE_KAFKA_SASL_MECHANISM": "scram-sha-512",
            "PERF_ENGINE_KAFKA_SASL_USERNAME": "engine",
            "PERF_ENGINE_KAFKA_SASL_PASSWORD": "pw",
            "PERF_ENGINE_KAFKA_SSL_CA_FILE": str(certificates["ca.crt"]),
        }
    )
    assert "pw" not in repr(settings)  # the password stays out of logs
    assert load_settings(settings_env(settings)) == settings  # survives a subprocess
    options = kafka_python_options(settings)  # the producer, subscriber and commands
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("engine", "pw")
    assert options["ssl_cafile"] == str(certificates["ca.crt"])
    credentials = faust_credentials(settings)  # the worker's Faust app and its producer
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_kafka_security_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="SASL_USERNAME"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ConfigurationError, match="must be one of"):
        Settings(kafka_security_protocol="TLS")
    with pytest.raises(ConfigurationError, match="KAFKA_SASL_MECHANISM"):
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="GSSAPI",
            kafka_sasl_username="u",
            kafka_sasl_password="p",
        )
    assert faust_credentials(Settings()) is None
    assert kafka_python_options(Settings()) == {"security_protocol": "PLAINTEXT"}
