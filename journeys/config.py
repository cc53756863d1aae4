"""Configuration from the environment, with embedded defaults that need nothing installed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from triggers.webhooks import WebhookConfig


class Settings(BaseModel):
    database_url: str = "sqlite:///.data/journeys.db"
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_api_key: str | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    task_queue: str = "journeys"
    shop_name: str = "Journeys"
    default_region: str = "CN"
    sms_opt_out: dict[str, str] = {}
    definitions_dir: Path | None = None
    outbox_path: Path | None = Path(".data/outbox.jsonl")
    api_keys: list[str] = []
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_max_body_bytes: int = 1_048_576
    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    temporal_ui_url: str = "http://127.0.0.1:8233"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_from: str | None = None
    twilio_api_base_url: str | None = None
    sendgrid_api_key: str | None = None
    sendgrid_from: str | None = None
    sendgrid_unsubscribe_group_id: int | None = None
    sendgrid_api_host: str = "https://api.sendgrid.com"
    sendgrid_webhook_public_key: str | None = None
    public_url: str | None = None
    webhook_url: str | None = None
    secret: str | None = None
    rate_limits: dict[str, float] = {"sms": 10, "email": 100, "webhook": 50}
    # Worker sizing, for a 2-core machine: more workflow tasks at once than cores only make each
    # one slower (they share the GIL) and nearer Temporal's 2 s deadlock detector.
    worker_workflow_tasks: int = Field(default=4, ge=1)
    worker_activities: int = Field(default=16, ge=1)
    worker_cached_workflows: int = Field(default=500, ge=0)
    worker_shutdown_seconds: float = Field(default=30, ge=0)
    #: Workflows in Temporal's sandbox. Only `journeys simulate --no-sandbox` turns it off: a
    #: production worker is always sandboxed, so what the tests check is what runs.
    worker_sandbox: bool = True
    webhook_secret: str | None = None

    def public_endpoint(self, path: str) -> str | None:
        """The URL providers call for `path` (`/webhooks/twilio/status`), or None without JOURNEYS_PUBLIC_URL."""
        return f"{self.public_url.rstrip('/')}{path}" if self.public_url else None

    def webhooks(self) -> WebhookConfig:
        """How the API verifies provider webhooks."""
        return WebhookConfig(
            public_url=self.public_url,
            twilio_auth_token=self.twilio_auth_token,
            sendgrid_public_key=self.sendgrid_webhook_public_key,
            unsubscribe_secret=self.secret,
            max_body_bytes=self.api_max_body_bytes,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        names = {
            "database_url": "DATABASE_URL",
            "temporal_address": "TEMPORAL_ADDRESS",
            "temporal_namespace": "TEMPORAL_NAMESPACE",
            "temporal_api_key": "TEMPORAL_API_KEY",
            "temporal_tls_cert": "TEMPORAL_TLS_CERT",
            "temporal_tls_key": "TEMPORAL_TLS_KEY",
            "temporal_tls_ca": "TEMPORAL_TLS_CA",
            "task_queue": "JOURNEYS_TASK_QUEUE",
            "shop_name": "JOURNEYS_SHOP_NAME",
            "default_region": "JOURNEYS_DEFAULT_REGION",
            "definitions_dir": "JOURNEYS_DEFINITIONS",
            "outbox_path": "JOURNEYS_OUTBOX",
            "api_host": "JOURNEYS_API_HOST",
            "api_port": "JOURNEYS_API_PORT",
            "api_max_body_bytes": "JOURNEYS_API_MAX_BODY_BYTES",
            "api_url": "JOURNEYS_API_URL",
            "api_key": "JOURNEYS_API_KEY",
            "temporal_ui_url": "JOURNEYS_TEMPORAL_UI",
            "twilio_account_sid": "TWILIO_ACCOUNT_SID",
            "twilio_auth_token": "TWILIO_AUTH_TOKEN",
            "twilio_messaging_service_sid": "TWILIO_MESSAGING_SERVICE_SID",
            "twilio_from": "TWILIO_FROM",
            "twilio_api_base_url": "TWILIO_API_BASE_URL",
            "sendgrid_api_key": "SENDGRID_API_KEY",
            "sendgrid_from": "SENDGRID_FROM",
            "sendgrid_unsubscribe_group_id": "SENDGRID_UNSUBSCRIBE_GROUP_ID",
            "sendgrid_api_host": "SENDGRID_API_HOST",
            "sendgrid_webhook_public_key": "SENDGRID_WEBHOOK_PUBLIC_KEY",
            "public_url": "JOURNEYS_PUBLIC_URL",
            "webhook_url": "JOURNEYS_WEBHOOK_URL",
            "secret": "JOURNEYS_SECRET",
            "webhook_secret": "JOURNEYS_WEBHOOK_SECRET",
            "worker_workflow_tasks": "JOURNEYS_WORKER_WORKFLOW_TASKS",
            "worker_activities": "JOURNEYS_WORKER_ACTIVITIES",
            "worker_cached_workflows": "JOURNEYS_WORKER_CACHED_WORKFLOWS",
            "worker_shutdown_seconds": "JOURNEYS_WORKER_SHUTDOWN_SECONDS",
        }
        values: dict = {field: env[var] for field, var in names.items() if env.get(var)}
        if env.get("JOURNEYS_SMS_OPT_OUT"):  # zh-CN=回T退订;en=Text STOP to opt out
            values["sms_opt_out"] = _pairs(env["JOURNEYS_SMS_OPT_OUT"], ";")
        if env.get("JOURNEYS_RATE_LIMITS"):  # sms=10,email=100 (per second; 0 = unlimited)
            values["rate_limits"] = _pairs(env["JOURNEYS_RATE_LIMITS"], ",")
        if env.get("JOURNEYS_API_KEYS"):
            values["api_keys"] = [key.strip() for key in env["JOURNEYS_API_KEYS"].split(",") if key.strip()]
        return cls.model_validate(values)


def _pairs(text: str, separator: str) -> dict[str, str]:
    """`a=1<separator>b=2` as {"a": "1", "b": "2"} (pydantic converts the values)."""
    pairs = (item.partition("=") for item in text.split(separator) if "=" in item)
    return {key.strip(): value.strip() for key, _, value in pairs}
