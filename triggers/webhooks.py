"""Provider webhooks: what Twilio and SendGrid tell us after a send.

- `POST /webhooks/twilio/status`: a message's delivery status (StatusCallback).
- `POST /webhooks/twilio/inbound`: an SMS reply; STOP and its kin unsubscribe the number, START
  and UNSTOP subscribe it again (Twilio's `OptOutType` is honoured where Twilio sends it).
- `POST /webhooks/sendgrid/events`: SendGrid's signed Event Webhook (delivered, open, click,
  bounce, dropped, unsubscribe, group_unsubscribe, spamreport).
- `GET`/`POST /unsubscribe`: the List-Unsubscribe link of a marketing email (RFC 8058 one-click
  POST; a GET only shows a button, as mail scanners follow links), signed with JOURNEYS_SECRET.

Every request's signature is checked over the raw body before anything in it is read: Twilio's
`X-Twilio-Signature` with the account's Auth Token and the public URL the request was made to,
SendGrid's ECDSA signature with the Event Webhook's public key and a timestamp no older than five
minutes. A bad, missing or uncheckable signature (no key configured) answers 403 and changes
nothing. Statuses only move a message forward; an event delivered twice is applied once.
"""

from __future__ import annotations

import binascii
import hmac
import html
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from twilio.request_validator import RequestValidator

from core.replies import START_WORDS, STOP_WORDS
from core.signing import unsubscribe_token
from definitions.loader import Definitions
from rules.replies import normalised
from store import queries
from store.db import Store
from triggers.http import read_body
from triggers.reply_intake import IncomingReply, ReplyIntake

log = logging.getLogger("journeys.webhooks")

# Twilio's own opt-out and opt-in words are core/replies.py's STOP_WORDS and START_WORDS: Twilio
# blocks or unblocks the sender on them and confirms itself. Every other reply, 退订 and TD among
# them, is the shop's reply rules' to decide.

#: Twilio message statuses as ledger statuses (the rest, such as queued or sending, say nothing new).
TWILIO_STATUS = {
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
    "read": "opened",
}

#: SendGrid events that move a message, and the ledger status they move it to.
#: `processed` is SendGrid taking the message: it settles a send whose answer was lost.
SENDGRID_STATUS = {
    "processed": "sent",
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "dropped": "failed",
}

#: How old a SendGrid signature's timestamp may be, in seconds, before the request counts as a replay.
MAX_SIGNATURE_AGE = 300

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class WebhookConfig(BaseModel):
    """What verifying provider webhooks needs; a webhook whose key is missing refuses every request."""

    public_url: str | None = Field(default=None, description="The base URL providers call (JOURNEYS_PUBLIC_URL).")
    twilio_auth_token: str | None = None
    sendgrid_public_key: str | None = Field(default=None, description="SendGrid's Event Webhook verification key.")
    unsubscribe_secret: str | None = Field(
        default=None, description="Signs one-click unsubscribe links (JOURNEYS_SECRET)."
    )
    max_body_bytes: int = 1_048_576
    aliyun_push_token: str | None = Field(
        default=None,
        description="The secret path part of Aliyun's push URLs (ALIYUN_SMS_PUSH_TOKEN); without it they are refused.",
    )


class WebhookAnswer(BaseModel):
    applied: int = Field(0, description="Events that changed a message or a subscription.")
    duplicates: int = Field(0, description="Events already applied before: dropped.")
    ignored: int = Field(0, description="Events that say nothing new (an earlier status, an unknown message).")


