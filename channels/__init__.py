"""Channel adapters behind one interface (core.channel.Channel); the outbox is the default."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from channels.outbox import OutboxChannel
from core.channel import BulkResult, Channel, OutgoingMessage, SendReceipt, send_bulk
from core.vocabulary import CHANNELS

if TYPE_CHECKING:
    from core.config import Settings


class SmsRouter:
    """The `sms` channel with two providers: Aliyun for mainland numbers (+86), another adapter
    (Twilio) for the rest. Journeys keep writing `channel: sms`; the send activity asks
    `provider_for(address)` which provider a message goes through, to render it for that one.

    Both routes settle a send in doubt by looking it up (`lookup`): the same message goes the
    same route on its retry (the route is the number's), and its adapter looks the earlier attempt
    up. A route that deduplicates by the ledger id (`resend`) takes a lookup's retry just as well."""

    name = "sms"
    settles_doubt = "lookup"
    reconcile_seconds = 0.0

    def __init__(self, mainland: Channel, elsewhere: Channel):
        if elsewhere.settles_doubt not in ("lookup", "resend"):
            raise ValueError(f"the sms route {elsewhere.provider} cannot settle a send in doubt by a lookup")
        self.mainland = mainland
        self.elsewhere = elsewhere
        self.provider = f"{mainland.provider} (+86), {elsewhere.provider}"

    def route(self, address: str) -> Channel:
        return self.mainland if address.startswith("+86") else self.elsewhere

    def provider_for(self, address: str) -> str:
        return self.route(address).provider

    def send(self, message: OutgoingMessage) -> SendReceipt:
        return self.route(message.to).send(message)

    def send_many(self, messages: list[OutgoingMessage]) -> list[BulkResult]:
        """A page of messages: each route gets its own messages at once (`send_bulk`: Aliyun's
        batches for mainland numbers, the other route's bulk call or one send each), and the
        results come back in the page's order."""
        routes: dict[int, tuple[Channel, list[int]]] = {}
        for index, message in enumerate(messages):
            route = self.route(message.to)
            routes.setdefault(id(route), (route, []))[1].append(index)
        results: list[BulkResult | None] = [None] * len(messages)
        for route, indexes in routes.values():
            for index, result in zip(indexes, send_bulk(route, [messages[i] for i in indexes]), strict=True):
                results[index] = result
        return results


def build_channels(outbox_path: Path | None = None, settings: Settings | None = None) -> dict[str, Channel]:
    """The adapter for each channel name: Twilio and/or Aliyun for SMS (Aliyun for +86 numbers when
    both are configured: `SmsRouter`) and SendGrid for email where `settings` configure them, else
    the outbox, which stands in for every channel and records under the channel's own name."""
    channels: dict[str, Channel] = {name: OutboxChannel(name, outbox_path) for name in CHANNELS}
    if settings is None:
        return channels
    if settings.twilio_account_sid and settings.twilio_auth_token:
        from channels.twilio_sms import TwilioSmsChannel

        channels["sms"] = TwilioSmsChannel(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            from_number=settings.twilio_from,
            api_base_url=settings.twilio_api_base_url,
            timeout=settings.twilio_timeout,
            status_callback_url=settings.public_endpoint("/webhooks/twilio/status"),
        )
    if settings.aliyun_sms:
        from channels.aliyun_sms import AliyunSmsChannel

        aliyun = AliyunSmsChannel(
            settings.aliyun_access_key_id,
            settings.aliyun_access_key_secret,
            region=settings.aliyun_sms_region,
            endpoint=settings.aliyun_sms_endpoint,
            protocol=settings.aliyun_sms_protocol,
            timeout=settings.aliyun_sms_timeout,
            batch_seconds=settings.aliyun_sms_batch_seconds,
            lookup_grace=settings.aliyun_sms_lookup_seconds,
        )
        # Mainland numbers through Aliyun (its registered templates are for them); the others
        # through Twilio where it is configured, else the outbox.
        channels["sms"] = SmsRouter(aliyun, channels["sms"])
    if settings.sendgrid_api_key and settings.sendgrid_from:
        from channels.sendgrid_email import SendGridEmailChannel

        channels["email"] = SendGridEmailChannel(
            settings.sendgrid_api_key,
            settings.sendgrid_from,
            unsubscribe_group_id=settings.sendgrid_unsubscribe_group_id,
            unsubscribe_url=settings.public_endpoint("/unsubscribe"),
            unsubscribe_secret=settings.secret,
            host=settings.sendgrid_api_host,
            timeout=settings.sendgrid_timeout,
            event_webhook=bool(settings.sendgrid_webhook_public_key),
            reconcile_seconds=settings.sendgrid_reconcile_seconds,
        )
    if settings.webhook_url:
        from channels.webhook import WebhookChannel

        channels["webhook"] = WebhookChannel(settings.webhook_url, settings.webhook_secret or "")
    return channels


def describe_channels(channels: dict[str, Channel]) -> str:
    """`sms: twilio, email: outbox, ...` for start-up messages, with a note where a send whose
    answer is lost cannot be settled (it is then sent at most once and marked `unknown`)."""
    described = []
    for name, adapter in channels.items():
        note = " (at most once: no event webhook to settle a lost answer)" if adapter.settles_doubt == "never" else ""
        described.append(f"{name}: {adapter.provider}{note}")
    return ", ".join(described)
