"""The reply log (回复记录, `sms_replies`) and the look-ups an SMS receipt or reply needs: which
ledger row a receipt is about, which customer a number belongs to, and which message a reply most
likely answers.

A reply row's life: the intake (triggers/reply_intake.py) writes it once per provider key with
the customer, the message and order it answers, and the `action` the reply rules decided. When
nothing is left to do (an `ignore`, an `unsubscribe` without a confirmation, an opt-out Twilio
answers itself) it is written with `handled_at` set; otherwise `handled_at` stays NULL until the
answering side (a confirmation, an answer template, the customer-service webhook) records what it
did (`answer_id`, `handled_at`, or `error`). Rows with an action and no `handled_at` are the
replies still to be answered.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import String, cast, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.sms_registry import settled_by_lookup
from core.vocabulary import COUNTED_STATUSES
from store.tables import CustomerRow, EventRow, MessageRow, SmsReplyRow

#: How many of a number's latest messages are looked at for the one with the reply's signature.
LATEST_LOOKED_AT = 20


def find_reply(session: Session, provider: str, key: str) -> SmsReplyRow | None:
    return session.scalars(
        select(SmsReplyRow).where(SmsReplyRow.provider == provider, SmsReplyRow.provider_key == key)
    ).first()


def add_reply(session: Session, row: SmsReplyRow) -> bool:
    """Log a reply; False when its provider key was logged before (a second push of it, or one a
    concurrent request logged first): then nothing is written."""
    if find_reply(session, row.provider, row.provider_key) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # the same reply, logged by a concurrent delivery
        return False
    return True


def customers_with_number(session: Session, forms: Collection[str]) -> list[str]:
    """The customers whose record holds the number in one of its stored `forms`."""
    if not forms:
        return []
    query = select(CustomerRow.customer_id).where(CustomerRow.phone.in_(list(forms))).order_by(CustomerRow.customer_id)
    return list(session.scalars(query.limit(20)))


def latest_messages_to(
    session: Session, forms: Collection[str], before: datetime, customer_ids: Collection[str] = ()
) -> list[MessageRow]:
    """The latest SMS (sent, or possibly sent) to the number in any of its `forms` at or before
    `before`, newest first. With `customer_ids`, only theirs (found through the customers' index)."""
    if not forms:
        return []
    query = select(MessageRow).where(
        MessageRow.channel == "sms",
        MessageRow.address.in_(list(forms)),
        MessageRow.at <= before,
        MessageRow.status.in_(COUNTED_STATUSES),
    )
    if customer_ids:
        query = query.where(MessageRow.customer_id.in_(list(customer_ids)))
    return list(session.scalars(query.order_by(MessageRow.at.desc(), MessageRow.id).limit(LATEST_LOOKED_AT)))


def answered_message(messages: list[MessageRow], sign_name: str | None) -> MessageRow | None:
    """Of a number's latest messages (newest first), the one a reply most likely answers: the
    latest sent under the reply's signature (Aliyun names it), else the latest."""
    if sign_name:
        for row in messages:
            if (row.template_data or {}).get("sign_name") == sign_name:
                return row
    return messages[0] if messages else None


def message_for_receipt(
    session: Session, out_id: str | None, biz_id: str | None, forms: Collection[str]
) -> MessageRow | None:
    """The SMS ledger row a delivery receipt is about, or None (then the receipt changes nothing):
    by `out_id` (our ledger id, sent as Aliyun's OutId) when that row went to this number, else by
    Aliyun's `biz_id` (shared by a batch) and the number. A row whose address was erased matches
    by id and biz_id alone."""
    if out_id:
        row = session.get(MessageRow, out_id[:36])
        ours = row is not None and row.channel == "sms" and (row.address is None or row.address in forms)
        if ours and (row.provider_id is None or not biz_id or row.provider_id in (biz_id, settled_by_lookup(out_id))):
            return row
    # A send settled by QuerySendDetails, which gives no BizId: its provider id names the OutId
    # (a batch's OutId is the batch's, so the number tells its rows apart).
    known = [biz_id[:120]] if biz_id else []
    known += [settled_by_lookup(out_id)] if out_id else []
    if known and forms:
        return session.scalars(
            select(MessageRow).where(
                MessageRow.provider_id.in_(known),
                MessageRow.channel == "sms",
                MessageRow.address.in_(list(forms)),
            )
        ).first()
    return None


def replies_of(session: Session, customer_id: str, limit: int = 100) -> list[SmsReplyRow]:
    """A customer's replies, newest first."""
    query = select(SmsReplyRow).where(SmsReplyRow.customer_id == customer_id)
    return list(session.scalars(query.order_by(SmsReplyRow.received_at.desc(), SmsReplyRow.id).limit(limit)))


def messages_by_id(session: Session, ids: Collection[str]) -> list[MessageRow]:
    """The ledger rows of these ids (the messages replies answer)."""
    if not ids:
        return []
    return list(session.scalars(select(MessageRow).where(MessageRow.id.in_(list(ids)))))


def expire_replies(session: Session, before: datetime, batch: int = 1000) -> dict[str, int]:
    """One batch of retention for the reply log: replies received before `before` are deleted, and
    `sms.replied` events logged before it that are done with (dispatched or dead) lose their
    `data` (the reply's text). Returns the counts; call again while either reaches `batch`. For
    the daily retention run (store.queries.expire_personal_data) to call beside its own."""
    reply_ids = list(session.scalars(select(SmsReplyRow.id).where(SmsReplyRow.received_at < before).limit(batch)))
    if reply_ids:
        session.execute(delete(SmsReplyRow).where(SmsReplyRow.id.in_(reply_ids)))
    event_ids = list(
        session.scalars(
            select(EventRow.event_id)
            .where(
                EventRow.type == "sms.replied",
                EventRow.received_at < before,
                or_(EventRow.dispatched_at.is_not(None), EventRow.failed_at.is_not(None)),
                cast(EventRow.data, String) != "{}",  # not scrubbed yet
            )
            .limit(batch)
        )
    )
    if event_ids:
        session.execute(update(EventRow).where(EventRow.event_id.in_(event_ids)).values(data={}))
    return {"sms_replies": len(reply_ids), "reply_events": len(event_ids)}
