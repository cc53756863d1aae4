"""A customer's profile: the record, traits, tags, RFM and the lifecycle stage as of now, the member tier
and the points balance, segments, why messages
to them may be held back (unsubscribes, the blacklist, suppressed addresses) and which wait for a
cap's slot, and the SMS they sent back (回复记录: what they said, when, and what was done). Read by
`GET /customers/{id}` and `journeys customer ID`; the console's search (`GET /customers?q=`);
`GET /customers/{id}/replies` lists the replies alone."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from core.audience import Segment
from core.contacts import UnusableContact, canonical_phone
from core.lifecycle import Stage, stage
from core.loyalty import Tiers
from core.rfm import Rfm, RfmTable, score
from rules.contacts import address_for
from store import queries
from store import replies as reply_store
from store.points import balance
from store.segments import segments_of
from store.tiers import current


class Suppression(BaseModel):
    channel: str
    address: str
    scope: str = Field(description="all: no message at all; marketing: no marketing message.")
    reason: str
    since: datetime


class Waiting(BaseModel):
    """A message deferred for a full cap, waiting for its slot (contact policy, issue 25)."""

    journey: str
    step: str
    workflow_id: str
    channel: str | None
    cap: str
    priority: int
    since: datetime = Field(description="Its first deferral for the cap: its place in the queue.")
    until: datetime = Field(description="When it is decided again.")
    deadline: datetime = Field(description="Past it, the message is skipped frequency_cap.")
    detail: str | None = Field(description="The policy's answer, e.g. cap marketing 2/7d: 2 sent since ...")


class ProfileTier(BaseModel):
    """The member tier a customer holds (store/tiers.py) and its card."""

    name: str
    title: str | None = Field(description="The level's title in loyalty.yaml (None for a level no longer there).")
    since: datetime
    until: datetime = Field(description="When the card ends (and the tier is re-evaluated).")


class Reply(BaseModel):
    """An SMS the customer sent back (回复记录), with the message it answers and what was done."""

    id: str
    received_at: datetime
    text: str
    number: str
    provider: str = Field(description="aliyun or twilio.")
    sign_name: str | None = Field(None, description="The signature the reply was sent to (Aliyun).")
    action: str | None = Field(description="What the reply rules decided: unsubscribe, answer, webhook, ignore.")
    message_id: str | None = Field(description="The SMS it most likely answers (the latest sent to the number).")
    journey: str | None = None
    step: str | None = None
    order_id: str | None = None
    handled_at: datetime | None = Field(description="When its answer (confirmation, template, webhook) was done.")
    answer_id: str | None = Field(None, description="The ledger row of the answer sent back.")
    error: str | None = Field(None, description="Why answering it failed.")


#: How many of a customer's latest replies the profile shows.
PROFILE_REPLIES = 20


def replies(session: Session, customer_id: str, limit: int = 100) -> list[Reply]:
    """The customer's replies, newest first, each with the journey and step of the message it answers."""
    rows = reply_store.replies_of(session, customer_id, limit)
    answered = {row.message_id for row in rows if row.message_id}
    messages = {m.id: m for m in reply_store.messages_by_id(session, answered)}
    out = []
    for row in rows:
        message = messages.get(row.message_id) if row.message_id else None
        out.append(
            Reply(
                id=row.id,
                received_at=row.received_at,
                text=row.content,
                number=row.number,
                provider=row.provider,
                sign_name=row.sign_name,
                action=row.action,
                message_id=row.message_id,
                journey=message.journey if message is not None else None,
                step=message.step if message is not None else None,
                order_id=row.order_id,
                handled_at=row.handled_at,
                answer_id=row.answer_id,
                error=row.error,
            )
        )
    return out


class ProfilePurchase(BaseModel):
    """One paid order of the customer, as RFM counts it."""

    order_id: str
    amount: float = Field(description="The first payment's amount, else the creation's.")
    paid_at: datetime | None
    refunded_at: datetime | None = None


