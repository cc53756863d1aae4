"""Taking in an SMS reply (回复记录), the same way whichever provider brought it: Aliyun's SmsUp
push (triggers/aliyun_push.py) or Twilio's inbound webhook (triggers/webhooks.py).

In one transaction per request, for each reply not logged before (by the provider's key: Aliyun's
`sequence_id`, Twilio's MessageSid):
- the reply is logged (`sms_replies`), linked to the customer whose record holds the number in
  any stored form (core/contacts.py) and to the SMS it most likely answers (the latest to that
  number before it, preferring one under the reply's signature) and that message's order;
- the shop's reply rules classify it (rules/replies.py); `unsubscribe` adds the SMS suppression of
  the number at once (scope `marketing`; an existing `all` is never weakened), and counts as the
  linked message's unsubscribe in the effect report;
- the `sms.replied` engine event (core/message_events.py) is written into the event log, so a
  journey can start, wait for or exit on a reply.
After the commit the dispatcher is woken, and for each new reply that still needs an answer (a
confirmation, an answer template, a webhook: `Decision.needs_answer`) `on_reply(reply_id)` is
awaited; its failure is logged and never fails the request (the reply is logged, and the
answering side sweeps replies left unhandled).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import phonenumbers

from activities.engine_events import write_engine_events
from core.contacts import canonical_phone, phone_forms
from core.loyalty import engine_event
from definitions.loader import Definitions
from rules.replies import Decision, decide
from store import queries
from store import replies as reply_store
from store.db import Store
from store.tables import SmsReplyRow
from triggers.live import LiveDefinitions

log = logging.getLogger("journeys.replies")

#: How far a provider's time for a reply may be from ours before ours is used instead (a clock
#: off, or a time that is no time): the log's order and the event's time stay sane.
MAX_CLOCK_SKEW = timedelta(hours=12)
#: The longest reply kept (an SMS is at most a few hundred characters; a push is not a store).
MAX_TEXT = 1000

OnReply = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class IncomingReply:
    """A reply as a provider reported it. `opt`: the provider's own opt-out handling (Twilio's
    STOP and START words, or its `OptOutType`), which wins over the shop's rules: Twilio has
    already blocked (or unblocked) the number and answered the customer itself."""

    provider: Literal["aliyun", "twilio"]
    key: str
    number: str
    text: str
    at: datetime | None = None
    sign_name: str | None = None
    dest_code: str | None = None
    opt: Literal["stop", "start", "help"] | None = None


@dataclass
class IntakeResult:
    logged: list[str] = field(default_factory=list)
    duplicates: int = 0
    to_answer: list[str] = field(default_factory=list)
    events: int = 0


def number_forms(raw: str, default_region: str) -> tuple[str | None, set[str]]:
    """The number in E.164 (None when it is no phone number) and every form a customer record or
    a ledger row may hold it in: as sent, E.164 (Aliyun sends mainland numbers without +86,
    sometimes with 86), and the national digits an older release may have stored."""
    raw = raw.strip()[:40]
    forms = phone_forms(raw, ["CN", default_region]) if raw else set()
    e164 = canonical_phone(raw, "CN") if raw else None
    if e164 is None or not e164.startswith("+"):
        return None, {form for form in forms if form}
    forms.add(e164)
    try:
        parsed = phonenumbers.parse(e164)
        national = phonenumbers.national_significant_number(parsed)
        forms |= {national, f"{parsed.country_code}{national}"}
        if parsed.country_code == 86:
            forms.add(f"0086{national}")
    except phonenumbers.NumberParseException:
        pass
    return e164, {form for form in forms if form}


def storable(text: str) -> str:
    """Text as the store can keep it: no NUL (PostgreSQL refuses it), no lone surrogate (JSON and
    a form may carry one; UTF-8 cannot), trimmed. Every field a provider sends passes through it."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()


def clean_text(text: str) -> str:
    """A reply as it can be stored and shown: storable, at most MAX_TEXT characters."""
    return storable(text)[:MAX_TEXT]


