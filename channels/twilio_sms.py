"""SMS through Twilio's Messages API, with the `twilio` SDK.

Always an explicit HTTP timeout and never the SDK's own retries (they would repeat a POST):
Temporal's retry policy decides. Permanent refusals (a bad or landline number, an opted-out
recipient, bad credentials) fail the message with Twilio's code; 429, 5xx, connection errors and
timeouts are retried. A timeout leaves the outcome unknown, so a retry first looks the message
up at Twilio (same recipient and body, since the first attempt) and never sends it twice.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from core.channel import (
    BulkResult,
    ChannelError,
    OutgoingMessage,
    PermanentChannelError,
    RetryableChannelError,
    SendReceipt,
)

#: The SDK logs every request's URL and form at INFO: the recipient's number and the body. Logs
#: must hold no contact data, so only its warnings and errors pass.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)

#: Twilio error codes that no retry will change.
PERMANENT_CODES = {
    20003: "authentication failed",
    21211: "invalid 'To' number",
    21408: "no permission to send to this region",
    21606: "the 'From' number cannot send this message",
    21610: "the recipient replied STOP (unsubscribed)",
    21612: "the 'To' number cannot be reached from this 'From' number",
    21614: "the 'To' number is not a mobile number",
    21617: "the body is too long",
}
UNSUBSCRIBED = 21610
#: How many requests a page of messages (`send_many`) has at Twilio at once, by default.
BULK_CONCURRENCY = 8


class TwilioSmsChannel:
    name = "sms"
    provider = "twilio"
    settles_doubt = "lookup"
    reconcile_seconds = 0.0

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        messaging_service_sid: str | None = None,
        from_number: str | None = None,
        status_callback_url: str | None = None,
        timeout: float = 10.0,
        api_base_url: str | None = None,
        bulk_concurrency: int = BULK_CONCURRENCY,
    ):
        if not (messaging_service_sid or from_number):
            raise ValueError("Twilio needs TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM")
        self.client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout))
        if api_base_url:  # a local test provider or a proxy
            self.client.api.base_url = api_base_url
        self.messaging_service_sid = messaging_service_sid
        self.from_number = from_number
        self.status_callback_url = status_callback_url
        if bulk_concurrency < 1:
            raise ValueError("bulk_concurrency must be at least 1")
        self.bulk_concurrency = bulk_concurrency

    def send(self, message: OutgoingMessage) -> SendReceipt:
        if message.earlier_attempt_at is not None:
            earlier = self._find_earlier(message)
            if earlier is not None:
                return SendReceipt(provider_id=earlier)
        sender = (
            {"messaging_service_sid": self.messaging_service_sid}
            if self.messaging_service_sid
            else {"from_": self.from_number}
        )
        callback = (
            {"status_callback": f"{self.status_callback_url}?message_id={message.message_id}"}
            if self.status_callback_url
            else {}
        )
        try:
            created = self.client.messages.create(to=message.to, body=message.body, **sender, **callback)
        except TwilioRestException as err:
            raise _classify(err) from err
        except requests.ConnectTimeout as err:  # never connected: nothing was sent
            raise RetryableChannelError(f"cannot reach Twilio: {err}", code="connection") from err
        except requests.Timeout as err:
            raise RetryableChannelError(
                f"Twilio did not answer in time ({err}); outcome unknown", code="timeout", in_doubt=True
            ) from err
        except requests.RequestException as err:
            refused = "NewConnectionError" in repr(err) or "Connection refused" in str(err)
            raise RetryableChannelError(f"cannot reach Twilio: {err}", code="connection", in_doubt=not refused) from err
        return SendReceipt(provider_id=created.sid)

    def send_many(self, messages: list[OutgoingMessage]) -> list[BulkResult]:
        """A page of messages. Twilio has no batch call, so each message is its own `send` (a
        message in doubt looks its earlier attempt up first, as ever), `bulk_concurrency` of them
        at once: a page takes a fraction of the time one after another would, without more
        connections at once than the account's concurrency allows. Each result stays with its
        message, in order."""
        if len(messages) <= 1 or self.bulk_concurrency == 1:
            return [self._result(message) for message in messages]
        with ThreadPoolExecutor(max_workers=min(self.bulk_concurrency, len(messages))) as pool:
            return list(pool.map(self._result, messages))

    def _result(self, message: OutgoingMessage) -> BulkResult:
        try:
            return self.send(message)
        except ChannelError as err:
            return err

    def _find_earlier(self, message: OutgoingMessage) -> str | None:
        """The sid of this message if an earlier attempt reached Twilio after all."""
        since: datetime = message.earlier_attempt_at - timedelta(minutes=1)
        try:
            sent = self.client.messages.list(to=message.to, date_sent_after=since, limit=50)
        except (TwilioRestException, requests.RequestException) as err:
            raise RetryableChannelError(
                f"cannot check Twilio for an earlier attempt: {err}", code="lookup", in_doubt=True
            ) from err
        for candidate in sent:
            if candidate.body == message.body and (candidate.date_created is None or candidate.date_created >= since):
                return candidate.sid
        return None


def _classify(err: TwilioRestException):
    code = err.code or 0
    if code in PERMANENT_CODES:
        return PermanentChannelError(
            f"Twilio {code}: {PERMANENT_CODES[code]} ({err.msg})", code=str(code), unsubscribed=code == UNSUBSCRIBED
        )
    if err.status == 429 or err.status >= 500:
        return RetryableChannelError(f"Twilio {err.status}: {err.msg}", code=str(code or err.status))
    return PermanentChannelError(f"Twilio {err.status} {code}: {err.msg}", code=str(code or err.status))
