"""The daily relearning of repurchase cycles (回购周期): every SKU's median interval between a
customer's purchases of it, from the whole order history (store.products.relearn_cycles). The
schedule that runs it is registered by the worker (journeys.product_cycles)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from temporalio import activity

from store import products
from store.db import Store


class CyclesRequest(BaseModel):
    """What one run learns: purchases paid by `at`; a cycle is usable on `min_pairs` pairs."""

    at: datetime
    min_pairs: int = Field(ge=1)


class CyclesReport(BaseModel):
    at: datetime
    skus: int = Field(description="SKUs bought again by someone.")
    usable: int = Field(description="Those whose cycle rests on at least min_pairs pairs.")
    pairs: int = Field(description="Repeat pairs, all SKUs together.")


class CyclesPolicy(BaseModel):
    """The schedule's argument."""

    min_pairs: int = Field(ge=1)


def product_cycles_schedule_id(task_queue: str) -> str:
    """The relearning schedule of the deployment on `task_queue`; its runs have this id and their time."""
    return f"journeys-product-cycles:{task_queue}"


class ProductCycleActivities:
    def __init__(self, store: Store):
        self.store = store

    @activity.defn(name="relearn_product_cycles")
    def relearn_product_cycles(self, request: CyclesRequest) -> CyclesReport:
        """One transaction: the table is replaced whole, so a retry finds nothing half-done."""
        with self.store.transaction() as session:
            learned = products.relearn_cycles(session, request.at, request.min_pairs)
        return CyclesReport(
            at=request.at,
            skus=len(learned),
            usable=sum(1 for cycle in learned if cycle.pairs >= request.min_pairs),
            pairs=sum(cycle.pairs for cycle in learned),
        )
