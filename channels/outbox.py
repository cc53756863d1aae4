"""The local outbox: the default channel. It 'sends' by recording the rendered message.

The ledger row already holds the message; with a path configured (JOURNEYS_OUTBOX) the outbox
also appends each message as a JSON line, with the time it was written (`written_at`), so a
developer can watch what would have gone out. It appends under the file's lock (core.outbox), so
erasure and retention can rewrite the file from another process without losing a line.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

from core.channel import BulkResult, OutgoingMessage, SendReceipt
from core.outbox import locked

#: The ledger id of a line, wherever `"message_id": "..."` stands in it (as `_written` reads it).
_MESSAGE_ID = re.compile(r'"message_id": "([^"\\]*)"')


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

    def send_many(self, messages: list[OutgoingMessage]) -> list[BulkResult]:
        """Record a page of messages in one write: one lock, one open, one append of every line
        (a broadcast page costs the file one write, not one per message). Messages in doubt are
        looked for first, reading the file once for the whole page; a line already written is not
        written again. The receipts are `send`'s, one per message in order."""
        receipts: list[BulkResult] = [SendReceipt(provider_id=f"outbox:{m.message_id}") for m in messages]
        if self.path is None or not messages:
            return receipts
        written_at = datetime.now(UTC).isoformat()
        with self._lock, locked(self.path):
            in_doubt = {m.message_id for m in messages if m.earlier_attempt_at is not None}
            already = self._written_of(in_doubt) if in_doubt else set()
            lines = [
                json.dumps(m.model_dump(mode="json") | {"written_at": written_at}, ensure_ascii=False) + "\n"
                for m in messages
                if m.earlier_attempt_at is None or m.message_id not in already
            ]
            if lines:
                with self.path.open("a", encoding="utf-8") as out:
                    out.write("".join(lines))
        return receipts

    def _written_of(self, message_ids: set[str]) -> set[str]:
        """Which of `message_ids` an earlier attempt wrote: the file read once for all of them."""
        found: set[str] = set()
        try:
            with self.path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    found.update(message_ids.intersection(_MESSAGE_ID.findall(line)))
                    if len(found) == len(message_ids):
                        break
        except FileNotFoundError:
            pass
        return found

    def _written(self, message_id: str) -> bool:
        """Whether an earlier attempt wrote the message's line (read only for sends in doubt)."""
        return bool(self._written_of({message_id}))
