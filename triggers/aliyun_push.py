"""Aliyun SMS's HTTP push (HTTP批量推送模式): delivery receipts (SmsReport) and replies (SmsUp).

- `POST /webhooks/aliyun/{token}/report`: a JSON array of receipts, `[{"phone_number",
  "send_time", "report_time", "success", "err_code", "err_msg", "sms_size", "biz_id", "out_id"}]`;
- `POST /webhooks/aliyun/{token}/up`: a JSON array of replies, `[{"phone_number", "send_time",
  "content", "sign_name", "dest_code", "sequence_id"}]`.

How Aliyun lets a receiver check a push (its documentation of SmsReport and SmsUp in HTTP batch
push mode, and of the receipt configuration in the SMS console, 回执消息配置): it does not. The
push is a plain HTTP(S) POST of JSON to the URL configured in the console, with no signature, no
AccessKey, no timestamp and no authentication header; Aliyun asks only for HTTP 200 with
`{"code": 0, "msg": ...}` (it checks that `code` is a number), retries a non-200 or a timeout
(after 1, 5 and 10 minutes, then gives up), and warns that receipts are not idempotent (the same
may come twice). The authenticated way to receive them is the other mode (MNS queues, pulled with
the AccessKey). So this receiver authenticates a push by what only Aliyun and we know:

1. the push URL holds a secret token (`ALIYUN_SMS_PUSH_TOKEN`, a long random string; HTTPS keeps
   it off the wire), compared in constant time. No token configured, or a wrong one: 403, a
   WARNING in the log (the route only: never the token tried, a number or a text), and a row in
   `provider_events` (provider `aliyun`, kind `refused:report` or `refused:up`) an operator can
   count; at most REFUSALS_RECORDED a minute are recorded (the log says when more were dropped),
   and retention deletes them with the other provider events;
2. a receipt must also be about a message we sent: `out_id` is our ledger id (sent as Aliyun's
   OutId) and the row went to that number, or `biz_id` (Aliyun's BizId, shared by a batch) and
   the number name a row. Anything else is ignored: a forged receipt with a good token and an
   unknown id changes nothing.

Receipts move a message forward only (`delivered`, or `undelivered` with reason `undelivered` and
Aliyun's `err_code` as the error): the same receipt twice applies once, a late one never moves a
status back, and one for a message in doubt (`sending`/`unknown`: the answer to its send was
lost) settles it and records its BizId. Replies go through the reply intake
(triggers/reply_intake.py) as Twilio's do.

What is processed, or can never be (an item that is not a receipt, an unknown message), is
answered 200 `{"code": 0}`; a body no retry can mend (not JSON, not an array, too big) 4xx; a
failure of ours (the store down) 503, which Aliyun retries.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from core.sms_registry import settled_by_lookup
from store import queries
from store import replies as reply_store
from store.db import Store
from triggers.http import read_body
from triggers.reply_intake import MAX_CLOCK_SKEW, IncomingReply, ReplyIntake, number_forms, storable

log = logging.getLogger("journeys.webhooks.aliyun")

#: Aliyun writes its times in Beijing time, without a zone.
BEIJING = ZoneInfo("Asia/Shanghai")
#: At most this many refused pushes a minute get a provider_events row (the log has every one).
REFUSALS_RECORDED = 100


class AliyunAnswer(BaseModel):
    """What Aliyun reads (`code` 0: received) and, beside it, what became of the items."""

    code: int = Field(0, description="0: received; Aliyun only checks that it is a number.")
    msg: str = "接收成功"
    applied: int = Field(0, description="Receipts that moved a message; replies logged now.")
    duplicates: int = Field(0, description="Items already applied or logged before: dropped.")
    ignored: int = Field(0, description="Items about no message of ours, saying nothing new, or malformed.")


def aliyun_push_routes(store: Store, push_token: str | None, intake: ReplyIntake, max_body_bytes: int) -> APIRouter:
    """The two push routes; `push_token` (ALIYUN_SMS_PUSH_TOKEN) is the secret their URLs must hold."""
    router = APIRouter(tags=["provider webhooks"])
    refused_doc = {
        403: {"description": "No ALIYUN_SMS_PUSH_TOKEN configured, or the URL's token is wrong."},
        413: {"description": "Body over the size limit."},
        422: {"description": "The body is not a JSON array."},
    }
    refusals = _RefusalCounter()

    async def refuse(route: str) -> JSONResponse:
        record = refusals.take()
        why = "no ALIYUN_SMS_PUSH_TOKEN configured" if not push_token else "wrong token in the URL"
        dropped = "" if record else f" (not recorded: over {REFUSALS_RECORDED} refusals this minute)"
        log.warning("refused an Aliyun %s push: %s%s", route, why, dropped)
        if record:
            now = datetime.now(UTC)
            key = f"refused:{now:%Y%m%dT%H%M%S}:{uuid.uuid4().hex}"  # random: every refusal its own row
            await store.run(lambda s: queries.seen_provider_event(s, "aliyun", key, f"refused:{route}", None, now))
        return JSONResponse({"code": 403, "msg": "push token missing or wrong"}, status_code=403)

    def allowed(given: str) -> bool:
        if not push_token:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), push_token.encode("utf-8"))

    async def pushed(token: str, route: str, request: Request) -> list[Any] | JSONResponse:
        """The items of an authenticated push, or the answer to one refused or unreadable."""
        if not allowed(token):
            return await refuse(route)
        body = await read_body(request, max_body_bytes)
        if body is None:
            return JSONResponse({"code": 413, "msg": f"the body is over {max_body_bytes} bytes"}, status_code=413)
        try:
            items = json.loads(body)
        except (ValueError, RecursionError) as err:
            return JSONResponse({"code": 422, "msg": f"the body is not JSON: {err}"[:300]}, status_code=422)
        if not isinstance(items, list):
            return JSONResponse({"code": 422, "msg": "Aliyun pushes a JSON array of items"}, status_code=422)
        return items

    @router.post(
        "/webhooks/aliyun/{token}/report",
        response_model=AliyunAnswer,
        responses=refused_doc,
        summary="Aliyun SMS delivery receipts (SmsReport, HTTP batch push)",
    )
    async def aliyun_report(token: str, request: Request) -> Response:
        items = await pushed(token, "report", request)
        if isinstance(items, JSONResponse):
            return items

        def apply(session) -> AliyunAnswer:
            answer = AliyunAnswer()
            for item in items:
                outcome = _receipt(session, item, intake.default_region) if isinstance(item, dict) else "ignored"
                setattr(answer, outcome, getattr(answer, outcome) + 1)
            return answer

        answer = await store.run(apply)
        return JSONResponse(answer.model_dump())

    @router.post(
        "/webhooks/aliyun/{token}/up",
        response_model=AliyunAnswer,
        responses=refused_doc,
        summary="Aliyun SMS replies (SmsUp, HTTP batch push): 回复记录",
    )
    async def aliyun_up(token: str, request: Request) -> Response:
        items = await pushed(token, "up", request)
        if isinstance(items, JSONResponse):
            return items
        replies, malformed = [], 0
        for item in items:
            reply = _reply(item)
            if reply is None:
                malformed += 1
            else:
                replies.append(reply)
        result = await intake.take(replies)
        answer = AliyunAnswer(applied=len(result.logged), duplicates=result.duplicates, ignored=malformed)
        return JSONResponse(answer.model_dump())

    return router


def _text(item: dict, name: str, limit: int = 200) -> str | None:
    """A field as text (Aliyun sends sequence_id as a number or a string), or None when absent."""
    value = item.get(name)
    if value is None or isinstance(value, dict | list):
        return None
    text = storable(str(value))
    return text[:limit] or None


def _time(text: str | None) -> datetime | None:
    """Aliyun's `2017-01-01 00:00:00` (or `20170101000000`), Beijing time; None when it is neither."""
    if not text:
        return None
    for shape in ("%Y-%m-%d %H:%M:%S", "%Y%m%d%H%M%S"):
        try:
            return datetime.strptime(text, shape).replace(tzinfo=BEIJING).astimezone(UTC)
        except ValueError:
            continue
    return None


