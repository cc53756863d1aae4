"""The contact policy's questions about one customer (rules.policy.Lookups), answered from the
store in the caller's transaction: used by the send activity, `journeys preview` and a
broadcast's dry run alike. It has the shape the rules ask for; the store does not import them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from store import queries


@dataclass(frozen=True)
class StoreLookups:
    """The policy's lookups answered from the store, in the caller's transaction."""

    session: Session
    customer_id: str

    def suppression_scope(self, channel: str, address: str) -> str | None:
        return queries.suppression_scope(self.session, channel, address)

    def capped_since(self, cap: str, category: str | None, since: datetime, channel: str | None) -> int:
        return queries.capped_since(self.session, self.customer_id, cap, category, since, channel)

    def resource_issued(self, resource: str) -> list[datetime]:
        return queries.resource_issued(self.session, self.customer_id, resource)

    def resource_redeemed(self, resource: str, event_type: str) -> list[datetime]:
        return queries.resource_redeemed(self.session, self.customer_id, event_type, resource)
