"""The local outbox: the default channel. It 'sends' by recording the rendered message.

The ledger row already holds the message; with a path configured (JOURNEYS_OUTBOX) the outbox
also appends each message as a JSON line, with the time it was written (`written_at`), so a
developer can watch what would have gone out. It appends under the file's lock (core.outbox), so
erasure and retention can rewrite the file from another process without losing a line.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from core.channel import OutgoingMessage, SendReceipt
from core.outbox import locked


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
        record = message.model_dump(mode="json") | {"written_at": datetime.now(UTC).isoformat()}
        line = json.dumps(record, ensure_ascii=False)
        with self._lock, locked(self.path):
            if message.earlier_attempt_at is not None and self._written(message.message_id):
                return receipt  # the lost attempt wrote it
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
