"""The customer's lifecycle stage (客户生命周期) as the shop-CRM practice defines it, computed at the
moment it is read, as RFM is (core/rfm.py).

A purchase is core/amounts.py's one rule: an order first paid at or before the moment T and not
refunded at or before it (`held`; a refunded order is no purchase, not even the first). Its age
is T minus its first payment's time, measured as RFM's R measures the days since the last
purchase: elapsed time, so "within 90 days" is an age of at most 90 days (exactly 90 days is
within; 90 days and a second is not).

| stage | holds when (windows 90/180/365 days by default) |
|---|---|
| `prospect` 潜在客户 | no purchase |
| `new_once` 1次购买新客 | first purchase within 90 days, 1 purchase within 90 days |
| `new_repeat` 重复购买新客 | first purchase within 90 days, >= 2 within 90 days |
| `old_once` 1次购买老客 | first purchase more than 90 days ago, 1 within 90 days |
| `old_repeat` 重复购买老客 | first purchase more than 90 days ago, >= 2 within 90 days |
| `churned` 流失客户 | none within 90 days; the last more than 90 and at most 180 days ago |
| `sleeping` 睡眠客户 | none within 180 days; the last more than 180 and at most 365 days ago |
| `silent` 沉默客户 | none within 365 days; one before |

The windows are `lifecycle:` in definitions/rfm.yaml (`LifecycleTable`, part of `RfmTable`, so
they travel wherever RFM's table does: the router, the workflow's input, preview, segments,
profiles). store/segments.py holds the SQL form (`lifecycle_columns`), which
tests/test_lifecycle.py checks against `stage` on a generated population.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.amounts import held

#: The stages, from no purchase to the longest lapse.
STAGES = ("prospect", "new_once", "new_repeat", "old_once", "old_repeat", "churned", "sleeping", "silent")
Stage = Literal["prospect", "new_once", "new_repeat", "old_once", "old_repeat", "churned", "sleeping", "silent"]
#: What each stage is called in the practice.
TITLES = {
    "prospect": "潜在客户",
    "new_once": "1次购买新客",
    "new_repeat": "重复购买新客",
    "old_once": "1次购买老客",
    "old_repeat": "重复购买老客",
    "churned": "流失客户",
    "sleeping": "睡眠客户",
    "silent": "沉默客户",
}


class LifecycleTable(BaseModel):
    """The windows, in days: a purchase within `active_days` makes a customer new or old (by
    their first purchase's age); otherwise the last purchase's age makes them churned (at most
    `churned_days`), sleeping (at most `sleeping_days`) or silent."""

    model_config = ConfigDict(extra="forbid")

    active_days: int = Field(default=90, ge=1, le=3650)
    churned_days: int = Field(default=180, ge=1, le=3650)
    sleeping_days: int = Field(default=365, ge=1, le=3650)

    @model_validator(mode="after")
    def _rising(self) -> LifecycleTable:
        if not self.active_days < self.churned_days < self.sleeping_days:
            raise ValueError("the windows must rise: active_days < churned_days < sleeping_days")
        return self


DEFAULT_LIFECYCLE = LifecycleTable()


class _Paid(Protocol):
    """An order as the stage reads it (core.rfm.Purchase, or an `orders` row)."""

    paid_at: datetime | None
    refunded_at: datetime | None


def within(age: timedelta, days: int) -> bool:
    """Whether a purchase of this age is within `days` days: at most that many days ago."""
    return age <= timedelta(days=days)


def stage(purchases: Iterable[_Paid], at: datetime, table: LifecycleTable = DEFAULT_LIFECYCLE) -> Stage:
    """The customer's stage at `at`, from their orders (all of them, not RFM's year: a silent
    customer's last purchase is older than that)."""
    paid = sorted(p.paid_at for p in purchases if p.paid_at is not None and held(p.paid_at, p.refunded_at, at))
    if not paid:
        return "prospect"
    recent = sum(1 for moment in paid if within(at - moment, table.active_days))
    if recent:
        new = within(at - paid[0], table.active_days)
        return ("new_" if new else "old_") + ("once" if recent == 1 else "repeat")  # type: ignore[return-value]
    last = at - paid[-1]
    if within(last, table.churned_days):
        return "churned"
    return "sleeping" if within(last, table.sleeping_days) else "silent"
