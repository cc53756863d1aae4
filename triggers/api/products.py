"""The product catalogue: `POST /products` (one product or a batch, idempotent per SKU: all or
nothing) and `GET /products/{sku}` (the product with its learned repurchase cycle)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from core.access import Permission
from core.products import Product, normalise_sku
from store.products import CycleLine, Saved, cycle_lines, get_product, save_products
from triggers.api.deps import Context, Problem, allowed
from triggers.http import BodyRefused, read_json

router = APIRouter(tags=["products"])

MAX_BATCH = 1000
_PRODUCT = Product.model_json_schema()


class ProductProblem(BaseModel):
    index: int = Field(description="Position in the batch (0 for a single product).")
    sku: str | None = None
    field: str
    message: str


class ProductsRefused(BaseModel):
    detail: str
    problems: list[ProductProblem]


class ProductView(Product):
    learned: CycleLine | None = Field(default=None, description="Its repurchase cycle as learned from the orders.")


def _problems(index: int, item: Any, err: ValidationError) -> list[ProductProblem]:
    sku = item.get("sku") if isinstance(item, dict) else None
    shown = sku if isinstance(sku, str) and sku.isprintable() and len(sku) <= 100 else None
    return [
        ProductProblem(index=index, sku=shown, field=".".join(str(p) for p in e["loc"]) or "product", message=e["msg"])
        for e in err.errors(include_input=False)
    ]


@router.post(
    "/products",
    response_model=Saved,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        413: {"model": Problem, "description": f"Body over the size limit, or over {MAX_BATCH} products."},
        422: {"model": ProductsRefused, "description": "Nothing written: each bad product named, by index and SKU."},
    },
    dependencies=[Depends(allowed(Permission.SEND_EVENTS))],
    summary="Add or update products (one or a batch; the same product again changes nothing)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [_PRODUCT, {"type": "array", "items": _PRODUCT, "maxItems": MAX_BATCH}],
                    }
                }
            },
        }
    },
)
async def post_products(request: Request, api: Context) -> JSONResponse:
    try:
        payload = await read_json(request, api.max_body_bytes)
    except BodyRefused as refused:
        return JSONResponse({"detail": str(refused)}, status_code=refused.status)
    items: list[Any] = [payload] if isinstance(payload, dict) else payload if isinstance(payload, list) else []
    if not items:
        return JSONResponse({"detail": "send one product (an object) or a batch (a non-empty array)"}, status_code=422)
    if len(items) > MAX_BATCH:
        return JSONResponse({"detail": f"{len(items)} products in one batch; at most {MAX_BATCH}"}, status_code=413)
    products: list[Product] = []
    problems: list[ProductProblem] = []
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            product = Product.model_validate(item)
        except ValidationError as err:
            problems.extend(_problems(index, item, err))
            continue
        if product.sku in first:  # as the CSV import: a SKU once per batch, not the last silently winning
            problems.append(
                ProductProblem(
                    index=index, sku=product.sku, field="sku",
                    message=f"{product.sku!r} again (first at index {first[product.sku]}): send each SKU once",
                )
            )  # fmt: skip
            continue
        first[product.sku] = index
        products.append(product)
    if problems:
        bad = sorted({p.index for p in problems})
        refused = ProductsRefused(
            detail=f"nothing written: {len(bad)} of {len(items)} products are not valid "
            f"(index {', '.join(map(str, bad[:10]))}{', ...' if len(bad) > 10 else ''})",
            problems=problems,
        )
        return JSONResponse(refused.model_dump(mode="json"), status_code=422)
    now = datetime.now(UTC)
    saved = await api.store.run(lambda session: save_products(session, products, now))
    return JSONResponse(saved.model_dump(mode="json"), status_code=200)


@router.get(
    "/products/{sku:path}",
    response_model=ProductView,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}},
    dependencies=[Depends(allowed(Permission.READ_JOURNEYS))],
    summary="One product, with its repurchase cycle learned from the orders",
)
async def product(
    api: Context, sku: str = Path(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
) -> ProductView | JSONResponse:
    sku = normalise_sku(sku) or sku  # as the catalogue stored it (a `/` in a SKU is part of the path)

    def read(session) -> ProductView | None:
        found = get_product(session, sku)
        if found is None:
            return None
        learned = next((line for line in cycle_lines(session, skus=[sku]) if line.pairs), None)
        return ProductView(**found.model_dump(), learned=learned)

    view = await api.store.run(read)
    if view is None:
        return JSONResponse({"detail": f"no product {sku!r} in the catalogue"}, status_code=404)
    return view
