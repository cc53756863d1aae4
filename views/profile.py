"""A customer's profile: the record, traits, tags, RFM as of now, segments and why messages
to them may be held back (unsubscribes, the blacklist, suppressed addresses). Read by
`GET /customers/{id}` and `journeys customer ID`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from activities.contacts import UnusableContact, address_for
from core.audience import Segment
from core.rfm import Rfm, RfmTable, score
from store import queries
from store.segments import segments_of


class Suppression(BaseModel):
    channel: str
    address: str
    scope: str = Field(description="all: no message at all; marketing: no marketing message.")
    reason: str
    since: datetime


class Profile(BaseModel):
    customer_id: str
    record: dict[str, Any] = Field(description="name, phone, email, birthday, timezone, locale, region.")
    traits: dict[str, Any]
    tags: list[str]
    rfm: Rfm = Field(description="As of `at`.")
    segments: list[str] = Field(default_factory=list, description="The segments the customer is in.")
    unsubscribed: list[str]
    blacklisted: bool
    suppressions: list[Suppression] = Field(description="Suppressed addresses of the customer's contacts.")
    contact_problems: list[str] = Field(default_factory=list, description="Contacts no provider can deliver to.")
    at: datetime


RECORD_FIELDS = ("name", "phone", "email", "birthday", "timezone", "locale", "region")


def profile(
    session: Session,
    customer_id: str,
    table: RfmTable,
    at: datetime,
    default_region: str = "CN",
    segments: list[Segment] | None = None,
) -> Profile | None:
    """The profile as of `at`, or None when there is no such customer (or they were erased)."""
    customer = queries.get_customer(session, customer_id)
    if customer is None:
        return None
    suppressions: list[Suppression] = []
    problems: list[str] = []
    for channel in ("sms", "email"):
        try:
            address = address_for(customer, channel, default_region)
        except UnusableContact as err:
            problems.append(str(err))
            continue
        if address is None:
            continue
        row = queries.suppression_of(session, channel, address)
        if row is not None:
            suppressions.append(
                Suppression(channel=channel, address=address, scope=row.scope, reason=row.reason, since=row.created_at)
            )
    return Profile(
        customer_id=customer_id,
        record=customer.model_dump(mode="json", include=set(RECORD_FIELDS)),
        traits=customer.traits,
        tags=customer.tags,
        rfm=score(queries.purchases_of(session, customer_id, at), at, table),
        segments=segments_of(session, customer_id, segments or [], at, table),
        unsubscribed=list(customer.unsubscribed),
        blacklisted=customer.blacklisted,
        suppressions=suppressions,
        contact_problems=problems,
        at=at,
    )
