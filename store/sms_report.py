"""The SMS report's queries (短信报表): the ledger's SMS per day (in the shop's time zone),
signature and template, counted by the database on PostgreSQL and SQLite alike: two grouped
statements over the period's SMS rows (ix_messages_channel_at), never rows walked in Python.

- signature and template: an Aliyun message's `template_data.sign_name` and `provider_template`
  (its registered template code); any other SMS (Twilio, the outbox) has the shop's name as its
  signature and the journey's template name. An Aliyun row whose template data was erased or
  expired keeps its template code and has no signature ('');
- submitted: reached the provider (SENT_STATUSES); delivered: delivered or further (opened,
  clicked); failed: failed or undelivered, by error code (`failure_code`); replied: messages
  an SMS reply (sms_replies) was linked to; clicked: messages whose short link was followed (by
  their status or a click, as the effect report counts them, store/clicks.py); parts: Aliyun's
  (or Twilio's) billed parts of the submitted messages (`segments`, 1 when unknown).

views/sms_report.py prices the parts and assembles the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import String, and_, case, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from core.vocabulary import SENT_STATUSES, Reason, Status
from store.clicks import clicked_messages
from store.effect import DELIVERED_STATUSES
from store.portable import local_day
from store.tables import MessageRow, SmsReplyRow, UTCDateTime

FAILED_STATUSES = (Status.FAILED, Status.UNDELIVERED)
#: The longest error code the report shows (a provider's error text is cut there).
CODE_CHARS = 60


@dataclass
class SmsCounts:
    """One (day, signature, template)'s figures."""

    submitted: int = 0
    delivered: int = 0
    failed: int = 0
    replied: int = 0
    clicked: int = 0
    parts: int = 0
    failed_by_code: dict[str, int] = field(default_factory=dict)


class _ErrorCode(FunctionElement):
    """The code at the head of a ledger error: what comes before its first ': ' (the send
    activity writes `CODE: message`, e.g. `isv.MOBILE_NUMBER_ILLEGAL: ...` or `21211: ...`), or
    the whole error (`Twilio 30003`), cut to CODE_CHARS."""

    inherit_cache = True
    name = "error_code"
    type = String()


@compiles(_ErrorCode, "postgresql")
def _error_code_postgresql(element, compiler, **kw):
    (error,) = element.clauses
    text = compiler.process(error, **kw)
    return f"left(split_part({text}, ': ', 1), {CODE_CHARS})"


@compiles(_ErrorCode, "sqlite")
def _error_code_sqlite(element, compiler, **kw):
    (error,) = element.clauses
    text = compiler.process(error, **kw)
    head = f"CASE WHEN instr({text}, ': ') > 0 THEN substr({text}, 1, instr({text}, ': ') - 1) ELSE {text} END"
    return f"substr({head}, 1, {CODE_CHARS})"


def failure_code(m=MessageRow) -> ColumnElement:
    """Why an SMS failed, as the report groups it: the provider's error code when the provider
    said no (a rejection, a receipt of undelivered), else the engine's reason (template_error,
    in_doubt, ...)."""
    from_provider = and_(
        m.error.is_not(None),
        or_(m.status == Status.UNDELIVERED, m.reason.is_(None), m.reason == Reason.PROVIDER_REJECTED),
    )
    return case((from_provider, _ErrorCode(m.error)), else_=func.coalesce(m.reason, "unknown"))


def _columns(timezone: str, shop_name: str) -> tuple[ColumnElement, ColumnElement, ColumnElement]:
    m = MessageRow
    sign_name = m.template_data["sign_name"].as_string()
    signature = func.coalesce(sign_name, case((m.provider_template.is_(None), literal(shop_name, String())), else_=""))
    template = func.coalesce(m.provider_template, m.template)
    return local_day(m.at, timezone).label("day"), signature.label("signature"), template.label("template")


def _count_if(condition) -> ColumnElement:
    return func.sum(case((condition, 1), else_=0))


def sms_counts(
    session: Session, start: datetime, end: datetime, timezone: str, shop_name: str
) -> dict[tuple[str, str, str], SmsCounts]:
    """Per (day, signature, template): the figures of the SMS due in [start, end)."""
    m = MessageRow
    day, signature, template = _columns(timezone, shop_name)
    where = (
        m.channel == "sms",
        m.at >= literal(start, UTCDateTime()),
        m.at < literal(end, UTCDateTime()),
        m.status.in_(sorted({str(s) for s in (*SENT_STATUSES, *FAILED_STATUSES)})),
    )
    submitted = m.status.in_([str(s) for s in SENT_STATUSES])
    clicks = clicked_messages(start)  # as the effect report counts them: the status, or a click
    clicked = or_(m.status == Status.CLICKED, and_(submitted, clicks.c.message_id.is_not(None)))
    # The messages replied to, each once (a hash join, not a lookup per message); a reply comes
    # after its message: those received since the period began (ix_sms_replies_received).
    replies = (
        select(SmsReplyRow.message_id)
        .where(SmsReplyRow.message_id.is_not(None), SmsReplyRow.received_at >= literal(start, UTCDateTime()))
        .distinct()
        .subquery("replied")
    )
    replied = replies.c.message_id.is_not(None)
    rows = session.execute(
        select(
            day,
            signature,
            template,
            _count_if(submitted),
            _count_if(or_(m.status.in_([str(s) for s in DELIVERED_STATUSES]), clicked)),
            _count_if(m.status.in_([str(s) for s in FAILED_STATUSES])),
            _count_if(replied),
            _count_if(clicked),
            func.sum(case((submitted, func.coalesce(m.segments, 1)), else_=0)),
        )
        .select_from(m)
        .outerjoin(replies, replies.c.message_id == m.id)
        .outerjoin(clicks, clicks.c.message_id == m.id)
        .where(*where)
        .group_by(day, signature, template)
    )
    found: dict[tuple[str, str, str], SmsCounts] = {}
    for d, s, t, *figures in rows:
        found[d, s, t] = SmsCounts(*(int(n or 0) for n in figures))
    code = failure_code().label("code")
    failures = session.execute(
        select(day, signature, template, code, func.count())
        .where(*where, m.status.in_([str(s) for s in FAILED_STATUSES]))
        .group_by(day, signature, template, code)
    )
    for d, s, t, why, n in failures:  # a group the first statement missed (a send failing in between) too
        found.setdefault((d, s, t), SmsCounts()).failed_by_code[why or "unknown"] = int(n)
    return found
