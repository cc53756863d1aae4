"""Configuration: each setting from its environment variable (pydantic-settings), and the Temporal
connection from the SDK's environment configuration, TOML profiles included."""

from __future__ import annotations

import pytest
from temporalio.client import TLSConfig

from core.config import Settings
from core.temporal import connect_config


def test_settings_from_the_environment():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql+psycopg2://db/journeys",
            "JOURNEYS_TASK_QUEUE": "shop-a",
            "JOURNEYS_RATE_LIMITS": "sms=5,email=0",
            "JOURNEYS_API_KEYS": "k1, k2,",
            "JOURNEYS_SMS_OPT_OUT": "zh-CN=回T退订;en=Reply STOP, to opt out",
            "TWILIO_TIMEOUT": "3",
            "JOURNEYS_OUTBOX": "",  # empty: unset
            "JOURNEYS_WORKER_SANDBOX": "false",  # not from the environment: workers are always sandboxed
            "JOURNEYS_TEMPORAL_ADDRESS": "elsewhere:1",  # Temporal's own variables decide, not ours
        }
    )
    assert settings.database_url == "postgresql+psycopg2://db/journeys"
    assert (settings.task_queue, settings.rate_limits) == ("shop-a", {"sms": 5.0, "email": 0.0})
    assert settings.api_keys == ["k1", "k2"]
    assert settings.sms_opt_out == {"zh-CN": "回T退订", "en": "Reply STOP, to opt out"}
    assert settings.twilio_timeout == 3.0
    assert settings.outbox_path == Settings.default("outbox_path")
    assert "worker_sandbox" not in Settings.model_fields and settings.temporal_address is None


def test_a_bad_setting_names_its_variable():
    with pytest.raises(ValueError, match="TWILIO_TIMEOUT"):
        Settings.from_env({"TWILIO_TIMEOUT": "soon"})


def test_temporal_connection_from_the_sdks_environment_configuration(tmp_path):
    assert connect_config(Settings.embedded(), {})["target_host"] == "localhost:7233"
    cloud = connect_config(
        Settings.embedded(),
        {"TEMPORAL_ADDRESS": "ns.a1.tmprl.cloud:7233", "TEMPORAL_NAMESPACE": "ns.a1", "TEMPORAL_API_KEY": "key"},
    )
    assert (cloud["target_host"], cloud["namespace"], cloud["api_key"], cloud["tls"]) == (
        "ns.a1.tmprl.cloud:7233",
        "ns.a1",
        "key",
        True,
    )
    profiles = tmp_path / "temporal.toml"
    profiles.write_text('[profile.staging]\naddress = "staging:7233"\nnamespace = "shop"\n')
    staged = connect_config(Settings.embedded(), {"TEMPORAL_CONFIG_FILE": str(profiles), "TEMPORAL_PROFILE": "staging"})
    assert (staged["target_host"], staged["namespace"]) == ("staging:7233", "shop")
    # `journeys up` and tests point at their own server.
    assert connect_config(Settings.embedded(temporal_address="127.0.0.1:1"), {})["target_host"] == "127.0.0.1:1"


def test_last_releases_tls_variables_still_work_with_a_warning(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    settings = Settings.from_env({"TEMPORAL_TLS_CERT": str(cert), "TEMPORAL_TLS_KEY": str(key)})
    with pytest.warns(DeprecationWarning, match="TEMPORAL_TLS_CLIENT_CERT_PATH"):
        config = connect_config(settings, {"TEMPORAL_ADDRESS": "cluster:7233"})
    assert config["tls"] == TLSConfig(client_cert=b"CERT", client_private_key=b"KEY")
