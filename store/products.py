"""The product catalogue and repurchase figures in the store (core/products.py says what they mean).

- `save_products`: the catalogue's upsert, per SKU, idempotent (`POST /products`, the CSV import);
- `purchases`: every purchase of a SKU (customer, SKU, first payment), read from the event log by
  the purchase rule of core/amounts.py (an order with an `order.paid`, not refunded), its items
  being the order's latest `items` (as the order context merges them);
- `order_facts`: for one order, each known SKU's product with the customer's own intervals and the
  shop's learned cycle, as of a moment: what the router puts in an instance's input and preview
  uses, so the workflow reads nothing;
- `relearn_cycles`: the daily run's work (the median interval per SKU, with its sample counts);
- `prediction_errors`: per SKU, the moment the fallback order would have predicted after each
  purchase against the customer's actual next purchase, for the effect report.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.orders import order_skus
from core.products import (
    DEFAULT_MIN_PAIRS,
    MAX_ORDER_PRODUCTS,
    MIN_INTERVAL_DAYS,
    READING,
    LearnedCycle,
    Product,
    ProductFacts,
    Repurchase,
    intervals,
    learn_cycles,
    median_days,
    replenish_cycle,
    skus_of,
)
from core.records import Event
from store.portable import in_slices, upsert_insert
from store.tables import EventRow, ProductCycleRow, ProductRow

_PURCHASE_TYPES = ("order.created", "order.paid", "order.refunded")


# ---------------------------------------------------------------------------------------------
# The catalogue


class Saved(BaseModel):
    """What a save did, per SKU: new, changed, or the same as stored (idempotent)."""

    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)


def _product(row: ProductRow) -> Product:
    return Product(
        sku=row.sku, title=row.title, category=row.category, price=row.price, tags=list(row.tags or []),
        cycle_days=row.cycle_days,
    )  # fmt: skip


def save_products(session: Session, products: list[Product], now: datetime) -> Saved:
    """Write the products (a later one of the same SKU wins), one statement; a SKU stored with the
    same fields is left as it is, its `updated_at` too."""
    wanted = {product.sku: product for product in products}
    held = {row.sku: _product(row) for row in session.scalars(select(ProductRow).where(ProductRow.sku.in_(wanted)))}
    saved = Saved()
    rows = []
    for sku, product in wanted.items():
        if held.get(sku) == product:
            saved.unchanged.append(sku)
            continue
        (saved.updated if sku in held else saved.created).append(sku)
        rows.append({**product.model_dump(), "updated_at": now})
    if rows:
        table = ProductRow.__table__
        statement = upsert_insert(session, table)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.sku],
                set_={column: statement.excluded[column] for column in rows[0] if column != "sku"},
            ),
            rows,
        )
    return saved


def get_product(session: Session, sku: str) -> Product | None:
    row = session.get(ProductRow, sku)
    return None if row is None else _product(row)


def products_of(session: Session, skus: Iterable[str]) -> dict[str, Product]:
    """The catalogue's products of these SKUs (those it has)."""
    wanted = sorted(set(skus))
    found: dict[str, Product] = {}
    for chunk in in_slices(wanted):
        found.update(
            (row.sku, _product(row)) for row in session.scalars(select(ProductRow).where(ProductRow.sku.in_(chunk)))
        )
    return found


# ---------------------------------------------------------------------------------------------
# Purchases of SKUs


@dataclass
class _Order:
    customer_id: str
    paid_at: datetime | None = None
    refunded: bool = False
    items_at: datetime | None = None
    skus: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Purchase:
    customer_id: str
    order_id: str
    sku: str
    paid_at: datetime


def purchases(
    session: Session, *, customer_id: str | None = None, until: datetime | None = None, batch: int = 5000
) -> Iterator[Purchase]:
    """Every purchase of a SKU (of one customer, or the shop's), paid by `until` and not refunded
    by then, streamed order by order (the log read in order-id order, `batch` rows at a time)."""
    query = select(EventRow.order_id, EventRow.customer_id, EventRow.type, EventRow.occurred_at, EventRow.data).where(
        EventRow.type.in_(_PURCHASE_TYPES), EventRow.order_id.is_not(None)
    )
    if customer_id is not None:
        query = query.where(EventRow.customer_id == customer_id)
    if until is not None:
        query = query.where(EventRow.occurred_at <= until)
    current: str | None = None
    order: _Order | None = None
    for order_id, customer, kind, at, data in session.execute(query.order_by(EventRow.order_id)).yield_per(batch):
        if order_id != current:
            if order is not None and current is not None:
                yield from _bought(current, order)
            current, order = order_id, _Order(customer_id=customer)
        assert order is not None
        if kind == "order.paid":
            order.paid_at = at if order.paid_at is None else min(order.paid_at, at)
        elif kind == "order.refunded":
            order.refunded = True
        items = (data or {}).get("items") if isinstance(data, dict) else None
        if items is not None and (order.items_at is None or at >= order.items_at):
            order.items_at, order.skus = at, skus_of(items)  # the latest items win, as in the order context
    if order is not None and current is not None:
        yield from _bought(current, order)


