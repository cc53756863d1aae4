"""The local outbox: the default channel. It 'sends' by recording the rendered message.

The ledger row already holds the message; with a path configured (JOURNEYS_OUTBOX) the outbox
also appends each message as a JSON line, so a developer can watch what would have gone out.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from core.channel import OutgoingMessage, SendReceipt


class OutboxChannel:
    provider = "outbox"
    settles_doubt = "resend"  # a line more in a developer's file at worst; the ledger has one row
    reconcile_seconds = 0.0

    def __init__(self, name: str = "outbox", path: Path | None = None):
        self.name = name
        self.path = path
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> SendReceipt:
        if self.path is not None:
            line = json.dumps(message.model_dump(mode="json"), ensure_ascii=False)
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(line + "\n")
        return SendReceipt(provider_id=f"outbox:{message.message_id}")
