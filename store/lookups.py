"""The contact policy's questions about one customer (rules.policy.Lookups), answered from the
store in the caller's transaction: used by the send activity, `journeys preview` and a
broadcast's dry run alike. It has the shape the rules ask for; the store does not import them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from core.contact_policy import CapWait
from store import queries


@dataclass(frozen=True)
class StoreLookups:
    """The policy's lookups answered from the store, in the caller's transaction."""

    session: Session
    customer_id: str
    #: The message asking (workflow_id, run_id, step): its own wait is not another's.
    message: tuple[str, str, str] | None = None

    def suppression_scope(self, channel: str, address: str) -> str | None:
        return queries.suppression_scope(self.session, channel, address)

    def capped_at(self, cap: str, category: str | None, since: datetime) -> list[tuple[datetime, str | None]]:
        return queries.capped_at(self.session, self.customer_id, cap, category, since)

    def cap_waits(self, cap: str) -> list[CapWait]:
        return queries.cap_waits(self.session, self.customer_id, cap, exclude=self.message)

    def resource_issued(self, resource: str) -> list[datetime]:
        return queries.resource_issued(self.session, self.customer_id, resource)

    def resource_redeemed(self, resource: str, event_type: str) -> list[datetime]:
        return queries.resource_redeemed(self.session, self.customer_id, event_type, resource)
