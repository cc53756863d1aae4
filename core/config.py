"""Configuration from the environment (pydantic-settings), with embedded defaults that need
nothing installed. Each setting's environment variable is in its field: `JOURNEYS_` and the field
name unless a provider's own name is used (`DATABASE_URL`, `TWILIO_*`, `SENDGRID_*`).

The Temporal connection is not here: it follows the SDK's environment configuration
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS_CLIENT_CERT_PATH`,
profiles in a TOML file; see core.temporal). Only two programmatic overrides live here, for
`journeys up` and tests, and last release's `TEMPORAL_TLS_CERT`/`KEY`/`CA`, kept for one release.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from core.records import DEFAULT_TIMEZONE, known_timezone


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOURNEYS_", populate_by_name=True, extra="ignore")

    database_url: str = Field("sqlite:///.data/journeys.db", validation_alias="DATABASE_URL")

    # Temporal: overrides of the SDK's environment configuration (core.temporal), not read from env.
    temporal_address: str | None = None
    temporal_namespace: str | None = None
    # Deprecated names of the SDK's TEMPORAL_TLS_CLIENT_CERT_PATH, ..._KEY_PATH, TEMPORAL_TLS_SERVER_CA_CERT_PATH.
    temporal_tls_cert: Path | None = Field(None, validation_alias="TEMPORAL_TLS_CERT")
    temporal_tls_key: Path | None = Field(None, validation_alias="TEMPORAL_TLS_KEY")
    temporal_tls_ca: Path | None = Field(None, validation_alias="TEMPORAL_TLS_CA")
    task_queue: str = "journeys"
    #: Payload encryption (core.encryption): `key-id=base64-key` pairs, the first current. Unset:
    #: the keys in `encryption_key_file` if it exists (`journeys up` writes one), else none.
    encryption_keys: str | None = None
    encryption_key_file: Path = Path(".data/encryption.keys")
    temporal_ui_url: str = Field("http://127.0.0.1:8233", validation_alias="JOURNEYS_TEMPORAL_UI")

    shop_name: str = "Journeys"
    default_region: str = "CN"
    #: The shop's own time zone: the effect report's days.
    shop_timezone: str = DEFAULT_TIMEZONE
    #: What one SMS segment and one email cost, in `currency`: the effect report's cost and ROI.
    sms_price: float = Field(0.05, ge=0)
    email_price: float = Field(0.001, ge=0)
    currency: str = "CNY"
    #: Marketing SMS opt-out text per locale: `zh-CN=回T退订;en=Text STOP to opt out`.
    sms_opt_out: Annotated[dict[str, str], NoDecode] = {}
    definitions_dir: Path | None = Field(None, validation_alias="JOURNEYS_DEFINITIONS")
    outbox_path: Path | None = Field(Path(".data/outbox.jsonl"), validation_alias="JOURNEYS_OUTBOX")

    #: Keys the event API takes (comma-separated); none: the API listens on loopback only.
    api_keys: Annotated[list[str], NoDecode] = []
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_max_body_bytes: int = 1_048_576
    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    public_url: str | None = None
    secret: str | None = None

    twilio_account_sid: str | None = Field(None, validation_alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: str | None = Field(None, validation_alias="TWILIO_AUTH_TOKEN")
    twilio_messaging_service_sid: str | None = Field(None, validation_alias="TWILIO_MESSAGING_SERVICE_SID")
    twilio_from: str | None = Field(None, validation_alias="TWILIO_FROM")
    twilio_api_base_url: str | None = Field(None, validation_alias="TWILIO_API_BASE_URL")
    twilio_timeout: float = Field(10.0, gt=0, validation_alias="TWILIO_TIMEOUT")
    sendgrid_api_key: str | None = Field(None, validation_alias="SENDGRID_API_KEY")
    sendgrid_from: str | None = Field(None, validation_alias="SENDGRID_FROM")
    sendgrid_unsubscribe_group_id: int | None = Field(None, validation_alias="SENDGRID_UNSUBSCRIBE_GROUP_ID")
    sendgrid_api_host: str = Field("https://api.sendgrid.com", validation_alias="SENDGRID_API_HOST")
    sendgrid_webhook_public_key: str | None = Field(None, validation_alias="SENDGRID_WEBHOOK_PUBLIC_KEY")
    #: Seconds to wait for SendGrid's answer; a send that gets none is in doubt.
    sendgrid_timeout: float = Field(10.0, gt=0, validation_alias="SENDGRID_TIMEOUT")
    #: How long a send in doubt waits for SendGrid's signed `processed` event before it is taken
    #: as not received and sent again (with the event webhook configured).
    sendgrid_reconcile_seconds: float = Field(900.0, ge=0)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    #: Days personal data is kept: older message bodies, addresses and template data, provider
    #: webhook events and the data of customer.* events are removed daily (a Temporal schedule),
    #: and the namespace's history retention is kept within it where the server allows. 0: off.
    retention_days: int = Field(180, ge=0)

    #: Sends a second per channel (`sms=10,email=100`; 0 = unlimited), kept by the Temporal server
    #: on each channel's task queue across all workers.
    rate_limits: Annotated[dict[str, float], NoDecode] = {"sms": 10, "email": 100, "webhook": 50}
    # Worker sizing, for a 2-core machine: more workflow tasks at once than cores only make each
    # one slower (they share the GIL) and nearer Temporal's 2 s deadlock detector.
    worker_workflow_tasks: int = Field(default=4, ge=1)
    worker_activities: int = Field(default=16, ge=1)
    worker_cached_workflows: int = Field(default=500, ge=0)
    worker_shutdown_seconds: float = Field(default=30, ge=0)

    @field_validator("shop_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not known_timezone(value):
            raise ValueError(f"{value!r} is not an IANA time zone such as Asia/Shanghai")
        return value

    @field_validator("sms_opt_out", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        return _pairs(value, ";")  # the texts may hold commas

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _limits(cls, value: Any) -> Any:
        return _pairs(value, ",")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return [key.strip() for key in value.split(",") if key.strip()] if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The settings in `environ` (the process's environment by default), then `overrides`;
        empty values count as unset."""
        token = _ENVIRON.set(None if environ is None else dict(environ))
        try:
            return cls(**overrides)
        finally:
            _ENVIRON.reset(token)

    def public_endpoint(self, path: str) -> str | None:
        """The URL providers call for `path` (`/webhooks/twilio/status`), or None without JOURNEYS_PUBLIC_URL."""
        return f"{self.public_url.rstrip('/')}{path}" if self.public_url else None

    @classmethod
    def embedded(cls, **overrides: Any) -> Settings:
        """The embedded defaults with `overrides`, ignoring the environment (simulations)."""
        return cls.from_env({}, **overrides)

    @classmethod
    def environment_names(cls) -> dict[str, str]:
        """Each environment variable the settings read, and its field."""
        prefix = cls.model_config.get("env_prefix", "")
        return {
            (info.validation_alias if isinstance(info.validation_alias, str) else f"{prefix}{name}".upper()): name
            for name, info in cls.model_fields.items()
            if name not in _NOT_FROM_ENV
        }

    @classmethod
    def default(cls, field: str) -> Any:
        """A setting's embedded default, whatever the environment says."""
        return cls.model_fields[field].default


def _pairs(value: Any, separator: str) -> Any:
    """`a=1<separator>b=2` as {"a": "1", "b": "2"} (pydantic converts the values)."""
    if not isinstance(value, str):
        return value
    pairs = (item.partition("=") for item in value.split(separator) if "=" in item)
    return {key.strip(): item.strip() for key, _, item in pairs}


#: Fields code may set but the environment may not.
_NOT_FROM_ENV = {"temporal_address", "temporal_namespace"}


#: The environment `Settings.from_env` reads instead of the process's.
_ENVIRON: ContextVar[dict[str, str] | None] = ContextVar("journeys_settings_environ", default=None)


class _Environment(EnvSettingsSource):
    """The environment (or `from_env`'s mapping), without empty values and the code-only fields."""

    def __init__(self, settings_cls: type[BaseSettings]):
        self._given = _ENVIRON.get()
        super().__init__(settings_cls, env_ignore_empty=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self._given is None:
            return super()._load_env_vars()
        return parse_env_vars(self._given, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        return {key: value for key, value in values.items() if key not in _NOT_FROM_ENV}