@dataclass
class ReplyIntake:
    store: Store
    #: What runs (triggers/live.py: read at each reply, so a published change counts at once), or
    #: fixed definitions.
    live: Definitions | LiveDefinitions
    default_region: str = "CN"
    #: The dispatcher's wake-up, after new events are logged.
    on_accepted: Callable[[], None] | None = None
    #: Hands a new reply that needs an answer to the answering side (by its id).
    on_reply: OnReply | None = None

    async def take(self, incoming: list[IncomingReply]) -> IntakeResult:
        """Log, link, classify and announce these replies; hand on those that need an answer."""
        if not incoming:
            return IntakeResult()
        result = await self.store.run(lambda session: self._log_all(session, incoming))
        if result.events and self.on_accepted is not None:
            self.on_accepted()
        if self.on_reply is not None and result.to_answer:
            # Side by side: a push may carry many replies, and Aliyun does not wait long for its answer.
            outcomes = await asyncio.gather(*(self.on_reply(i) for i in result.to_answer), return_exceptions=True)
            for reply_id, outcome in zip(result.to_answer, outcomes, strict=True):
                if isinstance(outcome, BaseException):  # the reply is logged: the answering side's sweep takes it up
                    log.error("handing SMS reply %s on failed; it stays unhandled", reply_id, exc_info=outcome)
        return result

    def _log_all(self, session, incoming: list[IncomingReply]) -> IntakeResult:
        result = IntakeResult()
        now = datetime.now(UTC)
        for reply in incoming:
            logged = self._log_one(session, reply, now)
            if logged is None:
                result.duplicates += 1
                continue
            row, decision, handed_on, event_written = logged
            result.logged.append(row.id)
            result.events += event_written
            if handed_on:
                result.to_answer.append(row.id)
        return result

    def _log_one(self, session, reply: IncomingReply, now: datetime) -> tuple[SmsReplyRow, Decision, bool, int] | None:
        key = storable(reply.key)[:200]
        if reply_store.find_reply(session, reply.provider, key) is not None:
            return None
        at = reply.at if reply.at is not None and abs(reply.at - now) <= MAX_CLOCK_SKEW else now
        text = clean_text(reply.text)
        number = storable(reply.number)
        e164, forms = number_forms(number, self.default_region)
        customers = reply_store.customers_with_number(session, forms)
        messages = reply_store.latest_messages_to(session, forms, at, customers)
        if not messages and not customers:  # no record holds the number: the ledger may know whose it is
            messages = reply_store.latest_messages_to(session, forms, at)
        message = reply_store.answered_message(messages, storable(reply.sign_name or ""))
        customer_id = message.customer_id if message is not None else (customers[0] if customers else None)
        decision = self._decision(reply, text)
        row = SmsReplyRow(
            id=str(uuid.uuid4()),
            provider=reply.provider,
            provider_key=key,
            number=(e164 or number)[:32],
            customer_id=customer_id,
            message_id=message.id if message is not None else None,
            order_id=message.order_id if message is not None else None,
            content=text,
            sign_name=storable(reply.sign_name)[:60] or None if reply.sign_name else None,
            dest_code=storable(reply.dest_code)[:40] or None if reply.dest_code else None,
            received_at=at,
            action=decision.action,
        )
        handed_on = decision.needs_answer and reply.opt is None
        if not handed_on:
            row.handled_at = now  # nothing left to answer: the sweep passes it by
        if not reply_store.add_reply(session, row):
            return None
        self._apply(session, reply, decision, row, e164, at)
        written = 0
        if customer_id is not None:
            data = {
                "text": text,
                "reply_id": row.id,
                "action": decision.action,
                "message_id": row.message_id,
                "journey": message.journey if message is not None else None,
                "step": message.step if message is not None else None,
                "order_id": row.order_id,
            }
            # A customer's event (definitions/events.py): the order it concerns is in its data.
            event = engine_event("sms.replied", customer_id, row.id, at, data)
            written = len(write_engine_events(session, [event], self.definitions, now))
        return row, decision, handed_on, written

    def _decision(self, reply: IncomingReply, text: str) -> Decision:
        """The shop's rules decide, unless the provider handled an opt-out itself."""
        if reply.opt == "stop":
            return Decision("unsubscribe", None)
        if reply.opt in ("start", "help"):
            return Decision("ignore", None)
        return decide(self.definitions.replies, text)

    @property
    def definitions(self) -> Definitions:
        return self.live.current if isinstance(self.live, LiveDefinitions) else self.live

    def _apply(
        self, session, reply: IncomingReply, decision: Decision, row: SmsReplyRow, e164: str | None, at: datetime
    ) -> None:
        """The subscription change a reply makes, in the reply's transaction."""
        if e164 is None:
            return
        if reply.opt == "start":
            queries.remove_suppression(session, "sms", e164)
            return
        if decision.action != "unsubscribe":
            return
        # Twilio's own opt-out blocks every message from the sender: so does ours. The shop's
        # unsubscribe words stop marketing only; an earlier `all` is never weakened (add_suppression).
        scope = "all" if reply.opt == "stop" else "marketing"
        queries.add_suppression(session, "sms", e164, scope, f"replied to {row.provider} (reply {row.id})", at)
        if row.message_id is not None:  # the effect report's unsubscribes, by the message answered
            queries.seen_provider_event(session, "journeys", f"unsubscribe:{row.message_id}", "unsubscribe",
                                        row.message_id, at)  # fmt: skip