def webhook_routes(
    store: Store,
    config: WebhookConfig,
    now: Callable[[], float] = time.time,
    intake: ReplyIntake | None = None,
) -> APIRouter:
    """The providers' webhooks; `intake` takes in SMS replies (the shop's reply rules, the event
    log, the answering hook); without it, the built-in rules and no hook."""
    router = APIRouter(tags=["provider webhooks"])
    intake = intake or ReplyIntake(store, Definitions())
    twilio = RequestValidator(config.twilio_auth_token) if config.twilio_auth_token else None
    sendgrid = _sendgrid_verifier(config.sendgrid_public_key)
    refused = {403: {"description": "Missing or bad signature, or no verification key configured."}}

    def twilio_verified(request: Request, body: bytes) -> dict[str, list[str]] | None:
        """The form Twilio posted, or None when its signature does not hold."""
        signature = request.headers.get("x-twilio-signature")
        if twilio is None or not config.public_url or not signature:
            return None
        url = config.public_url.rstrip("/") + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            form = _Form(parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            return None
        return form if twilio.validate(url, form, signature) else None

    def forbidden(what: str) -> JSONResponse:
        log.warning("refused a %s webhook: bad, missing or unverifiable signature", what)
        return JSONResponse({"detail": f"{what} signature missing or invalid"}, status_code=403)

    @router.post(
        "/webhooks/twilio/status", response_model=WebhookAnswer, responses=refused, summary="Twilio message status"
    )
    async def twilio_status(request: Request) -> Response:
        body = await read_body(request, config.max_body_bytes)
        form = twilio_verified(request, body) if body is not None else None
        if form is None:
            return forbidden("Twilio")
        sid, status = form.first("MessageSid"), form.first("MessageStatus") or form.first("SmsStatus")
        key = request.headers.get("i-twilio-idempotency-token") or f"{sid}:{status}"
        error_code = form.first("ErrorCode")
        new_status = TWILIO_STATUS.get(status or "")

        def apply(session) -> str:
            row = queries.message_for_provider(session, request.query_params.get("message_id"), sid)
            if queries.seen_provider_event(session, "twilio", key, f"status:{status}", row.id if row else None, _now()):
                return "duplicates"
            if row is None or new_status is None:
                return "ignored"
            error = f"Twilio {error_code}" if error_code and error_code != "0" else None
            reason = status if new_status in ("undelivered", "failed") else None
            changed = queries.advance_status(row, new_status, _now(), reason=reason, error=error)
            return "applied" if changed else "ignored"

        return _answer(await store.run(apply))

    @router.post("/webhooks/twilio/inbound", responses=refused, summary="Twilio inbound SMS: a reply (回复记录)")
    async def twilio_inbound(request: Request) -> Response:
        body = await read_body(request, config.max_body_bytes)
        form = twilio_verified(request, body) if body is not None else None
        if form is None:
            return forbidden("Twilio")
        number, text = form.first("From"), form.first("Body") or ""
        if number:
            key = form.first("MessageSid") or f"{number}:{text}:{time.time_ns()}"
            opt = _opt_action(form.first("OptOutType"), text)
            reply = IncomingReply(provider="twilio", key=key, number=number, text=text, at=None, opt=opt)
            result = await intake.take([reply])
            outcome = "logged" if result.logged else "a duplicate"
            log.info("SMS reply %s %s", form.first("MessageSid") or "without a MessageSid", outcome)
        return Response(EMPTY_TWIML, media_type="text/xml")

    @router.post(
        "/webhooks/sendgrid/events", response_model=WebhookAnswer, responses=refused, summary="SendGrid Event Webhook"
    )
    async def sendgrid_events(request: Request) -> Response:
        body = await read_body(request, config.max_body_bytes)
        signature = request.headers.get(EventWebhookHeader.SIGNATURE)
        timestamp = request.headers.get(EventWebhookHeader.TIMESTAMP)
        if body is None or sendgrid is None or not signature or not timestamp or not timestamp.isdigit():
            return forbidden("SendGrid")
        if abs(now() - int(timestamp)) > MAX_SIGNATURE_AGE:
            return forbidden("SendGrid (timestamp too old)")
        try:
            valid = sendgrid.verify_signature(body.decode(), signature, timestamp)
        except (UnicodeDecodeError, binascii.Error, ValueError):
            valid = False
        if not valid:
            return forbidden("SendGrid")
        try:
            events = json.loads(body)
        except json.JSONDecodeError as err:
            return JSONResponse({"detail": f"the body is not JSON: {err}"}, status_code=422)
        if not isinstance(events, list):
            return JSONResponse({"detail": "SendGrid posts an array of events"}, status_code=422)

        def apply(session) -> WebhookAnswer:
            answer = WebhookAnswer()
            for event in events:
                outcome = _sendgrid_event(session, event) if isinstance(event, dict) else "ignored"
                setattr(answer, outcome, getattr(answer, outcome) + 1)
            return answer

        answer = await store.run(apply)
        return JSONResponse(answer.model_dump())

    def unsubscribe_row(session, message_id: str, token: str):
        """The message a link was made for, when its token is ours."""
        if not config.unsubscribe_secret:
            return None
        if not hmac.compare_digest(unsubscribe_token(config.unsubscribe_secret, message_id), token):
            return None
        return queries.message_for_provider(session, message_id, None)

    @router.get("/unsubscribe", response_class=HTMLResponse, summary="The unsubscribe link in a marketing email")
    async def unsubscribe_page(message_id: str = "", token: str = "") -> HTMLResponse:
        # A GET never unsubscribes (mail scanners follow links): it shows a button that POSTs.
        row = await store.run(lambda session: unsubscribe_row(session, message_id, token))
        if row is None:
            return HTMLResponse(_PAGE.format(text="This unsubscribe link is not valid."), status_code=403)
        action = html.escape(f"/unsubscribe?message_id={message_id}&token={token}")
        form = f'<form method="post" action="{action}"><button type="submit">Unsubscribe</button></form>'
        return HTMLResponse(_PAGE.format(text=f"Stop marketing email to {html.escape(row.address or '')}? {form}"))

    @router.post("/unsubscribe", response_class=HTMLResponse, summary="One-click unsubscribe (RFC 8058)")
    async def unsubscribe_now(message_id: str = "", token: str = "") -> HTMLResponse:
        def apply(session) -> str | None:
            row = unsubscribe_row(session, message_id, token)
            if row is None or not row.address:
                return None
            queries.add_suppression(session, "email", row.address, "marketing", "unsubscribe link", _now())
            # Attributed to the message, for the effect report's unsubscribes (a second click is no news).
            queries.seen_provider_event(session, "journeys", f"unsubscribe:{row.id}", "unsubscribe", row.id, _now())
            return row.address

        address = await store.run(apply)
        if address is None:
            return HTMLResponse(_PAGE.format(text="This unsubscribe link is not valid."), status_code=403)
        return HTMLResponse(_PAGE.format(text=f"{html.escape(address)} will get no more marketing email."))

    return router


_PAGE = '<!doctype html><meta charset="utf-8"><title>Unsubscribe</title><p>{text}</p>'


def _sendgrid_event(session, event: dict) -> str:
    kind = str(event.get("event") or "")
    key = str(event.get("sg_event_id") or "")
    provider_id = str(event.get("sg_message_id") or "").split(".", 1)[0] or None
    row = queries.message_for_provider(session, event.get("message_id"), provider_id)
    # The same event again, or applied by a concurrent delivery at this moment: a duplicate.
    if key and queries.seen_provider_event(session, "sendgrid", key, kind, row.id if row else None, _now()):
        return "duplicates"
    address = str(event.get("email") or "").strip().lower() or (row.address if row else None)
    at = _event_time(event)
    if kind in ("unsubscribe", "group_unsubscribe", "spamreport") and address:
        queries.add_suppression(session, "email", address, "marketing", f"sendgrid {kind}", at)
        return "applied"
    if kind == "group_resubscribe" and address:
        # A resubscribe to the marketing group lifts an unsubscribe, never a hard bounce.
        return "applied" if queries.remove_suppression(session, "email", address, scope="marketing") else "ignored"
    if kind == "bounce":
        hard = event.get("type", "bounce") != "blocked"  # "blocked" is a soft bounce: the address may work later
        if hard and address:
            queries.add_suppression(session, "email", address, "all", "sendgrid hard bounce", at)
        error = f"{event.get('status') or ''} {event.get('reason') or ''}".strip() or None
        moved = row is not None and queries.advance_status(
            row, "undelivered", at, reason="bounced" if hard else "blocked", error=error
        )
        return "applied" if moved or hard else "ignored"
    status = SENDGRID_STATUS.get(kind)
    if row is None or status is None:
        return "ignored"
    reason = "dropped" if kind == "dropped" else None
    if row.provider_id is None and provider_id:
        row.provider_id = provider_id
    if row.status == "unknown" and status != "failed":  # SendGrid had it after all
        row.reason = None
    return "applied" if queries.advance_status(row, status, at, reason=reason, error=event.get("reason")) else "ignored"


class _Form(dict):
    """A parsed form as Twilio's validator reads it (several values a name)."""

    def getlist(self, name: str) -> list[str]:
        return self.get(name, [])

    def first(self, name: str) -> str | None:
        values = self.get(name)
        return values[0] if values else None


def _opt_action(opt_out_type: str | None, text: str) -> Literal["stop", "start", "help"] | None:
    """Twilio's own handling of an inbound SMS: 'stop' or 'start' (Twilio has blocked or unblocked
    the sender and answered it), 'help' (Twilio answered), or None: the shop's reply rules decide.
    Twilio's classification (`OptOutType`, Advanced Opt-Out) wins when given."""
    if opt_out_type:
        return {"STOP": "stop", "START": "start", "HELP": "help"}.get(opt_out_type.upper())
    word = normalised(text)
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    return None


def _sendgrid_verifier(public_key: str | None) -> EventWebhook | None:
    if not public_key:
        return None
    try:
        return EventWebhook(public_key.strip())
    except (ValueError, TypeError) as err:
        raise ValueError(f"SENDGRID_WEBHOOK_PUBLIC_KEY is not a usable public key: {err}") from err


def _event_time(event: dict) -> datetime:
    stamp = event.get("timestamp")
    if isinstance(stamp, int | float) and stamp > 0:
        return datetime.fromtimestamp(stamp, UTC)
    return _now()


def _now() -> datetime:
    return datetime.now(UTC)


def _answer(outcome: str) -> JSONResponse:
    answer = WebhookAnswer()
    setattr(answer, outcome, 1)
    return JSONResponse(answer.model_dump())
