"""Member tiers (VIP体系): a customer's tier with its card and change log (`GET
/customers/{id}/tier`), an operator's override (`POST /customers/{id}/tier`, recorded with the
key's name and the reason given), and the tier report (`GET /tiers/report?month=YYYY-MM`: the
distribution and the month's migration matrix). activities/tiers.py does the work."""

from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from activities import tiers
from activities.engine_events import write_engine_events
from core.access import ApiKey, Permission
from store import queries
from store import tiers as tier_store
from triggers.api.deps import Context, CustomerId, Problem, allowed

router = APIRouter(tags=["tiers"])

_ERRORS = {401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}, 422: {"model": Problem}}


class TierRequest(BaseModel):
    """An operator's override: the tier to hold (null: none) until a date, and why."""

    model_config = ConfigDict(extra="forbid")

    tier: str | None = Field(description="A configured tier's name, or null to remove the customer's tier.")
    until: AwareDatetime | date | None = Field(
        None,
        description="When the card ends: a date (the start of that day in loyalty.yaml's zone) or a time with its "
        "zone; default now + validity_days.",
    )
    reason: str = Field(min_length=1, max_length=500, description="Why (recorded in the change log).")

    @field_validator("reason")
    @classmethod
    def _text(cls, value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the reason is not UTF-8 text") from None
        if any(unicodedata.category(char) == "Cc" for char in value):
            raise ValueError("the reason may not hold control characters")
        if not value.strip():
            raise ValueError("give a reason for the override")
        return value.strip()


def _refused(err: Exception, status: int = 422) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, status_code=status)


@router.get(
    "/customers/{customer_id}/tier",
    response_model=tiers.TierView,
    responses=_ERRORS,
    dependencies=[Depends(allowed(Permission.READ_PROFILE))],
    summary="A customer's member tier: since, until, the window's measures now, and the change log",
)
async def customer_tier(customer_id: CustomerId, api: Context) -> tiers.TierView | JSONResponse:
    now = datetime.now(UTC)

    def read(session) -> tiers.TierView | None:
        view = tiers.show(session, api.definitions, customer_id, now)
        if view.tier is None and not view.changes and not queries.known_customer(session, customer_id):
            return None
        return view

    try:
        view = await api.store.run(read)
    except tiers.NoTiers as err:
        return _refused(err, 404)
    if view is None:
        return _refused(LookupError(f"no customer {customer_id!r}"), 404)
    return view


@router.post(
    "/customers/{customer_id}/tier",
    response_model=tiers.TierView,
    responses={**_ERRORS, 409: {"model": Problem, "description": "The customer is on the member blacklist."}},
    summary="Set a customer's tier by hand (an override, recorded with who and why), or remove it",
)
async def set_customer_tier(
    customer_id: CustomerId,
    request: TierRequest,
    api: Context,
    key: Annotated[ApiKey | None, Depends(allowed(Permission.MANAGE_LOYALTY))],
) -> tiers.TierView | JSONResponse:
    now = datetime.now(UTC)
    by = key.name if key is not None else "anonymous"

    def write(session) -> tuple[tiers.TierView | None, bool]:
        if tier_store.current(session, customer_id) is None and not queries.known_customer(session, customer_id):
            return None, False
        changed = tiers.override(
            session, api.definitions, customer_id, request.tier, reason=request.reason, by=by, until=request.until,
            now=now,
        )  # fmt: skip
        written = write_engine_events(session, [changed] if changed else [], api.definitions, now)
        return tiers.show(session, api.definitions, customer_id, now), bool(written)

    try:
        view, written = await api.store.run(write)
    except tiers.NoTiers as err:
        return _refused(err, 404)
    except tiers.OverrideRefused as err:
        return _refused(err, err.status)
    if view is None:
        return _refused(LookupError(f"no customer {customer_id!r}"), 404)
    if written and api.on_accepted is not None:
        api.on_accepted()  # the dispatcher routes member.tier_changed like any event
    return view


@router.get(
    "/tiers/report",
    response_model=tiers.TierReport,
    responses=_ERRORS,
    dependencies=[Depends(allowed(Permission.READ_PROFILE))],
    summary="The tier distribution at a month's end (and now) and its migration matrix (正向/负向迁移)",
)
async def tier_report(
    api: Context,
    month: Annotated[str | None, Query(max_length=20, description="YYYY-MM; default the current month.")] = None,
) -> tiers.TierReport | JSONResponse:
    now = datetime.now(UTC)
    if month is None:
        month = now.astimezone(ZoneInfo(api.definitions.loyalty.zone)).strftime("%Y-%m")
    try:
        return await api.store.run(lambda session: tiers.report(session, api.definitions, month, now))
    except tiers.NoTiers as err:
        return _refused(err, 404)
    except ValueError as err:
        return _refused(err)
