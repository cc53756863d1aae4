"""What answering an SMS reply (应答设置) does outside the workflow: plan the answer from the logged
reply (`sms_replies`) and the shop's rules (`replies.yaml`), post a reply to the shop's customer
service, record what was done on the reply, and start the answers the hook never started.

The sends reuse the journey's own activities (`send_message`, `deliver_message`): the plan is a
`SendRequest` whose ledger row is `(reply:{id}, "reply", confirm|answer)`. The run id in that key
is fixed rather than Temporal's, so even a second run of the workflow (after Temporal forgot the
first, past the namespace's retention) finds the first run's row and sends nothing again.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import requests
from pydantic import BaseModel, Field
from sqlalchemy import select
from temporalio import activity
from temporalio.client import Client
from temporalio.common import Priority, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from activities.payloads import SendRequest
from core.contact_policy import EXEMPT, NO_QUIET_HOURS, PolicyOverride
from core.orders import order_context
from core.replies import DEFAULT_REPLIES, ReplyAction, ReplyRule, ReplyRules
from core.signing import SIGNATURE_HEADER, sign
from definitions.loader import DefinitionsError, load_replies, load_templates
from definitions.schema import Template
from instances.start import PRIORITY
from rules.replies import matches
from store import queries
from store.db import Store
from store.tables import MessageRow, SmsReplyRow

log = logging.getLogger("journeys.replies")

#: The registered names of the workflows (activities start them by name: they sit below workflows).
REPLY_WORKFLOW = "ReplyAnswer"
REPLY_SWEEP_WORKFLOW = "ReplySweep"
#: The ledger's journey name for answers and confirmations, and the fixed run id of their rows.
REPLIES_JOURNEY = "replies"
ANSWER_RUN = "reply"
#: A reply the hook should have started is swept after this grace, if logged within SWEEP_WINDOW.
SWEEP_GRACE = timedelta(minutes=1)
SWEEP_WINDOW = timedelta(days=2)
SWEEP_BATCH = 500
#: Why a confirmation may pass quiet hours and the caps.
CONFIRM_REASON = "the confirmation of an unsubscribe is required by law, at once"


def reply_workflow_id(reply_id: str) -> str:
    """The answer's workflow id: one per reply, never reused."""
    return f"reply:{reply_id}"


async def start_answer(client: Client, reply_id: str, task_queue: str) -> bool:
    """Start the answer of a reply; False when it was started before (a reply is answered once)."""
    try:
        await client.start_workflow(
            REPLY_WORKFLOW,
            reply_id,
            id=reply_workflow_id(reply_id),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            # A customer who wrote TD waits for the confirmation: ahead of a backlog of timers.
            priority=Priority(priority_key=PRIORITY["transactional at once"]),
        )
    except WorkflowAlreadyStartedError:
        return False
    return True


# ----------------------------------------------------------------------------- payloads


class ReplyPlan(BaseModel):
    """What to do for one reply. `send` is the confirmation or answer (its `at` is the workflow's
    to set); `url` the customer service's webhook; `done` says it was handled before."""

    reply_id: str
    action: ReplyAction | None = None
    done: bool = False
    send: SendRequest | None = None
    url: str | None = None
    error: str | None = Field(default=None, description="Why nothing can be done (recorded on the reply).")


class WebhookPost(BaseModel):
    reply_id: str
    url: str


class ReplyOutcome(BaseModel):
    """What was done for a reply, recorded on its row."""

    reply_id: str
    action: ReplyAction | None = None
    step: str | None = Field(default=None, description="The ledger step of the answer sent (confirm, answer).")
    handled_at: datetime
    error: str | None = None


class SweepRequest(BaseModel):
    at: datetime


class SweepReport(BaseModel):
    started: int = 0
    already: int = Field(0, description="Replies whose answer was started before (running, or done).")


# ----------------------------------------------------------------------------- the rules


def reply_definitions(directory: Path) -> tuple[ReplyRules, dict[str, Template]]:
    """The shop's reply rules and the templates they name, read once when the worker is built. Rules
    with problems are the built-in ones (unsubscribe words, no confirmation): an error in a file is
    no reason to stop every journey's sends; the worker logs it (`journeys validate` shows it)."""
    templates, _ = load_templates(directory)
    try:
        rules = load_replies(directory, templates)
    except DefinitionsError as err:
        log.error("replies.yaml not used, the built-in rules apply: %s", "; ".join(err.problems))
        return DEFAULT_REPLIES, {}
    named = {name for rule in rules.rules for name in (rule.template, rule.confirm) if name}
    return rules, {name: templates[name] for name in named if name in templates}


