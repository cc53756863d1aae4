"""Erasing a customer on request (PIPL, GDPR): stop their journeys, then remove their personal
data from the store. Used by `DELETE /customers/{id}` and `journeys customer erase ID`.

A customer the store has never heard of is not erased (NoSuchCustomer): no erasure is recorded.
Running instances are terminated first, with reason `erased`, so nothing more is sent (a message
still in flight is closed `failed`, reason `erased`); only then is the store scrubbed
(store.queries.erase_customer), and the erasure recorded: who, when, and what was removed. On
SQLite the write-ahead log is then checkpointed and truncated (deleted bytes are zeroed:
store.db, secure_delete), and the local outbox file loses the customer's lines
(core.outbox.forget_customer).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.outbox import forget_customer
from store import queries
from store.db import Store
from views.history import check_id, executions

REASON = "erased"


class NoSuchCustomer(LookupError):
    """The store has never heard of the customer (store.queries.known_customer): nothing to erase."""


class Erasure(BaseModel):
    customer_id: str
    erased_at: datetime
    requested_by: str
    terminated: list[str] = Field(description="Workflow ids of the journey instances stopped.")
    removed: dict[str, int] = Field(description="What the store no longer holds, as counts.")
    outbox_lines_removed: int = Field(0, description="Lines of the local outbox file (JOURNEYS_OUTBOX) removed.")


async def erase(
    client: Client,
    store: Store,
    customer_id: str,
    requested_by: str,
    *,
    default_region: str,
    outbox: Path | None = None,
) -> Erasure:
    key, value = check_id(customer_id=customer_id)
    if not await store.run(lambda session: queries.known_customer(session, customer_id)):
        raise NoSuchCustomer(f"no customer {customer_id!r}: nothing was erased")
    query = f"{key} = '{value}' AND ExecutionStatus = 'Running'"
    terminated = []
    async for execution in executions(client, query):
        try:
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(reason=REASON)
            terminated.append(execution.id)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:  # it ended meanwhile: nothing to stop
                raise
    at = datetime.now(UTC)
    removed = await asyncio.to_thread(_scrub, store, customer_id, at, requested_by, default_region)
    lines = await asyncio.to_thread(forget_customer, outbox, customer_id)
    return Erasure(
        customer_id=customer_id,
        erased_at=at,
        requested_by=requested_by,
        terminated=terminated,
        removed=removed,
        outbox_lines_removed=lines,
    )


def _scrub(store: Store, customer_id: str, at: datetime, requested_by: str, default_region: str) -> dict[str, int]:
    """The store's part, then (SQLite) the write-ahead log emptied of the pages it replaced."""
    with store.transaction() as session:
        removed = queries.erase_customer(session, customer_id, at, requested_by, default_region)
    store.checkpoint()
    return removed
