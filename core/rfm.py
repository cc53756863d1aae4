"""RFM (客户等级划分) as the shop-CRM practice defines it, computed at the moment it is read.

At a time T, a purchase is an order with an `order.paid` in (T-365 d, T] that was not refunded by
T; its amount is its first `order.paid`'s `data.amount`, else its latest `order.created`'s, else 0.
What an amount is, and what a purchase and a refund are, is core/amounts.py's rule, shared with
segments, the `orders` read model and the effect report (`1e308`, `-500`, `"一百二十九元"` are
no amount).

- R, from the days since the last purchase: <=30 -> 5, <=90 -> 4, <=120 -> 3, <=210 -> 2, <=365 -> 1
- F, from the number of purchases: >=6 -> 5, >=4 -> 4, >=3 -> 3, >=2 -> 2, >=1 -> 1
- M, from their total amount: >=2000 -> 5, >=1000 -> 4, >=500 -> 3, >=300 -> 2, >0 -> 1
- no purchase in the year: 0 each. score = 1R + 3F + 4M; the tier is the first whose minimum
  score the score reaches.

The thresholds, weights and tiers come from `definitions/rfm.yaml` (RfmTable); the defaults are
the table above. Pure functions over a customer's orders (`Purchase`, folded from their events),
so the router, the workflow (at `workflow.now()`), preview, segments and the profile agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.amounts import WINDOW as WINDOW  # RFM's year, re-exported
from core.amounts import amount_of, in_year, order_amount
from core.lifecycle import LifecycleTable, stage
from core.records import Customer

#: Event types that change a customer's purchases.
PURCHASE_EVENT_TYPES = ("order.created", "order.paid", "order.refunded")


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    title: str | None = None
    min_score: int = Field(ge=0)


class RfmTable(BaseModel):
    """Thresholds, weights and tiers. Each threshold list gives the bound for 5, 4, 3, 2, 1."""

    model_config = ConfigDict(extra="forbid")

    recency_days: list[int] = Field(default=[30, 90, 120, 210, 365], min_length=5, max_length=5)
    frequency: list[int] = Field(default=[6, 4, 3, 2, 1], min_length=5, max_length=5)
    monetary: list[float] = Field(default=[2000, 1000, 500, 300, 0], min_length=5, max_length=5)
    weights: dict[str, int] = Field(default={"r": 1, "f": 3, "m": 4})
    tiers: list[Tier] = Field(
        default=[
            Tier(name="champion", title="核心客户", min_score=32),
            Tier(name="loyal", title="重要客户", min_score=24),
            Tier(name="potential", title="潜力客户", min_score=12),
            Tier(name="occasional", title="一般客户", min_score=1),
            Tier(name="none", title="无购买", min_score=0),
        ],
        min_length=1,
    )
    #: The lifecycle stage's windows (`lifecycle:` in rfm.yaml; core/lifecycle.py), kept with RFM's
    #: table because they are read wherever it is: the workflow's input, segments, profiles.
    lifecycle: LifecycleTable = Field(default_factory=LifecycleTable)

    @model_validator(mode="after")
    def _ordered(self) -> RfmTable:
        if self.recency_days != sorted(self.recency_days) or self.recency_days[-1] > 365:
            raise ValueError("recency_days must rise from the bound for 5 to the one for 1, at most 365")
        if self.frequency != sorted(self.frequency, reverse=True) or self.frequency[-1] < 1:
            raise ValueError("frequency must fall from the bound for 5 to the one for 1, at least 1")
        if self.monetary != sorted(self.monetary, reverse=True) or self.monetary[-1] < 0:
            raise ValueError("monetary must fall from the bound for 5 to the one for 1, at least 0")
        if set(self.weights) != {"r", "f", "m"}:
            raise ValueError("weights must give r, f and m")
        scores = [tier.min_score for tier in self.tiers]
        if scores != sorted(scores, reverse=True) or scores[-1] != 0:
            raise ValueError("tiers must be listed from the highest min_score down, the last with min_score 0")
        if len({tier.name for tier in self.tiers}) != len(self.tiers):
            raise ValueError("tier names must differ")
        return self


DEFAULT_TABLE = RfmTable()


class Purchase(BaseModel):
    """One order of a customer, as far as RFM needs it."""

    order_id: str
    created_amount: float | None = None
    paid_at: datetime | None = None
    paid_amount: float | None = None
    refunded_at: datetime | None = None

    @property
    def amount(self) -> float:
        return order_amount(self.paid_amount, self.created_amount)


class Rfm(BaseModel):
    """What conditions and templates read as `customer.rfm`."""

    r: int
    f: int
    m: int
    score: int
    tier: str
    purchases: int = Field(description="Purchases in the year to the moment it was read.")
    amount: float = Field(description="Their total amount.")
    last_purchase_at: datetime | None = None


def fold(purchases: dict[str, Purchase], event_type: str, order_id: str | None, at: datetime, data: dict) -> None:
    """Apply one order event to a customer's purchases, by order (the first payment counts)."""
    if event_type not in PURCHASE_EVENT_TYPES or not order_id:
        return
    purchase = purchases.setdefault(order_id, Purchase(order_id=order_id))
    if event_type == "order.created":
        purchase.created_amount = amount_of(data.get("amount"))
    elif event_type == "order.paid":
        if purchase.paid_at is None or at < purchase.paid_at:
            purchase.paid_at = at
            purchase.paid_amount = amount_of(data.get("amount"))
    elif purchase.refunded_at is None or at < purchase.refunded_at:
        purchase.refunded_at = at