def _bought(order_id: str, order: _Order) -> Iterator[Purchase]:
    if order.paid_at is None or order.refunded:
        return
    for sku in order.skus:
        yield Purchase(customer_id=order.customer_id, order_id=order_id, sku=sku, paid_at=order.paid_at)


def usable_cycles(session: Session, skus: Iterable[str]) -> dict[str, ProductCycleRow]:
    """The learned cycles of these SKUs that rest on enough pairs (the run's `min_pairs`)."""
    wanted = sorted(set(skus))
    rows = session.scalars(select(ProductCycleRow).where(ProductCycleRow.sku.in_(wanted))) if wanted else []
    return {row.sku: row for row in rows if row.pairs >= row.min_pairs}


def order_facts(session: Session, customer_id: str, order: list[Event], at: datetime) -> dict[str, ProductFacts]:
    """The catalogue's facts of the SKUs `order`'s events name, as of `at`: each product with the
    customer's own intervals (of the SKU, of its category; purchases paid by `at`) and the shop's
    usable learned cycle. Empty when no SKU is in the catalogue (then nothing more is read)."""
    products = products_of(session, order_skus(order)[:MAX_ORDER_PRODUCTS])
    if not products:
        return {}
    bought = list(purchases(session, customer_id=customer_id, until=at))
    categories = {**products, **products_of(session, {p.sku for p in bought} - set(products))}
    by_sku: dict[str, set[datetime]] = {}
    by_category: dict[str, set[datetime]] = {}
    for purchase in bought:
        by_sku.setdefault(purchase.sku, set()).add(purchase.paid_at)
        if (known := categories.get(purchase.sku)) is not None:
            by_category.setdefault(known.category, set()).add(purchase.paid_at)  # an order counts once
    shop = usable_cycles(session, products)
    return {
        sku: facts_of(product, by_sku.get(sku, ()), by_category.get(product.category, ()), shop.get(sku))
        for sku, product in products.items()
    }


def facts_of(
    product: Product, sku_times: Iterable[datetime], category_times: Iterable[datetime], learned: ProductCycleRow | None
) -> ProductFacts:
    """A product's facts from the customer's purchase times of it and of its category (an order
    once) and the shop's usable learned cycle: the one way order_facts (what replenish_at reads)
    and prediction_errors (what the effect report compares) build them."""
    own = intervals(sku_times)
    mine = intervals(category_times)
    return ProductFacts(
        product=product,
        reading=READING,
        repurchase=Repurchase(
            own_sku_days=median_days(own),
            own_sku_repeats=len(own),
            own_category_days=median_days(mine),
            own_category_repeats=len(mine),
            shop_days=learned.median_days if learned else None,
            shop_pairs=learned.pairs if learned else 0,
        ),
    )


# ---------------------------------------------------------------------------------------------
# Learned cycles


def relearn_cycles(session: Session, now: datetime, min_pairs: int = DEFAULT_MIN_PAIRS) -> list[LearnedCycle]:
    """Learn every SKU's cycle from the whole history (purchases paid by `now`) and replace the
    table with them: the daily run's work, in one transaction."""
    learned = learn_cycles((p.customer_id, p.sku, p.paid_at) for p in purchases(session, until=now))
    session.execute(delete(ProductCycleRow))
    if learned:
        session.execute(
            ProductCycleRow.__table__.insert(),
            [{**cycle.model_dump(), "min_pairs": min_pairs, "computed_at": now} for cycle in learned],
        )
    return learned


class CycleLine(BaseModel):
    """One SKU as `journeys products cycles` shows it."""

    sku: str
    title: str | None
    category: str | None
    cycle_days: int | None = Field(description="The catalogue's.")
    learned_days: float | None
    pairs: int
    customers: int
    usable: bool = Field(description="The learned figure rests on at least min_pairs pairs, so replenish_at uses it.")
    min_pairs: int | None
    computed_at: datetime | None


