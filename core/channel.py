"""The one small interface every channel adapter implements.

An adapter sends one rendered message and returns the provider's id for it, or raises a
ChannelError saying whether trying again can help. The ledger id (`message_id`) travels with the
message so a provider can deduplicate and its status callbacks can find the record.

A send whose answer was lost (a timeout, a worker killed mid-request) leaves the message *in
doubt*: the provider may have taken it. Each adapter says how such a doubt is settled before any
second attempt (`settles_doubt`), and the send activity follows it; see `activities.journey`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

#: How a channel settles a send in doubt before it sends again:
#: - `lookup`: the adapter asks the provider for the earlier attempt (Twilio's message list);
#: - `event`: the provider's signed event webhook reports the ledger id of every message it took
#:   (SendGrid's `processed`); the send waits for it, up to the channel's `reconcile_seconds`;
#: - `resend`: the receiver deduplicates by the ledger id (the signed webhook's Idempotency-Key,
#:   the outbox), so sending again is safe;
#: - `never`: nothing can tell, so the message is not sent again and is marked `unknown`.
DoubtPolicy = Literal["lookup", "event", "resend", "never"]


class OutgoingMessage(BaseModel):
    message_id: str
    channel: str
    to: str
    subject: str | None = None
    body: str
    journey: str
    step: str
    customer_id: str
    category: str
    resource: str | None = Field(
        default=None, description="What the message hands out (a coupon type), for the shop's system to issue."
    )
    provider_template: str | None = Field(default=None, description="A provider-side template (SendGrid d-...).")
    template_data: dict[str, Any] | None = Field(default=None, description="The data a provider template renders.")
    earlier_attempt_at: datetime | None = Field(
        default=None,
        description="Set when an earlier attempt of this message may have reached the provider (its outcome "
        "is unknown): an adapter that can, looks it up before sending again.",
    )


class SendReceipt(BaseModel):
    provider_id: str


class ChannelError(Exception):
    """A send that failed; `retryable` says whether the same send may succeed later."""

    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        unsubscribed: bool = False,
        in_doubt: bool = False,
    ):
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after  # seconds the provider asked us to wait (rate limits)
        self.unsubscribed = unsubscribed  # the recipient opted out at the provider
        # The provider may have taken the message all the same (no answer came, or an earlier
        # attempt could not be looked up): it stays in doubt until settled.
        self.in_doubt = in_doubt


class RetryableChannelError(ChannelError):
    """Rate limits, 5xx, timeouts, connection errors: Temporal's retry policy tries again."""

    retryable = True


class PermanentChannelError(ChannelError):
    """The provider refused this message for good (bad number, bad request): recorded as failed."""

    retryable = False


class Channel(Protocol):
    name: str  # the channel it serves: sms, email, webhook, outbox
    provider: str  # who delivers: twilio, sendgrid, outbox
    settles_doubt: DoubtPolicy
    reconcile_seconds: float  # `event`: how long to wait for the provider's event before sending again

    def send(self, message: OutgoingMessage) -> SendReceipt: ...

    # Optional, for a channel with more than one provider (`sms`: Aliyun for +86, Twilio or the
    # outbox for the rest, channels.SmsRouter): `provider_for(address) -> str` names the provider
    # a message to `address` goes through ("aliyun", "twilio", "outbox"), so it is rendered for
    # that provider (Aliyun sends a registered template, not free text). Without it, `provider`.
    #
    # Optional, for a provider with a bulk call: `send_many(messages) -> list[BulkResult]`, one
    # result per message in order (see `send_bulk`). A message with `earlier_attempt_at` set is
    # settled the adapter's way first, as `send` does.


#: What a bulk send gives back for each message, in the order given: the provider's receipt, or
#: the error for that message alone (a request refused as a whole gives each of its messages the
#: same error). A message whose answer was lost is an error with `in_doubt` set.
BulkResult = SendReceipt | ChannelError


#: Messages handed to a channel in one bulk call when it says nothing else (`bulk_limit`): a
#: call must end well within the heartbeat of the activity making it, also one call at a time.
BULK_LIMIT = 100


def bulk_limit(channel: Channel) -> int | None:
    """How many messages one `send_bulk` call to `channel` should carry at most: its own
    `bulk_limit` (None: any number, the outbox's one write), else BULK_LIMIT."""
    return getattr(channel, "bulk_limit", BULK_LIMIT)


def send_bulk(channel: Channel, messages: list[OutgoingMessage]) -> list[BulkResult]:
    """Hand `messages` to `channel` at once: through its `send_many` where it has one (the
    outbox: one write; SendGrid: up to 1,000 personalizations a request; Aliyun: SendBatchSms,
    100 numbers a call; Twilio: bounded concurrent calls), else one `send` after another. One
    result per message, in order; never raises a ChannelError (each message carries its own)."""
    send_many = getattr(channel, "send_many", None)
    if callable(send_many):
        results = send_many(messages)
        if len(results) != len(messages):
            raise RuntimeError(f"{channel.provider} answered {len(results)} results for {len(messages)} messages")
        return results
    return send_each(channel, messages)


def send_each(channel: Channel, messages: list[OutgoingMessage]) -> list[BulkResult]:
    """One `send` per message, each error kept with its message."""
    results: list[BulkResult] = []
    for message in messages:
        try:
            results.append(channel.send(message))
        except ChannelError as err:
            results.append(err)
    return results
