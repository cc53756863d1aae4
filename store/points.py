"""The points ledger (积分日志, core/loyalty.py, table `points_ledger`): append-only entries, one per
source per customer; a balance is the sum of a customer's entries."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.tables import PointsEntryRow


def balance(session: Session, customer_id: str) -> int:
    """The customer's points now: the sum of their entries (0 without any)."""
    total = session.scalar(select(func.sum(PointsEntryRow.points)).where(PointsEntryRow.customer_id == customer_id))
    return int(total or 0)
