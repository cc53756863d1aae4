"""Any other channel (app push, WeChat or DingTalk bridges): POST the message as JSON to a
configured URL, signed with HMAC-SHA256 so the receiver can tell it came from Journeys.

    POST {JOURNEYS_WEBHOOK_URL}
    Content-Type: application/json
    Idempotency-Key: <message_id>              (the same on every retry of one message)
    X-Journeys-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

The receiver recomputes the HMAC over the raw body with the shared secret (`verify_signature`
below does it) and refuses stale timestamps. Error classes as for the providers: 2xx is sent;
408, 429 (honouring Retry-After), 5xx, timeouts and connection errors are retried; any other 4xx
is a permanent refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests

from channels.base import OutgoingMessage, PermanentChannelError, RetryableChannelError, SendReceipt

SIGNATURE_HEADER = "X-Journeys-Signature"
RETRYABLE_STATUSES = {408, 425, 429}


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, *, now: float | None = None, tolerance: int = 300) -> bool:
    """For receivers: does `header` sign `body` with `secret`, within `tolerance` seconds?"""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    stamp = parts.get("t", "")
    if not stamp.isdigit() or abs((now if now is not None else time.time()) - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, int(stamp)), f"t={stamp},v1={parts.get('v1', '')}")


class WebhookChannel:
    name = "webhook"
    provider = "webhook"

    def __init__(self, url: str, secret: str, *, timeout: float = 10.0):
        if not secret:
            raise ValueError("the webhook channel needs JOURNEYS_WEBHOOK_SECRET to sign its requests")
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.session = requests.Session()

    def send(self, message: OutgoingMessage) -> SendReceipt:
        payload = message.model_dump(mode="json", exclude={"earlier_attempt_at"})
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.message_id,
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
        }
        try:
            answer = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except requests.Timeout as err:
            raise RetryableChannelError(f"the webhook at {self.url} did not answer in time", code="timeout") from err
        except requests.RequestException as err:
            raise RetryableChannelError(f"cannot reach the webhook at {self.url}: {err}", code="connection") from err
        if 200 <= answer.status_code < 300:
            return SendReceipt(provider_id=_provider_id(answer) or f"webhook:{message.message_id}")
        detail = f"webhook {answer.status_code}: {answer.text[:300]}"
        if answer.status_code in RETRYABLE_STATUSES or answer.status_code >= 500:
            retry_after = answer.headers.get("Retry-After", "")
            raise RetryableChannelError(
                detail, code=str(answer.status_code), retry_after=float(retry_after) if retry_after.isdigit() else None
            )
        raise PermanentChannelError(detail, code=str(answer.status_code))


def _provider_id(answer: requests.Response) -> str | None:
    try:
        found = answer.json().get("id")
    except (ValueError, AttributeError):
        return None
    return str(found) if found else None
