"""Configuration from the environment (pydantic-settings), with embedded defaults that need
nothing installed. Each setting's environment variable is in its field: `JOURNEYS_` and the field
name unless a provider's own name is used (`DATABASE_URL`, `TWILIO_*`, `SENDGRID_*`).

The Temporal connection is not here: it follows the SDK's environment configuration
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS_CLIENT_CERT_PATH`,
profiles in a TOML file; see core.temporal). Only two programmatic overrides live here, for
`journeys up` and tests, and last release's `TEMPORAL_TLS_CERT`/`KEY`/`CA`, kept for one release.

Where a setting comes from, first match wins (the one place this is decided):
1. what the code passes (`Settings(temporal_address=...)`, `journeys up`'s ports);
2. the environment (`DATABASE_URL`, `JOURNEYS_*`, ...);
3. the record `journeys up` writes in its data directory (`DATA_DIR/journeys.env`: the store, the
   Temporal address unless `TEMPORAL_ADDRESS` is set, the UI and API URLs, the outbox, the key
   file, the definitions); the data directory is `--data-dir`, else `JOURNEYS_DATA_DIR`, else `.data`;
4. the data directory's own files (`journeys.db`, `encryption.keys`, `outbox.jsonl`);
5. the embedded defaults below.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from dotenv import dotenv_values
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from core.records import DEFAULT_TIMEZONE, known_timezone


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOURNEYS_", populate_by_name=True, extra="ignore")

    #: Where `journeys up` keeps its files and its record (`journeys.env`); the other commands
    #: read that record, so they find the store, Temporal, the key and the outbox it used.
    data_dir: Path = Path(".data")
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
    #: Whether the author of a change of definitions may approve (publish) it themselves
    #: (docs/publishing.md); by default another person with the `publish` role must.
    publish_own_changes: bool = False
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
    # Aliyun SMS (Dysmsapi), for mainland numbers; the access key under the SDK's own names.
    aliyun_access_key_id: str | None = Field(None, validation_alias="ALIBABA_CLOUD_ACCESS_KEY_ID")
    aliyun_access_key_secret: str | None = Field(None, validation_alias="ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    aliyun_sms_region: str = Field("cn-hangzhou", validation_alias="ALIYUN_SMS_REGION")
    #: Aliyun's API host (a local fake or a proxy in tests), and the scheme it is reached by.
    aliyun_sms_endpoint: str = Field("dysmsapi.aliyuncs.com", validation_alias="ALIYUN_SMS_ENDPOINT")
    aliyun_sms_protocol: str = Field("https", pattern="^https?$", validation_alias="ALIYUN_SMS_PROTOCOL")
    aliyun_sms_timeout: float = Field(10.0, gt=0, validation_alias="ALIYUN_SMS_TIMEOUT")
    #: The secret in the URLs Aliyun's HTTP push posts receipts (SmsReport) and replies (SmsUp) to:
    #: `/webhooks/aliyun/{token}/report` and `.../up`. Aliyun signs no push; without it they are refused.
    aliyun_sms_push_token: str | None = Field(None, validation_alias="ALIYUN_SMS_PUSH_TOKEN")
    #: How long a send waits for others with its template code and signature to go out with it in
    #: one SendBatchSms (up to 100 numbers); 0: every message alone (SendSms). A batch holds at most
    #: the sends a worker runs at once: 0.05 s costs a 16-slot worker no throughput and saves 16x
    #: the requests (bench/sms_batches.py); longer windows only add latency below 100 callers.
    aliyun_sms_batch_seconds: float = Field(0.05, ge=0, le=5)
    #: After a lost answer, how long a lookup (QuerySendDetails) that does not find the send waits
    #: before it is sent again: Aliyun lists a send a little after taking it.
    aliyun_sms_lookup_seconds: float = Field(60.0, ge=0)
    #: Where short links (`{{ link(url) }}`) point: `{link_base}/l/{code}`; unset, JOURNEYS_PUBLIC_URL.
    link_base: str | None = None
    #: Days personal data is kept: older message bodies, addresses and template data, provider
    #: webhook events and the data of customer.* events are removed daily (a Temporal schedule),
    #: and the namespace's history retention is kept within it where the server allows. 0: off.
    retention_days: int = Field(180, ge=0)
    #: Repeat pairs (a customer's two purchases of a SKU) a SKU's cycle learned from the order
    #: history needs before replenish_at uses it (core/products.py); recomputed daily.
    repurchase_min_pairs: int = Field(5, ge=1)

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
        environment = _Environment(settings_cls)
        return init_settings, environment, _Record(settings_cls, init_settings, environment)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, _record: bool = True, **overrides: Any) -> Settings:
        """The settings in `environ` (the process's environment by default), then `overrides`;
        empty values count as unset."""
        token = _ENVIRON.set(None if environ is None else dict(environ))
        recorded = _READ_RECORD.set(_record)
        try:
            return cls(**overrides)
        finally:
            _READ_RECORD.reset(recorded)
            _ENVIRON.reset(token)

    @property
    def aliyun_sms(self) -> bool:
        """Whether Aliyun SMS is configured (its access key pair)."""
        return bool(self.aliyun_access_key_id and self.aliyun_access_key_secret)

    def short_link_base(self) -> str | None:
        """The base of short links (`{base}/l/{code}`), or None: then `link()` keeps the long URL."""
        base = self.link_base or self.public_url
        return base.rstrip("/") if base else None

    def public_endpoint(self, path: str) -> str | None:
        """The URL providers call for `path` (`/webhooks/twilio/status`), or None without JOURNEYS_PUBLIC_URL."""
        return f"{self.public_url.rstrip('/')}{path}" if self.public_url else None

    @classmethod
    def embedded(cls, **overrides: Any) -> Settings:
        """The embedded defaults with `overrides`, ignoring the environment and any record (simulations)."""
        return cls.from_env({}, _record=False, **overrides)

    @classmethod
    def unrecorded(cls, **overrides: Any) -> Settings:
        """The environment and `overrides`, not the data directory's record: what `journeys up`
        starts from (it writes the record; last run's must not decide this run's)."""
        return cls.from_env(None, _record=False, **overrides)

    @property
    def record_file(self) -> Path:
        """The record `journeys up` writes: `DATA_DIR/journeys.env`."""
        return self.data_dir / RECORD_FILE

    def write_record(self) -> Path:
        """Record where this engine runs in `record_file` (owner-only: a DATABASE_URL may hold a
        password), absolute paths so it holds from any directory. The key itself is not in it."""
        key_file = None if self.encryption_keys else self.encryption_key_file.resolve()
        lines = {
            "DATABASE_URL": _absolute_sqlite(self.database_url),
            "TEMPORAL_ADDRESS": self.temporal_address,
            "JOURNEYS_TEMPORAL_UI": self.temporal_ui_url,
            "JOURNEYS_API_URL": self.api_url,
            "JOURNEYS_OUTBOX": str(self.outbox_path.resolve()) if self.outbox_path else None,
            "JOURNEYS_ENCRYPTION_KEY_FILE": str(key_file) if key_file else None,
            "JOURNEYS_DEFINITIONS": str(self.definitions_dir.resolve()) if self.definitions_dir else None,
        }
        path = self.record_file
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write("# Written by `journeys up`: where it runs. Every journeys command given this data directory\n")
            out.write("# (--data-dir or JOURNEYS_DATA_DIR) reads it; the environment overrides each line.\n")
            for name, value in lines.items():
                if value:
                    out.write(f"{name}={json.dumps(value, ensure_ascii=False)}\n")
        return path

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of a setting (`database_url` -> `DATABASE_URL`)."""
        return {name: variable for variable, name in cls.environment_names().items()}[field]

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


#: The record `journeys up` writes in its data directory.
RECORD_FILE = "journeys.env"


def _absolute_sqlite(url: str) -> str:
    """A relative SQLite file URL made absolute (the record is read from other directories)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix) :] in ("", ":memory:") or url[len(prefix) :].startswith("/"):
        return url
    return prefix + str(Path(url[len(prefix) :]).resolve())


#: Fields code may set but the environment may not.
_NOT_FROM_ENV = {"temporal_address", "temporal_namespace"}


#: Whether the data directory's record is read (not by `embedded` and `unrecorded`).
_READ_RECORD: ContextVar[bool] = ContextVar("journeys_settings_record", default=True)

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


def _key(field: str) -> str:
    """The key a source gives a field's value under: its alias if it has one, else its name."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else field


class _Record(PydanticBaseSettingsSource):
    """Steps 3 and 4 of the module's precedence: the data directory's record, then its files."""

    def __init__(self, settings_cls: type[BaseSettings], init: PydanticBaseSettingsSource, environment: _Environment):
        super().__init__(settings_cls)
        self._init, self._environment = init, environment

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False  # __call__ gives every value

    def __call__(self) -> dict[str, Any]:
        given = getattr(self._init, "init_kwargs", {})
        data_dir = Path(given.get("data_dir") or self._environment().get("data_dir") or Settings.default("data_dir"))
        values: dict[str, Any] = {
            _key("database_url"): f"sqlite:///{data_dir / 'journeys.db'}",
            _key("encryption_key_file"): data_dir / "encryption.keys",
            _key("outbox_path"): data_dir / "outbox.jsonl",
        }
        record = data_dir / RECORD_FILE
        if not _READ_RECORD.get() or not record.is_file():
            return values
        names = Settings.environment_names()
        environ = _ENVIRON.get()
        for variable, value in dotenv_values(record).items():
            if not value:
                continue
            if variable == "TEMPORAL_ADDRESS":  # the SDK's variable: the environment's wins
                if not (os.environ if environ is None else environ).get("TEMPORAL_ADDRESS"):
                    values["temporal_address"] = value
            elif variable in names:
                values[_key(names[variable])] = value
        return values
