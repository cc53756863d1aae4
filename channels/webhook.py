"""Any other channel (app push, WeChat or DingTalk bridges): POST the message as JSON to a
configured URL, signed with HMAC-SHA256 so the receiver can tell it came from Journeys.

    POST {JOURNEYS_WEBHOOK_URL}
    Content-Type: application/json
    Idempotency-Key: <message_id>              (the same on every retry of one message)
    X-Journeys-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

The receiver recomputes the HMAC over the raw body with the shared secret (`core.signing.
verify_signature` does it) and refuses stale timestamps. Error classes as for the providers: 2xx is sent;
408, 429 (honouring Retry-After), 5xx, timeouts and connection errors are retried; any other 4xx
is a permanent refusal.
"""

from __future__ import annotations

import json
import time

import requests

from core.channel import OutgoingMessage, PermanentChannelError, RetryableChannelError, SendReceipt
from core.signing import SIGNATURE_HEADER, sign

RETRYABLE_STATUSES = {408, 425, 429}


class WebhookChannel:
    name = "webhook"
    provider = "webhook"
    settles_doubt = "resend"  # the receiver deduplicates by the Idempotency-Key, our ledger id
    reconcile_seconds = 0.0

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
            raise RetryableChannelError(
                f"the webhook at {self.url} did not answer in time", code="timeout", in_doubt=True
            ) from err
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
