"""The product catalogue and repurchase timing (回购周期): what a product is, how an order's items
meet their products, and when a customer is likely to run out of what they bought.

A **product** is a SKU with a title, a category, a price (an amount by core/amounts.py's rule),
tags and an optional `cycle_days`: how long one unit lasts (a 30-day face cream).

**The order context** (core.orders.order_context) joins the catalogue in when it is given one
(`ProductFacts` per SKU, looked up by whoever builds the context: the router, preview, and the
router again for the workflow's input, so the workflow itself reads nothing): each item with a
known SKU carries `product` (the catalogue's record) and `replenish` (its cycle and where it comes
from), and `order.categories` lists the categories of its known products, in item order.

**Repurchase timing.** An item's cycle comes from, in order (`replenish_cycle`):
1. `customer`: the customer's own median interval between purchases of that SKU, else of that
   category, once they have at least `OWN_REPEATS` repeats (intervals) of it;
2. `shop`: the shop's median interval for the SKU, learned daily from its order history, when it
   rests on at least N repeat pairs (JOURNEYS_REPURCHASE_MIN_PAIRS; a figure on fewer is not given);
3. `catalogue`: the product's `cycle_days`;
4. none: the item has no `replenish`.

`replenish_at(order)` is the order's purchase time (first payment, else creation) plus the shortest
cycle of its items: the first thing to run out. Without any cycle it is nothing, so a journey's
`if: {condition: "replenish_at(order)"}` takes its `else`.

An interval is between two purchases (paid orders) of the same customer at least
`MIN_INTERVAL_DAYS` apart: two orders on one day are one shopping trip, not a repurchase.
"""

from __future__ import annotations

import statistics
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.amounts import amount_number

#: A customer's own interval counts once they have this many repeats of the SKU (or category).
OWN_REPEATS = 2
#: The shop's learned cycle of a SKU counts on at least this many repeat pairs (the default of
#: JOURNEYS_REPURCHASE_MIN_PAIRS).
DEFAULT_MIN_PAIRS = 5
#: Purchases closer than this are the same trip, not a repurchase.
MIN_INTERVAL_DAYS = 1.0
MAX_CYCLE_DAYS = 3650
MAX_TAGS = 50

Source = Literal["customer", "shop", "catalogue"]


def plain_text(value: str) -> str:
    """Text as a person typed it, read plainly: full-width digits, letters and points become ASCII
    (NFKC: `３０` is 30, `１２９．００` is 129.00), surrounding spaces go."""
    return unicodedata.normalize("NFKC", value).strip()