def cycle_lines(session: Session, skus: list[str] | None = None) -> list[CycleLine]:
    """Every SKU of the catalogue or of the learned cycles (or these SKUs), with both figures and
    the sample counts."""
    cycles_query, products_query = select(ProductCycleRow), select(ProductRow)
    if skus is not None:
        cycles_query = cycles_query.where(ProductCycleRow.sku.in_(skus))
        products_query = products_query.where(ProductRow.sku.in_(skus))
    cycles = {row.sku: row for row in session.scalars(cycles_query)}
    products = {row.sku: row for row in session.scalars(products_query)}
    lines = []
    for sku in sorted(set(cycles) | set(products)):
        cycle, product = cycles.get(sku), products.get(sku)
        lines.append(
            CycleLine(
                sku=sku,
                title=product.title if product else None,
                category=product.category if product else None,
                cycle_days=product.cycle_days if product else None,
                learned_days=cycle.median_days if cycle else None,
                pairs=cycle.pairs if cycle else 0,
                customers=cycle.customers if cycle else 0,
                usable=bool(cycle and cycle.pairs >= cycle.min_pairs),
                min_pairs=cycle.min_pairs if cycle else None,
                computed_at=cycle.computed_at if cycle else None,
            )
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Predictions against what happened


class SkuPrediction(BaseModel):
    """Per SKU, over the repurchases in a period: how far the predicted moment was from the real one."""

    sku: str
    title: str | None
    repurchases: int = Field(description="Repurchases of the SKU in the period (a customer's next purchase of it).")
    predicted: int = Field(description="Those the fallback order had a prediction for.")
    median_error_days: float | None = Field(description="Median of |actual - predicted| in days.")
    median_bias_days: float | None = Field(
        description="Median of actual - predicted: above 0, customers came back later than predicted."
    )
    early: int = Field(description="Repurchases before the predicted moment.")
    sources: dict[str, int] = Field(description="Predictions by source: customer, shop, catalogue.")


def prediction_errors(session: Session, start: datetime, end: datetime) -> list[SkuPrediction]:
    """For each repurchase paid in [start, end) of a SKU of the catalogue (a customer buying it again), the moment
    replenish_at's fallback order predicted at the purchase before it: the customer's own
    intervals up to then, else the shop's usable learned cycle (today's), else the catalogue's.
    Nothing, and the order history unread, while the catalogue is empty."""
    if session.scalars(select(ProductRow.sku).limit(1)).first() is None:
        return []
    times: dict[tuple[str, str], set[datetime]] = {}
    for purchase in purchases(session, until=end):
        times.setdefault((purchase.sku, purchase.customer_id), set()).add(purchase.paid_at)
    skus = {sku for sku, _ in times}
    products = products_of(session, skus)
    shop = usable_cycles(session, skus)
    by_category: dict[tuple[str, str], set[datetime]] = {}  # a customer's purchases of a category, an order once
    for (sku, customer), seen in times.items():
        if (known := products.get(sku)) is not None:
            by_category.setdefault((known.category, customer), set()).update(seen)
    errors: dict[str, list[float]] = {}
    counts: dict[str, SkuPrediction] = {}
    for (sku, customer), seen in sorted(times.items()):
        product = products.get(sku)
        if product is None:
            continue  # a SKU the catalogue lacks: nothing to compare with
        ordered = sorted(seen)
        for k in range(1, len(ordered)):
            actual = ordered[k]
            if not start <= actual < end:
                continue
            gap = (actual - ordered[k - 1]).total_seconds() / 86400
            if gap < MIN_INTERVAL_DAYS:
                continue  # the same trip, not a repurchase
            line = counts.setdefault(
                sku,
                SkuPrediction(
                    sku=sku, title=product.title, repurchases=0, predicted=0, median_error_days=None,
                    median_bias_days=None, early=0, sources={},
                ),
            )  # fmt: skip
            line.repurchases += 1
            before = ordered[k - 1]  # what replenish_at knew at the purchase before: purchases paid by then
            category = sorted(t for t in by_category.get((product.category, customer), ()) if t <= before)
            cycle = replenish_cycle(facts_of(product, ordered[:k], category, shop.get(sku)))
            if cycle is None:
                continue
            line.predicted += 1
            line.sources[cycle.source] = line.sources.get(cycle.source, 0) + 1
            errors.setdefault(sku, []).append(gap - cycle.days)
            if gap < cycle.days:
                line.early += 1
    for sku, found in errors.items():
        counts[sku].median_error_days = round(statistics.median(abs(e) for e in found), 1)
        counts[sku].median_bias_days = round(statistics.median(found), 1)
    return sorted(counts.values(), key=lambda line: (-line.repurchases, line.sku))
