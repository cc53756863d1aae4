"""Email through SendGrid's v3 mail-send API, with the `sendgrid` SDK.

An explicit timeout; the rendered subject with HTML and text bodies; `custom_args` carrying the
ledger id (SendGrid's event webhook returns it); `categories` with the journey; for marketing
mail the ASM unsubscribe group and `List-Unsubscribe` headers. 202 is sent (the provider id is
`X-Message-Id`); a definition's `sendgrid_template_id` sends that dynamic template with the
message's data instead of our HTML; 400, 401, 403 and 413 are permanent; 429 waits for `X-RateLimit-Reset`; 5xx and
network errors are retried.

SendGrid has no idempotency key and no way to look a message up by our id, so a send whose answer
was lost (a timeout: SendGrid may have taken it) is never simply sent again. With the signed event
webhook configured, SendGrid's `processed` event carries our ledger id in `custom_args` and settles
it: the send waits for that event up to `reconcile_seconds`, and only then sends again. Without
the webhook nothing can settle it, so the message is not sent again: it is marked `unknown`.

A page of messages (`send_many`, for broadcasts) goes in as few requests as SendGrid allows: up to
1,000 personalizations a request, one per message with its own recipient and `custom_args`, for
messages whose bodies are otherwise the same (the same text, or the same provider template).
"""

from __future__ import annotations

import html
import json
import re
import time
import urllib.error

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from core.channel import (
    BulkResult,
    ChannelError,
    OutgoingMessage,
    PermanentChannelError,
    RetryableChannelError,
    SendReceipt,
)
from core.signing import unsubscribe_token

PERMANENT_STATUSES = {400, 401, 403, 413}
#: The most personalizations (recipients) SendGrid takes in one mail-send request.
PERSONALIZATION_LIMIT = 1000
_TAGS = re.compile(r"<[^>]+>")


def text_of(body_html: str) -> str:
    """A plain-text alternative of an HTML body."""
    spaced = re.sub(r"</p>|<br\s*/?>", "\n", body_html, flags=re.IGNORECASE)
    return html.unescape(_TAGS.sub("", spaced)).strip()