def rule_for(
    rules: ReplyRules, content: str, action: ReplyAction | None
) -> tuple[ReplyAction, ReplyRule | None, str | None]:
    """The rule that answers `content` (the first that matches, as the intake classified it) with
    its action, or the fallback (`otherwise`, its url). `action`: what the intake decided; a rule
    of another action is passed over (the rules changed in between: the intake's decision stands,
    the unsubscribe above all, as its suppression is already written)."""
    for rule in rules.rules:
        if matches(rule, content) and action in (None, rule.action):
            return rule.action, rule, rule.url
    fallback = rules.otherwise
    if action in (None, fallback.action):
        return fallback.action, None, fallback.url
    return action, None, None  # decided by the intake, and no rule of it is left


# ----------------------------------------------------------------------------- the activities


class ReplyActivities:
    """The answers' activities with their dependencies: the store, the shop's reply rules and their
    templates (read when the worker starts), the secret that signs customer-service posts, and a
    Temporal client for the sweep."""

    def __init__(
        self,
        store: Store,
        rules: ReplyRules,
        templates: dict[str, Template],
        *,
        webhook_secret: str | None,
        client: Client | None = None,
        timeout: float = 10.0,
    ):
        self.store = store
        self.rules = rules
        self.templates = templates
        self.webhook_secret = webhook_secret
        self.client = client
        self.timeout = timeout
        self.http = requests.Session()

    @activity.defn(name="plan_reply_answer")
    def plan_reply_answer(self, reply_id: str) -> ReplyPlan:
        """What a reply gets, from its row and the rules: a send (the unsubscribe's confirmation,
        an answer), a post to customer service, or nothing. Reads only: safe to retry."""
        with self.store.transaction() as session:
            row = session.get(SmsReplyRow, reply_id)
            if row is None:
                return ReplyPlan(reply_id=reply_id, done=True, error=f"no reply {reply_id} is logged")
            if row.handled_at is not None:
                return ReplyPlan(reply_id=reply_id, action=row.action, done=True)
            decided = row.action if row.action in get_args(ReplyAction) else None
            action, rule, url = rule_for(self.rules, row.content, decided)
            plan = ReplyPlan(reply_id=reply_id, action=action)
            if action == "webhook":
                plan.url = url
                if url is None:
                    plan.error = "webhook: no rule of replies.yaml gives a url for this reply"
                return plan
            name = (rule.confirm if action == "unsubscribe" else rule.template) if rule is not None else None
            if action not in ("unsubscribe", "answer") or name is None:
                return plan  # ignore, or an unsubscribe without a confirmation
            if row.customer_id is None:
                plan.error = f"{row.number} is no customer's number: no {name} sent"
                return plan
            template = self.templates.get(name)
            if template is None:
                plan.error = f"template {name!r} of replies.yaml is not loaded by this worker"
                return plan
            confirm = action == "unsubscribe"
            plan.send = SendRequest(
                workflow_id=reply_workflow_id(reply_id),
                run_id=ANSWER_RUN,
                journey=REPLIES_JOURNEY,
                journey_version="1",
                step="confirm" if confirm else "answer",
                customer_id=row.customer_id,
                order_id=row.order_id,
                category="transactional",
                channel="sms",
                template_name=name,
                template=template,
                context=_template_context(session, row),
                at=row.received_at,  # the workflow sets its own time
                policy=(
                    PolicyOverride(quiet_hours=NO_QUIET_HOURS, cap=EXEMPT, reason=CONFIRM_REASON) if confirm else None
                ),
                deliver=False,
            )
            return plan

    @activity.defn(name="post_reply")
    def post_reply(self, post: WebhookPost) -> str | None:
        """POST the reply to the shop's customer service, signed as the webhook channel signs
        (`X-Journeys-Signature`; `Idempotency-Key` = the reply id, the same on every retry).
        A 2xx returns None; a 4xx returns the refusal (permanent, recorded on the reply); 408,
        429, 5xx, timeouts and connection errors raise, and Temporal tries again."""
        if not self.webhook_secret:
            return "JOURNEYS_WEBHOOK_SECRET is not set: replies are not posted to customer service unsigned"
        with self.store.transaction() as session:
            row = session.get(SmsReplyRow, post.reply_id)
            if row is None:
                return f"no reply {post.reply_id} is logged"
            payload = customer_service_body(session, row)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": post.reply_id,
            SIGNATURE_HEADER: sign(self.webhook_secret, body, int(time.time())),
        }
        try:
            answer = self.http.post(post.url, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as err:
            raise ApplicationError(f"customer service at {post.url} did not answer: {err}") from err
        if 200 <= answer.status_code < 300:
            return None
        detail = f"customer service at {post.url} answered {answer.status_code}: {answer.text[:300]}"
        if answer.status_code in (408, 425, 429) or answer.status_code >= 500:
            retry_after = answer.headers.get("Retry-After", "")
            raise ApplicationError(
                detail, next_retry_delay=timedelta(seconds=int(retry_after)) if retry_after.isdigit() else None
            )
        return detail

    @activity.defn(name="record_reply_outcome")
    def record_reply_outcome(self, outcome: ReplyOutcome) -> None:
        """Put what was done on the reply: its action, the ledger row of what was sent back (found
        by its key, whatever the send's outcome), when, and why not. Safe to retry."""
        with self.store.transaction() as session:
            row = session.get(SmsReplyRow, outcome.reply_id)
            if row is None:
                return
            if outcome.step is not None:
                sent = queries.find_ledger_row(session, reply_workflow_id(outcome.reply_id), ANSWER_RUN, outcome.step)
                row.answer_id = sent.id if sent is not None else None
            row.action = row.action or outcome.action
            row.handled_at = outcome.handled_at
            row.error = outcome.error[:2000] if outcome.error else None

    @activity.defn(name="start_unanswered_replies")
    async def start_unanswered_replies(self, request: SweepRequest) -> SweepReport:
        """Start the answer of each reply logged but not handled (the hook never ran: the API or
        Temporal was down), logged within SWEEP_WINDOW and at least SWEEP_GRACE ago (the hook's
        own start comes first). A reply whose answer was started before is left as it is."""
        if self.client is None:
            raise ApplicationError("this worker has no Temporal client to start answers with", non_retryable=True)
        with self.store.transaction() as session:
            query = (
                select(SmsReplyRow.id)
                .where(
                    SmsReplyRow.handled_at.is_(None),
                    SmsReplyRow.received_at >= request.at - SWEEP_WINDOW,
                    SmsReplyRow.received_at <= request.at - SWEEP_GRACE,
                )
                .order_by(SmsReplyRow.received_at)
                .limit(SWEEP_BATCH)
            )
            waiting = list(session.scalars(query))
        report = SweepReport()
        for reply_id in waiting:
            if await start_answer(self.client, reply_id, activity.info().task_queue):
                report.started += 1
            else:
                report.already += 1
        return report


# ----------------------------------------------------------------------------- what is sent


def _answered(session, row: SmsReplyRow) -> MessageRow | None:
    return session.get(MessageRow, row.message_id) if row.message_id else None


def _order_id(session, row: SmsReplyRow, answered: MessageRow | None) -> str | None:
    """The order the reply most likely concerns: the intake's, else the answered message's, else
    the customer's latest."""
    if row.order_id:
        return row.order_id
    if answered is not None and answered.order_id:
        return answered.order_id
    if row.customer_id:
        latest = queries.orders_of_customer(session, row.customer_id, limit=1)
        return latest[0] if latest else None
    return None


def _order(session, order_id: str | None) -> dict[str, Any] | None:
    """The order as its events tell it: id, status, amount, items and times, as far as known."""
    if order_id is None:
        return None
    events = queries.events_of_order(session, order_id)
    if not events:
        return {"order_id": order_id}
    order = order_context(order_id, events)
    wanted = ("order_id", "status", "amount", "items", "created_at", "paid_at", "shipped_at", "delivered_at")
    return {key: order[key] for key in wanted if order.get(key) is not None}


def _template_context(session, row: SmsReplyRow) -> dict[str, Any]:
    """What an answer's template may read: the reply as `event` (type sms.replied, `data.text` as
    the logged sms.replied event has it; no number: it would only be one more copy of it in the
    workflow's history) and its order."""
    answered = _answered(session, row)
    order = _order(session, _order_id(session, row, answered)) or {}
    event = {
        "type": "sms.replied",
        "occurred_at": row.received_at.isoformat(),
        "customer_id": row.customer_id,
        "order_id": order.get("order_id"),
        "data": {"text": row.content, "reply_id": row.id},
    }
    return {"event": event, "order": order}


def customer_service_body(session, row: SmsReplyRow) -> dict[str, Any]:
    """The body of a customer-service post (docs/journeys.md, "Answering replies")."""
    answered = _answered(session, row)
    message = (
        {
            "id": answered.id,
            "journey": answered.journey,
            "step": answered.step,
            "template": answered.template,
            "sent_at": answered.at.isoformat(),
        }
        if answered is not None
        else None
    )
    return {
        "reply_id": row.id,
        "provider": row.provider,
        "number": row.number,
        "content": row.content,
        "received_at": row.received_at.isoformat(),
        "customer_id": row.customer_id,
        "message": message,
        "order": _order(session, _order_id(session, row, answered)),
    }