def _success(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _receipt(session, item: dict, default_region: str) -> str:
    """One SmsReport item: applied, duplicates or ignored."""
    number, biz_id, out_id = _text(item, "phone_number", 40), _text(item, "biz_id", 120), _text(item, "out_id", 120)
    success = _success(item.get("success"))
    if not number or success is None or not (biz_id or out_id):
        return "ignored"
    _, forms = number_forms(number, default_region)
    row = reply_store.message_for_receipt(session, out_id, biz_id, forms)
    if row is None:
        return "ignored"
    status = "delivered" if success else "undelivered"
    err_code = _text(item, "err_code", 100)
    now = datetime.now(UTC)
    key = f"report:{row.id}:{status}:{err_code or ''}"
    # The same receipt again, or applied by a concurrent delivery at this moment: a duplicate.
    if queries.seen_provider_event(session, "aliyun", key, f"report:{status}", row.id, now):
        return "duplicates"
    reported = _time(_text(item, "report_time"))
    at = reported if reported is not None and abs(reported - now) <= MAX_CLOCK_SKEW else now
    # A send whose answer was lost, or settled by a lookup that gives no BizId: Aliyun's id now.
    if biz_id and (row.provider_id is None or row.provider_id == settled_by_lookup(out_id or "")):
        row.provider_id = biz_id
    if row.status == "unknown":
        row.reason = None
    if success:
        moved = queries.advance_status(row, "delivered", at)
    else:
        moved = queries.advance_status(row, "undelivered", at, reason="undelivered", error=err_code or "undelivered")
    return "applied" if moved else "ignored"


def _reply(item: Any) -> IncomingReply | None:
    """One SmsUp item as a reply, or None when it is not one (no number, no sequence_id)."""
    if not isinstance(item, dict):
        return None
    number, key = _text(item, "phone_number", 40), _text(item, "sequence_id")
    content = item.get("content")
    if not number or not key or not isinstance(content, str | int | float):
        return None
    return IncomingReply(
        provider="aliyun",
        key=key,
        number=number,
        text=str(content),
        at=_time(_text(item, "send_time")),
        sign_name=_text(item, "sign_name", 60),
        dest_code=_text(item, "dest_code", 40),
    )


class _RefusalCounter:
    """How many refusals were recorded this minute: a flood of forged pushes is logged, and
    fills the table no faster than REFUSALS_RECORDED rows a minute."""

    def __init__(self) -> None:
        self.minute, self.count = 0, 0

    def take(self) -> bool:
        minute = int(time.monotonic() // 60)
        if minute != self.minute:
            self.minute, self.count = minute, 0
        self.count += 1
        return self.count <= REFUSALS_RECORDED