class Profile(BaseModel):
    customer_id: str
    record: dict[str, Any] = Field(description="name, phone, email, birthday, timezone, locale, region.")
    traits: dict[str, Any]
    tags: list[str]
    rfm: Rfm = Field(description="As of `at`.")
    lifecycle: Stage = Field(description="The lifecycle stage as of `at` (core.lifecycle): prospect ... silent.")
    tier: ProfileTier | None = Field(None, description="The member tier held (VIP体系), or null.")
    points: int = Field(0, description="The points balance: the ledger's sum.")
    segments: list[str] = Field(default_factory=list, description="The segments the customer is in.")
    purchases: list[ProfilePurchase] = Field(
        default_factory=list, description="Every paid order as of `at`, the latest payment first (RFM reads them)."
    )
    unsubscribed: list[str]
    blacklisted: bool
    suppressions: list[Suppression] = Field(description="Suppressed addresses of the customer's contacts.")
    contact_problems: list[str] = Field(default_factory=list, description="Contacts no provider can deliver to.")
    waiting: list[Waiting] = Field(
        default_factory=list, description="Messages waiting for a cap's slot as of `at`, first in line first."
    )
    replies: list[Reply] = Field(
        default_factory=list, description=f"The latest {PROFILE_REPLIES} SMS replies (回复记录), newest first."
    )
    at: datetime


RECORD_FIELDS = ("name", "phone", "email", "birthday", "timezone", "locale", "region")


def profile(
    session: Session,
    customer_id: str,
    table: RfmTable,
    at: datetime,
    default_region: str,
    segments: list[Segment] | None = None,
    tiers: Tiers | None = None,
) -> Profile | None:
    """The profile as of `at`, or None when there is no such customer (or they were erased);
    `tiers` (loyalty.yaml's) gives the tier's title."""
    customer = queries.get_customer(session, customer_id)
    if customer is None:
        return None
    purchases = queries.purchases_of(session, customer_id, at)
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
        rfm=score(purchases, at, table),
        lifecycle=stage(purchases, at, table.lifecycle),
        tier=_tier(session, customer_id, tiers),
        points=balance(session, customer_id),
        segments=segments_of(session, customer_id, segments or [], at, table),
        purchases=sorted(
            (
                ProfilePurchase(order_id=p.order_id, amount=p.amount, paid_at=p.paid_at, refunded_at=p.refunded_at)
                for p in purchases
            ),
            key=lambda p: (p.paid_at is not None, p.paid_at or at),
            reverse=True,
        ),
        unsubscribed=list(customer.unsubscribed),
        blacklisted=customer.blacklisted,
        suppressions=suppressions,
        contact_problems=problems,
        waiting=[
            Waiting(
                journey=row.journey,
                step=row.step,
                workflow_id=row.workflow_id,
                channel=row.channel,
                cap=row.cap,
                priority=row.priority or 0,
                since=row.waiting_since or row.at,
                until=row.resume_at,
                deadline=row.deadline or row.resume_at,
                detail=row.detail,
            )
            for row in queries.waiting_messages(session, customer_id, at)
        ],
        replies=replies(session, customer_id, PROFILE_REPLIES),
        at=at,
    )


def _tier(session: Session, customer_id: str, tiers: Tiers | None) -> ProfileTier | None:
    row = current(session, customer_id)
    if row is None:
        return None
    level = next((level for level in tiers.levels if level.name == row.tier), None) if tiers else None
    title = None if level is None else level.title or level.name
    return ProfileTier(name=row.tier, title=title, since=row.since, until=row.until)


class CustomerMatch(BaseModel):
    """A customer found by the console's search: enough to tell them apart, contacts masked."""

    customer_id: str
    name: str | None
    phone: str | None = Field(description="Masked: the last four digits.")
    email: str | None = Field(description="Masked: the first letter and the domain.")


def _mask_phone(phone: str | None) -> str | None:
    return None if not phone else "•••• " + phone[-4:]


def _mask_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    local, _, domain = email.partition("@")
    return f"{local[:1]}•••@{domain}"


def search_customers(session: Session, text: str, default_region: str) -> list[CustomerMatch]:
    """Customers by id, by phone (as written, or the same number in E.164) or by email."""
    text = text.strip()
    if not text or "\x00" in text:  # nothing stored holds a NUL (intake refuses it); PostgreSQL cannot compare one
        return []
    phones = [text, canonical_phone(text, default_region)]  # as an older release stored it, and as stored now
    rows = queries.find_customers(session, ids=[text], phones=phones, email=text if "@" in text else None)
    return [
        CustomerMatch(customer_id=r.customer_id, name=r.name, phone=_mask_phone(r.phone), email=_mask_email(r.email))
        for r in rows
    ]
