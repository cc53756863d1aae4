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
3. `catalogue`: the product's `cycle_days` times the item's `quantity` (or `qty`: a positive
   integer, 1 when absent or not one): three 30-day creams last 90 days;
4. none: the item has no `replenish`.

An item joins its product by `items[].sku`, read by `normalise_sku` (NFKC, spaces trimmed: `ＳＫ００１`
is `SK001`), the one reading of a SKU the catalogue, the CSV import, the order context and
`bought:` segments share. A `product` or `replenish` the order system put in an item is dropped,
known SKU or not: only the catalogue says what they are.

`replenish_at(order)` is the order's purchase time (first payment, else creation) plus the shortest
cycle of its items: the first thing to run out; `order.replenish_item` is that item (its
`product.title` is what a reminder names). Without any cycle it is nothing, so a journey's
`if: {condition: "replenish_at(order)"}` takes its `else`.

An interval is between two purchases (paid orders) of the same customer at least
`MIN_INTERVAL_DAYS` apart: two orders on one day are one shopping trip, not a repurchase.
"""

from __future__ import annotations

import math
import statistics
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.amounts import written_amount

#: A customer's own interval counts once they have this many repeats of the SKU (or category).
OWN_REPEATS = 2
#: The shop's learned cycle of a SKU counts on at least this many repeat pairs (the default of
#: JOURNEYS_REPURCHASE_MIN_PAIRS).
DEFAULT_MIN_PAIRS = 5
#: Purchases closer than this are the same trip, not a repurchase.
MIN_INTERVAL_DAYS = 1.0
MAX_CYCLE_DAYS = 3650
MAX_TAGS = 50
#: An item's quantity counts up to this many units.
MAX_QUANTITY = 100
#: An instance's input carries the facts of at most this many SKUs of its order (the first ones
#: of its items), to stay well within Temporal's payload limit.
MAX_ORDER_PRODUCTS = 100

Source = Literal["customer", "shop", "catalogue"]
#: How enrich reads an order whose facts carry it (ProductFacts.reading): facts in instances'
#: inputs written before it carry 1 and are read as then, so their histories replay unchanged.
READING = 2


def normalise_sku(value: Any) -> str | None:
    """A SKU as the catalogue stores it and items join by: a string or an integer (not a bool),
    NFKC (full-width letters and digits made ASCII), spaces trimmed; None when there is none."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return unicodedata.normalize("NFKC", str(value)).strip() or None


def plain_text(value: str) -> str:
    """Text as a person typed it, read plainly: full-width digits, letters and points become ASCII
    (NFKC: `３０` is 30, `１２９．００` is 129.00), surrounding spaces go."""
    return unicodedata.normalize("NFKC", value).strip()


class ProductRecord(BaseModel):
    """A product as an instance's input carries it (instances/contract.py, through ProductFacts):
    plain fields, no checks, unknown fields ignored, so an input written by another version of
    the catalogue's rules (a field added, a rule made stricter) still decodes in a worker."""

    model_config = ConfigDict(extra="ignore")

    sku: str
    title: str
    category: str
    price: float | None = None
    tags: list[str] = Field(default_factory=list)
    cycle_days: int | None = None