def purchases_from(events: Iterable[Any]) -> list[Purchase]:
    """The purchases in a customer's order events (anything with type, order_id, occurred_at,
    data), folded in time order."""
    found: dict[str, Purchase] = {}
    for event in sorted(events, key=lambda e: e.occurred_at):
        fold(found, event.type, event.order_id, event.occurred_at, event.data)
    return list(found.values())


def _grade(value: float, bounds: list[float], rising: bool) -> int:
    for grade, bound in zip((5, 4, 3, 2, 1), bounds, strict=True):
        if (value <= bound) if rising else (value >= bound):
            return grade
    return 0


def score(purchases: Iterable[Purchase], at: datetime, table: RfmTable = DEFAULT_TABLE) -> Rfm:
    """The customer's RFM at `at`."""
    counted = [p for p in purchases if in_year(p.paid_at, p.refunded_at, at)]
    if not counted:
        return Rfm(r=0, f=0, m=0, score=0, tier=tier_of(0, table), purchases=0, amount=0.0)
    last = max(p.paid_at for p in counted if p.paid_at is not None)
    days = (at - last) / timedelta(days=1)  # elapsed: 30 days and a minute is more than 30
    total = round(sum(p.amount for p in counted), 2)
    r = _grade(days, [float(d) for d in table.recency_days], rising=True)
    f = _grade(len(counted), [float(n) for n in table.frequency], rising=False)
    m = _grade(total, table.monetary, rising=False) if total > 0 else 0  # ">0 -> 1": nothing spent is 0
    value = table.weights["r"] * r + table.weights["f"] * f + table.weights["m"] * m
    return Rfm(
        r=r, f=f, m=m, score=value, tier=tier_of(value, table), purchases=len(counted), amount=total,
        last_purchase_at=last,
    )  # fmt: skip


def tier_of(value: int, table: RfmTable = DEFAULT_TABLE) -> str:
    return next(tier.name for tier in table.tiers if value >= tier.min_score)


def customer_context(
    customer: Customer | None, purchases: Iterable[Purchase], table: RfmTable, at: datetime, *, lifecycle: bool = True
) -> dict[str, Any]:
    """The customer as conditions and templates read it: the record, `traits`, and `rfm` and
    `lifecycle` (core/lifecycle.py's stage) as of `at` (both change with time alone). Empty for a
    customer with no record. `lifecycle=False`: without the stage (journey instances of a
    revision before 5, which must replay as they were recorded)."""
    if customer is None:
        return {}
    bought = list(purchases)
    seen = {**customer.model_dump(mode="json"), "rfm": score(bought, at, table).model_dump(mode="json")}
    if lifecycle:
        seen["lifecycle"] = stage(bought, at, table.lifecycle)
    return seen
