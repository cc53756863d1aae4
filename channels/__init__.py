"""Channel adapters behind one interface (channels.base.Channel); the outbox is the default."""

from __future__ import annotations

from pathlib import Path

from channels.base import Channel
from channels.outbox import OutboxChannel


def build_channels(outbox_path: Path | None = None) -> dict[str, Channel]:
    """The adapter for each channel name. With no provider configured, the outbox stands in for
    SMS, email and webhooks alike, recording under the channel's own name."""
    return {name: OutboxChannel(name, outbox_path) for name in ("sms", "email", "webhook", "outbox")}
