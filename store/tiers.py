"""Member tiers (core/loyalty.py, tables `member_tiers` and `tier_changes`): each customer's tier
with its card's validity, and the change log (变更日志)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from store.tables import MemberTierRow


def current(session: Session, customer_id: str) -> MemberTierRow | None:
    """The customer's tier row, or None for a customer without a tier."""
    return session.get(MemberTierRow, customer_id)