class Product(ProductRecord):
    """One SKU of the catalogue, as `POST /products`, the CSV import and the order context show it:
    what is written is checked here."""

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

    @field_validator("sku", mode="before")
    @classmethod
    def _sku(cls, value: Any) -> Any:
        return (normalise_sku(value) or "") if isinstance(value, str) else value

    @field_validator("title", "category", mode="before")
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
        number = written_amount(value)
        if number is None:
            raise ValueError(
                f"{value!r} is not a price: give a number from 0 to 10^12, or digits with an optional decimal part "
                "(full-width digits, a leading ¥ or a trailing 元, and commas between thousands are read too)"
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

    model_config = ConfigDict(extra="ignore")

    own_sku_days: float | None = None
    own_sku_repeats: int = 0
    own_category_days: float | None = None
    own_category_repeats: int = 0
    shop_days: float | None = Field(default=None, description="The learned median, given only on enough pairs.")
    shop_pairs: int = 0


class ProductFacts(BaseModel):
    """A SKU's product and its repurchase figures: what an order context is enriched with, and
    what an instance's input carries (a transport model: unknown fields ignored)."""

    model_config = ConfigDict(extra="ignore")

    product: ProductRecord
    reading: int = Field(
        default=1,
        description="How enrich reads the order with these facts: 1 (inputs written before it was given) as "
        "then; READING (2): quantities count, an item's own product/replenish are dropped.",
    )
    repurchase: Repurchase = Field(default_factory=Repurchase)


class Cycle(BaseModel):
    days: float
    source: Source
    samples: int = Field(description="Intervals behind the figure (the catalogue's: 0).")


def quantity_of(item: Any) -> int:
    """An item's `quantity` (or `qty`) when it is a positive integer (or digits), else 1; at most MAX_QUANTITY
    (a cycle stays within a few centuries)."""
    value = next((item[k] for k in ("quantity", "qty") if k in item), None) if isinstance(item, Mapping) else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return min(value, MAX_QUANTITY) if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def replenish_cycle(facts: ProductFacts, quantity: int = 1) -> Cycle | None:
    """The item's cycle by the fallback order (module docstring), or None. `quantity` multiplies
    the catalogue's cycle_days only: the own and shop intervals are already what people bought."""
    seen = facts.repurchase
    if seen.own_sku_days is not None and seen.own_sku_repeats >= OWN_REPEATS:
        return Cycle(days=seen.own_sku_days, source="customer", samples=seen.own_sku_repeats)
    if seen.own_category_days is not None and seen.own_category_repeats >= OWN_REPEATS:
        return Cycle(days=seen.own_category_days, source="customer", samples=seen.own_category_repeats)
    if seen.shop_days is not None:
        return Cycle(days=seen.shop_days, source="shop", samples=seen.shop_pairs)
    if facts.product.cycle_days is not None:
        return Cycle(days=float(facts.product.cycle_days * quantity), source="catalogue", samples=0)
    return None


def item_sku(item: Any) -> str | None:
    """An order item's SKU (`sku`, read by normalise_sku), or None."""
    return normalise_sku(item.get("sku")) if isinstance(item, Mapping) else None


def skus_of(items: Any) -> list[str]:
    """The SKUs of an order's `items`, in order, each once."""
    if not isinstance(items, list):
        return []
    return list(dict.fromkeys(sku for sku in map(item_sku, items) if sku))


def enrich(context: dict[str, Any], products: Mapping[str, ProductFacts]) -> None:
    """Join the catalogue into an order context (in place; the events' data is not touched), and
    name the item that runs out first (`replenish_item`, what a reminder's template names).
    Facts of READING 2 on: an item's own `product`/`replenish` are dropped and quantities count;
    older facts (an instance's input from before) are read as they were."""
    items = context.get("items")
    categories: list[str] = []
    strict = any(facts.reading >= READING for facts in products.values())
    if isinstance(items, list):
        joined = []
        for item in items:
            if strict and isinstance(item, Mapping):  # only the catalogue says what these are
                item = {key: value for key, value in item.items() if key not in ("product", "replenish")}
            facts = products.get(item_sku(item) or "")
            if facts is None:
                joined.append(item)
                continue
            cycle = replenish_cycle(facts, quantity_of(item) if facts.reading >= READING else 1)
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
    first = replenish_item(context)
    if first is not None:
        context["replenish_item"] = first


def _cycle_days(item: Any) -> float | None:
    """An item's `replenish.days` when it is a usable cycle: a finite number from 1 day to
    MAX_CYCLE_DAYS times the largest quantity (not a bool); else None."""
    replenish = item.get("replenish") if isinstance(item, Mapping) else None
    days = replenish.get("days") if isinstance(replenish, Mapping) else None
    if isinstance(days, bool) or not isinstance(days, int | float) or not math.isfinite(days):
        return None
    return float(days) if MIN_INTERVAL_DAYS <= days <= MAX_CYCLE_DAYS * MAX_QUANTITY else None


def replenish_item(order: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The item of the order that runs out first (the shortest usable cycle, the first of equals),
    or None: what a reminder names (`replenish_item(order).product.title`)."""
    items = order.get("items") if isinstance(order, Mapping) else None
    if not isinstance(items, list):
        return None
    timed = [(days, i) for i, item in enumerate(items) if (days := _cycle_days(item)) is not None]
    return items[min(timed)[1]] if timed else None


def replenish_at(order: Mapping[str, Any]) -> datetime | None:
    """When the customer is likely to run out of something the order bought: its purchase time
    plus the shortest usable `replenish.days` of its items; None without a cycle or a time."""
    item = replenish_item(order)
    bought = order.get("paid_at") or order.get("created_at") if isinstance(order, Mapping) else None
    if item is None or not isinstance(bought, str | datetime):
        return None
    try:
        start = bought if isinstance(bought, datetime) else datetime.fromisoformat(bought.replace("Z", "+00:00"))
    except ValueError:
        return None
    days = _cycle_days(item)
    assert days is not None
    return start + timedelta(days=days)


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
    """A price cell as a person wrote it (`129.00`, `１２９．００`, `¥129`, `1,299`, empty): the amount
    by core.amounts.written_amount, None when empty; ValueError when it is no amount."""
    if not plain_text(text):
        return None
    number = written_amount(text)
    if number is None:
        raise ValueError(f"{text!r} is not a price")
    return float(number)