class SendGridEmailChannel:
    name = "email"
    provider = "sendgrid"

    def __init__(
        self,
        api_key: str,
        from_email: str,
        *,
        unsubscribe_group_id: int | None = None,
        unsubscribe_url: str | None = None,
        unsubscribe_secret: str | None = None,
        timeout: float = 10.0,
        host: str = "https://api.sendgrid.com",
        event_webhook: bool = False,
        reconcile_seconds: float = 900.0,
    ):
        self.client = SendGridAPIClient(api_key=api_key, host=host)
        self.client.client.timeout = timeout
        self.from_email = from_email
        self.unsubscribe_group_id = unsubscribe_group_id
        self.unsubscribe_url = unsubscribe_url
        self.unsubscribe_secret = unsubscribe_secret
        # Only the signed event webhook can tell whether a send in doubt reached SendGrid.
        self.settles_doubt = "event" if event_webhook else "never"
        self.reconcile_seconds = reconcile_seconds

    def request_body(self, message: OutgoingMessage) -> dict:
        body = {
            "personalizations": [{"to": [{"email": message.to}], "subject": message.subject or ""}],
            "from": {"email": self.from_email},
            "content": [
                {"type": "text/plain", "value": text_of(message.body)},
                {"type": "text/html", "value": message.body},
            ],
            "custom_args": {"message_id": message.message_id, "journey": message.journey, "step": message.step},
            "categories": [message.journey],
        }
        if message.provider_template:  # SendGrid renders its dynamic template with our data
            body["template_id"] = message.provider_template
            del body["content"]
            personalization = body["personalizations"][0]
            del personalization["subject"]
            personalization["dynamic_template_data"] = message.template_data or {}
        if message.category == "marketing":
            if self.unsubscribe_group_id is not None:
                body["asm"] = {"group_id": self.unsubscribe_group_id}
            if self.unsubscribe_url and self.unsubscribe_secret:
                token = unsubscribe_token(self.unsubscribe_secret, message.message_id)
                link = f"{self.unsubscribe_url}?message_id={message.message_id}&token={token}"
                body["headers"] = {
                    "List-Unsubscribe": f"<{link}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                }
        return body

    def send(self, message: OutgoingMessage) -> SendReceipt:
        answer = self._post(self.request_body(message))
        provider_id = answer.headers.get("X-Message-Id") or f"sendgrid:{message.message_id}"
        return SendReceipt(provider_id=provider_id)

    def send_many(self, messages: list[OutgoingMessage]) -> list[BulkResult]:
        """Send a page of messages in as few requests as SendGrid allows: messages whose request
        bodies differ only in what SendGrid takes per personalization (the recipient, the subject,
        a provider template's data, the ledger id in `custom_args`, the unsubscribe headers) share
        a request, up to `PERSONALIZATION_LIMIT` personalizations. Each personalization carries
        what `request_body` gives the message, so the event webhook finds each message by its
        ledger id as for a single send. A group of one, and a message in doubt, is sent by `send`.

        Every message of a request gets the request's `X-Message-Id` as its receipt: SendGrid
        reports each recipient's `sg_message_id` as that id and a suffix, and the event webhook
        finds the message by the ledger id (`custom_args`) first. A refused request gives each of
        its messages the same error; a lost answer leaves each of them in doubt."""
        results: list[BulkResult | None] = [None] * len(messages)
        groups: dict[str, list[tuple[int, dict, dict]]] = {}
        for index, message in enumerate(messages):
            if message.earlier_attempt_at is not None:
                continue  # sent alone below, as `send` sends it
            shared, personalization = _split(self.request_body(message))
            key = json.dumps(shared, sort_keys=True, ensure_ascii=False)
            groups.setdefault(key, []).append((index, shared, personalization))
        for members in groups.values():
            for start in range(0, len(members), PERSONALIZATION_LIMIT):
                chunk = members[start : start + PERSONALIZATION_LIMIT]
                if len(chunk) == 1:
                    continue  # a group of one: a normal send, below
                body = chunk[0][1] | {"personalizations": [personalization for _, _, personalization in chunk]}
                try:
                    answer = self._post(body)
                except ChannelError as err:
                    for index, _, _ in chunk:
                        results[index] = _copy(err)
                    continue
                request_id = answer.headers.get("X-Message-Id")
                for index, _, _ in chunk:
                    results[index] = SendReceipt(provider_id=request_id or f"sendgrid:{messages[index].message_id}")
        for index, message in enumerate(messages):
            if results[index] is None:
                try:
                    results[index] = self.send(message)
                except ChannelError as err:
                    results[index] = err
        return results

    def _post(self, body: dict):
        """One mail-send request; SendGrid's answer, or the ChannelError for its refusal or loss."""
        try:
            return self.client.client.mail.send.post(request_body=body)
        except http_errors.HTTPError as err:
            raise _classify(err) from err
        except TimeoutError as err:
            raise RetryableChannelError(
                f"SendGrid did not answer in time ({err}); outcome unknown", code="timeout", in_doubt=True
            ) from err
        except urllib.error.URLError as err:
            refused = isinstance(err.reason, ConnectionRefusedError)  # never connected: nothing was sent
            raise RetryableChannelError(
                f"cannot reach SendGrid: {err.reason}", code="connection", in_doubt=not refused
            ) from err
        except (ConnectionError, OSError) as err:  # the connection dropped mid-request
            raise RetryableChannelError(
                f"SendGrid's connection failed ({err}); outcome unknown", code="connection", in_doubt=True
            ) from err


#: What one message's request body holds per recipient: SendGrid takes these per personalization
#: (`custom_args` and `headers` in a personalization are that recipient's own).
_PER_MESSAGE = ("custom_args", "headers")


def _split(body: dict) -> tuple[dict, dict]:
    """A single message's request body as the part messages can share (from, content, template,
    categories, unsubscribe group) and its one personalization, which takes the message's own
    `custom_args` and headers (the unsubscribe link names the message)."""
    [personalization] = body["personalizations"]
    own = dict(personalization) | {name: body[name] for name in _PER_MESSAGE if name in body}
    shared = {name: value for name, value in body.items() if name != "personalizations" and name not in _PER_MESSAGE}
    return shared, own


def _copy(err: ChannelError) -> ChannelError:
    """The same error for another message of a refused request (each result its own exception)."""
    return type(err)(
        str(err), code=err.code, retry_after=err.retry_after, unsubscribed=err.unsubscribed, in_doubt=err.in_doubt
    )


def _classify(err: http_errors.HTTPError):
    status = err.status_code
    detail = err.body.decode(errors="replace") if isinstance(err.body, bytes) else str(err.body)
    if status in PERMANENT_STATUSES:
        return PermanentChannelError(f"SendGrid {status}: {detail[:300]}", code=str(status))
    retry_after = None
    if status == 429:
        reset = (err.headers or {}).get("X-RateLimit-Reset")
        if reset and reset.isdigit():
            retry_after = max(1.0, int(reset) - time.time())
    return RetryableChannelError(f"SendGrid {status}: {detail[:300]}", code=str(status), retry_after=retry_after)
