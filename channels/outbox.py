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
    # A send in doubt (a worker killed between writing the line and recording it) looks for its
    # line first, so a message is in the file once, as a provider would have it once.
    settles_doubt = "lookup"
    reconcile_seconds = 0.0

    def __init__(self, name: str = "outbox", path: Path | None = None):
        self.name = name
        self.path = path
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> SendReceipt:
        receipt = SendReceipt(provider_id=f"outbox:{message.message_id}")
        if self.path is None:
            return receipt
        line = json.dumps(message.model_dump(mode="json"), ensure_ascii=False)
        with self._lock:
            if message.earlier_attempt_at is not None and self._written(message.message_id):
                return receipt  # the lost attempt wrote it
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
        return receipt

    def _written(self, message_id: str) -> bool:
        """Whether an earlier attempt wrote the message's line (read only for sends in doubt)."""
        wanted = f'"message_id": "{message_id}"'
        try:
            with self.path.open(encoding="utf-8") as lines:
                return any(wanted in line for line in lines)
        except FileNotFoundError:
            return False