class Product(BaseModel):
    """One SKU of the catalogue, as `POST /products`, the CSV import and the order context show it."""

    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=100, examples=["cream-30ml"])
    title: str = Field(min_length=1, max_length=200, examples=["保湿面霜 30ml"])
    category: str = Field(min_length=1, max_length=100, examples=["skincare"])
    price: float | None = Field(
        default=None, description='An amount by the amount rule (a number, or digits like "129.00").'
    )
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    cycle_days: int | None = Field(
        default=None, ge=1, le=MAX_CYCLE_DAYS, description="How many days one unit lasts; none if it does not run out."
    )

    @field_validator("sku", "title", "category", mode="before")
    @classmethod
    def _trimmed(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("sku", "title", "category")
    @classmethod
    def _storable(cls, value: str) -> str:
        return _storable_text(value)

    @field_validator("price", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Any:
        if value is None:
            return None
        number = amount_number(value)
        if number is None:
            raise ValueError(
                f"{value!r} is not a price: give a number from 0 to 10^12, or digits with an optional decimal part"
            )
        return float(number)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        tags = [_storable_text(tag.strip()) for tag in value if tag.strip()]
        if any(len(tag) > 100 for tag in tags):
            raise ValueError("a tag is at most 100 characters")
        return list(dict.fromkeys(tags))


def _storable_text(value: str) -> str:
    """Text both databases can store and every reader can print: UTF-8, no control characters."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not UTF-8 text (an unpaired surrogate)") from None
    if any(unicodedata.category(char) == "Cc" for char in value):  # a full-width space is fine
        raise ValueError("a control character is not allowed here")
    return value


class Repurchase(BaseModel):
    """What is known of how soon one SKU is bought again, for one customer at one moment."""

    own_sku_days: float | None = None
    own_sku_repeats: int = 0
    own_category_days: float | None = None
    own_category_repeats: int = 0
    shop_days: float | None = Field(default=None, description="The learned median, given only on enough pairs.")
    shop_pairs: int = 0


class ProductFacts(BaseModel):
    """A SKU's product and its repurchase figures: what an order context is enriched with."""

    product: Product
    repurchase: Repurchase = Field(default_factory=Repurchase)


class Cycle(BaseModel):
    days: float
    source: Source
    samples: int = Field(description="Intervals behind the figure (the catalogue's: 0).")


def replenish_cycle(facts: ProductFacts) -> Cycle | None:
    """The item's cycle by the fallback order (module docstring), or None."""
    seen = facts.repurchase
    if seen.own_sku_days is not None and seen.own_sku_repeats >= OWN_REPEATS:
        return Cycle(days=seen.own_sku_days, source="customer", samples=seen.own_sku_repeats)
    if seen.own_category_days is not None and seen.own_category_repeats >= OWN_REPEATS:
        return Cycle(days=seen.own_category_days, source="customer", samples=seen.own_category_repeats)
    if seen.shop_days is not None:
        return Cycle(days=seen.shop_days, source="shop", samples=seen.shop_pairs)
    if facts.product.cycle_days is not None:
        return Cycle(days=float(facts.product.cycle_days), source="catalogue", samples=0)
    return None


def item_sku(item: Any) -> str | None:
    """An order item's SKU (`sku`, a string or an integer), or None."""
    if not isinstance(item, Mapping):
        return None
    sku = item.get("sku")
    if isinstance(sku, bool) or not isinstance(sku, str | int):
        return None
    text = str(sku).strip()
    return text or None


def skus_of(items: Any) -> list[str]:
    """The SKUs of an order's `items`, in order, each once."""
    if not isinstance(items, list):
        return []
    return list(dict.fromkeys(sku for sku in map(item_sku, items) if sku))


def enrich(context: dict[str, Any], products: Mapping[str, ProductFacts]) -> None:
    """Join the catalogue into an order context (in place; the events' data is not touched)."""
    items = context.get("items")
    categories: list[str] = []
    if isinstance(items, list):
        joined = []
        for item in items:
            facts = products.get(item_sku(item) or "")
            if facts is None:
                joined.append(item)
                continue
            cycle = replenish_cycle(facts)
            joined.append(
                {
                    **item,
                    "product": facts.product.model_dump(mode="json"),
                    **({"replenish": cycle.model_dump(mode="json")} if cycle else {}),
                }
            )
            categories.append(facts.product.category)
        context["items"] = joined
    context["categories"] = list(dict.fromkeys(categories))


def replenish_at(order: Mapping[str, Any]) -> datetime | None:
    """When the customer is likely to run out of something the order bought: its purchase time
    plus the shortest `replenish.days` of its items; None without a cycle or a time."""
    if not isinstance(order, Mapping):
        return None
    bought = order.get("paid_at") or order.get("created_at")
    items = order.get("items")
    if not isinstance(bought, str | datetime) or not isinstance(items, list):
        return None
    days = [
        item["replenish"]["days"]
        for item in items
        if isinstance(item, Mapping) and isinstance(item.get("replenish"), Mapping)
        and isinstance(item["replenish"].get("days"), int | float)
    ]  # fmt: skip
    if not days:
        return None
    start = bought if isinstance(bought, datetime) else datetime.fromisoformat(bought.replace("Z", "+00:00"))
    return start + timedelta(days=min(days))


# ---------------------------------------------------------------------------------------------
# Intervals: a customer's own, and the shop's learned cycles


def intervals(times: Iterable[datetime]) -> list[float]:
    """Days between consecutive purchases (sorted first), those under MIN_INTERVAL_DAYS left out."""
    ordered = sorted(times)
    gaps = [(later - earlier).total_seconds() / 86400 for earlier, later in zip(ordered, ordered[1:], strict=False)]
    return [gap for gap in gaps if gap >= MIN_INTERVAL_DAYS]


def median_days(gaps: list[float]) -> float | None:
    return round(statistics.median(gaps), 2) if gaps else None


class LearnedCycle(BaseModel):
    """A SKU's cycle learned from the shop's order history: the median of every customer's
    intervals between purchases of it."""

    sku: str
    median_days: float
    pairs: int = Field(description="Repeat pairs (intervals) behind the median.")
    customers: int = Field(description="Customers who bought it again.")


def learn_cycles(purchases: Iterable[tuple[str, str, datetime]]) -> list[LearnedCycle]:
    """The learned cycle of every SKU bought again, from (customer, sku, paid_at) purchases."""
    times: dict[tuple[str, str], list[datetime]] = {}
    for customer, sku, at in purchases:
        times.setdefault((sku, customer), []).append(at)
    gaps: dict[str, list[float]] = {}
    buyers: dict[str, int] = {}
    for (sku, _customer), seen in times.items():
        found = intervals(seen)
        if found:
            gaps.setdefault(sku, []).extend(found)
            buyers[sku] = buyers.get(sku, 0) + 1
    return [
        LearnedCycle(sku=sku, median_days=median_days(found) or 0.0, pairs=len(found), customers=buyers[sku])
        for sku, found in sorted(gaps.items())
    ]


def parse_cycle_days(text: str) -> int | None:
    """A `cycle_days` cell as a person wrote it (`30`, `３０`, `30天`, empty): days, or None when
    empty; ValueError for anything else."""
    value = plain_text(text).removesuffix("天").removesuffix("days").strip()
    if not value:
        return None
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"{text!r} is not a number of days")
    days = int(value)
    if not 1 <= days <= MAX_CYCLE_DAYS:
        raise ValueError(f"{days} days is outside 1 to {MAX_CYCLE_DAYS}")
    return days


def parse_price(text: str) -> float | None:
    """A price cell as a person wrote it (`129.00`, `１２９．００`, `¥129`, `￥129`, empty): the amount,
    None when empty; ValueError when it is no amount by the amount rule."""
    value = plain_text(text).lstrip("¥￥").replace(",", "").removesuffix("元").strip()
    if not value:
        return None
    number = amount_number(value)
    if number is None:
        raise ValueError(f"{text!r} is not a price")
    return float(number)
