"""The product catalogue as a shop fills and uses it: `POST /products` (idempotent per SKU, all or
nothing, each bad product named), `GET /products/{sku}`, the CSV import (UTF-8 with a BOM and GBK,
Chinese headers and titles, full-width digits, quoted commas, bad lines listed as file:line), the
order context joined with it in preview, the workflow and the router alike, and `bought:` segments,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from core.audience import Segment
from core.orders import order_context
from core.products import Product, ProductFacts, parse_cycle_days, parse_price
from core.records import apply_customer_event
from definitions.loader import load_definitions
from journeys.products import ImportFileError, import_products_file
from journeys.simulate import Simulation
from store import queries
from store.products import get_product, save_products
from store.segments import count_members, members
from tests.helpers import at, customer, event
from triggers.api import create_app
from views.preview import preview

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CREAM = Product(sku="cream-30", title="保湿面霜 30ml", category="skincare", price=129, tags=["面霜"], cycle_days=30)
TEA = Product(sku="tea-01", title="龙井 250g", category="tea", price="88.00")


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys")


# ------------------------------------------------------------------ reading what people type


@pytest.mark.parametrize(
    ("text", "days"),
    [("30", 30), ("３０", 30), (" 90天 ", 90), ("", None), ("  ", None), ("１８０ days", 180)],
)
def test_cycle_days_as_people_write_them(text, days):
    assert parse_cycle_days(text) == days


@pytest.mark.parametrize("text", ["三十", "30.5", "-30", "0", "99999", "30d"])
def test_cycle_days_that_are_not(text):
    with pytest.raises(ValueError):
        parse_cycle_days(text)


@pytest.mark.parametrize(
    ("text", "price"),
    [("129.00", 129.0), ("１２９．００", 129.0), ("¥129", 129.0), ("￥1,299", 1299.0), ("88元", 88.0), ("", None)],
)
def test_prices_as_people_write_them(text, price):
    assert parse_price(text) == price


@pytest.mark.parametrize("text", ["一百二十九元", "-5", "1e3", "12.5.1", "free", "12,5", "1,2,3,4", "1,29", ",129"])
def test_prices_that_are_not(text):
    with pytest.raises(ValueError):
        parse_price(text)


def test_a_product_takes_the_amount_rule_for_its_price():
    """The API and the CSV read a price by one rule (core.amounts.written_amount)."""
    for written, price in (("129.00", 129.0), ("１２", 12.0), ("12元", 12.0), ("¥1,299.50", 1299.5), (88, 88.0)):
        assert Product(sku="a", title="t", category="c", price=written).price == price == parse_price(str(written))
    for bad in ("-1", True, "12,5", "1,2,3,4", "1e3", float("nan")):
        with pytest.raises(ValueError, match="not a price"):
            Product(sku="a", title="t", category="c", price=bad)


# ------------------------------------------------------------------ the API


async def test_post_products_is_idempotent_per_sku_and_get_shows_one(store):
    async with client_for(create_app(store)) as api:
        first = await api.post("/products", json=[CREAM.model_dump(), TEA.model_dump()])
        assert first.status_code == 200, first.text
        assert first.json() == {"created": ["cream-30", "tea-01"], "updated": [], "unchanged": []}
        again = await api.post("/products", json=[CREAM.model_dump(), TEA.model_dump()])
        assert again.json() == {"created": [], "updated": [], "unchanged": ["cream-30", "tea-01"]}
        changed = await api.post("/products", json={**TEA.model_dump(), "cycle_days": 60})  # one product alone
        assert changed.json() == {"created": [], "updated": ["tea-01"], "unchanged": []}
        shown = await api.get("/products/tea-01")
        assert shown.status_code == 200
        assert shown.json() | {"learned": None} == {**TEA.model_dump(), "cycle_days": 60, "learned": None}
        missing = await api.get("/products/nope")
        assert missing.status_code == 404 and missing.json()["detail"] == "no product 'nope' in the catalogue"


async def test_a_bad_product_names_itself_and_nothing_is_written(store):
    batch = [
        CREAM.model_dump(),
        {"sku": "bad-price", "title": "x", "category": "c", "price": "12,5"},
        {"sku": "no-title", "category": "c"},
        {**TEA.model_dump(), "cycle_days": 0},
        {"sku": "nul", "title": "面霜\u0000", "category": "c"},
        {"sku": "ok-2", "title": "保湿\u3000面霜", "category": "skincare", "tags": ["\ud800"]},
    ]
    async with client_for(create_app(store)) as api:
        # ensure_ascii: the lone surrogate travels as "\ud800", as a buggy client would send it
        answer = await api.post("/products", content=json.dumps(batch), headers={"Content-Type": "application/json"})
        assert answer.status_code == 422
        body = answer.json()
        assert body["detail"] == "nothing written: 5 of 6 products are not valid (index 1, 2, 3, 4, 5)"
        named = {(p["index"], p["sku"], p["field"]) for p in body["problems"]}
        assert named == {
            (1, "bad-price", "price"), (2, "no-title", "title"), (3, "tea-01", "cycle_days"), (4, "nul", "title"),
            (5, "ok-2", "tags"),
        }  # fmt: skip
        for body_text in (b"{", b"[]", b"42"):
            refused = await api.post("/products", content=body_text, headers={"Content-Type": "application/json"})
            assert refused.status_code == 422, body_text
        assert (await api.get("/products/cream-30")).status_code == 404  # the good one was not written either
        assert (await api.get("/products/bad%00sku")).status_code == 422  # never a 500 for a path


# ------------------------------------------------------------------ the CSV import

CSV_ROWS = [
    "商家编码,商品名称,类目,价格,标签,回购周期",
    "cream-30,保湿面霜 30ml,skincare,１２９．００,面霜|补水,３０",
    'tea-01,"龙井, 特级 250g",tea,￥88,,',
    "vit-90,复合维生素,supplement,199,保健,90天",
    "bad-1,坏价格,skincare,一百元,,30",
    "bad-2,,skincare,10,,30",
    "cream-30,保湿面霜 again,skincare,129,,30",
    "bad-3,坏周期,skincare,10,,三十",
    "",
]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "gbk"])
def test_a_csv_file_imports_its_good_lines_and_lists_the_bad_ones(store, tmp_path, encoding):
    path = tmp_path / "products.csv"
    path.write_bytes("\r\n".join(CSV_ROWS).encode(encoding))
    found = import_products_file(store, path, now=T)
    assert found.problems == [
        f"{path}:5: price: '一百元' is not a price",
        f"{path}:6: title: String should have at least 1 character",
        f"{path}:7: sku: 'cream-30' again (first on line 2); this line is skipped",
        f"{path}:8: cycle_days: '三十' is not a number of days",
    ]
    assert found.saved is not None and found.saved.created == ["cream-30", "tea-01", "vit-90"]
    with store.transaction() as session:
        cream, tea = get_product(session, "cream-30"), get_product(session, "tea-01")
    assert cream == Product(
        sku="cream-30", title="保湿面霜 30ml", category="skincare", price=129.0, tags=["面霜", "补水"], cycle_days=30
    )
    assert tea is not None and tea.title == "龙井, 特级 250g" and tea.price == 88.0 and tea.cycle_days is None
    again = import_products_file(store, path, now=T + timedelta(days=1))
    assert again.saved is not None and again.saved.unchanged == ["cream-30", "tea-01", "vit-90"]
    assert again.saved.created == again.saved.updated == []


def test_a_file_without_the_columns_or_text_is_refused_whole(sqlite_store, tmp_path):
    no_sku = tmp_path / "a.csv"
    no_sku.write_text("title,category\n面霜,skincare\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match=r"a\.csv:1: the header has no sku column"):
        import_products_file(sqlite_store, no_sku)
    empty = tmp_path / "b.csv"
    empty.write_bytes(b"")
    with pytest.raises(ImportFileError, match="the file is empty"):
        import_products_file(sqlite_store, empty)


def test_journeys_products_import_and_cycles_commands(sqlite_store, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from journeys.cli import app

    path = tmp_path / "products.csv"
    path.write_bytes("\n".join(CSV_ROWS[:4]).encode("gbk"))
    monkeypatch.setenv("DATABASE_URL", sqlite_store.url)
    monkeypatch.setenv("JOURNEYS_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    dry = runner.invoke(app, ["products", "import", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"{path}: 3 of 3 lines good; nothing written" in dry.output
    done = runner.invoke(app, ["products", "import", str(path)])
    assert f"{path}: 3 new, 0 updated, 0 unchanged" in done.output
    again = runner.invoke(app, ["import", "products", str(path)])  # the same command, as `journeys import`
    assert f"{path}: 0 new, 0 updated, 3 unchanged" in again.output
    cycles = runner.invoke(app, ["products", "cycles"])
    assert "cream-30  保湿面霜 30ml  catalogue 30 d; learned: no repeat purchases" in cycles.output


# ------------------------------------------------------------------ the order context

ECHO = "sms:\n  zh-CN: \"{{ order.items[0].product.cycle_days }}|{{ order.categories | join(',') }}|{{ order.items[1].product | default('-') }}\"\n"

ECHO_JOURNEY = """\
name: echo_products
category: transactional
entry: {event: order.paid, key: order, condition: "order.items[0].product.cycle_days == 30 and 'skincare' in order.categories"}
steps:
  - send: {id: echo, channel: sms, template: echo}
"""


async def test_preview_the_workflow_and_the_router_see_the_same_products(tmp_path, store):
    """The router's entry condition holds only if it sees the product; the workflow prints it;
    preview prints the same. The unknown SKU stays as the order system sent it."""
    folder = tmp_path / "definitions"
    (folder / "templates").mkdir(parents=True)
    (folder / "templates" / "echo.yaml").write_text(ECHO)
    (folder / "echo_products.yaml").write_text(textwrap.dedent(ECHO_JOURNEY))
    definitions = load_definitions(folder)
    begin = at("2026-03-02 10:00+08:00")
    with store.transaction() as session:
        save_products(session, [CREAM, TEA.model_copy(update={"sku": "tea-02"})], begin)
    items = [{"sku": "cream-30", "qty": 1}, {"sku": "unknown-9", "qty": 2}]
    async with Simulation(definitions, store, begin) as sim:
        await sim.create_customer(customer(), begin)
        await sim.emit(event("order.created", begin, order="o1", amount=129, items=items))
        await sim.emit(event("order.paid", begin + timedelta(minutes=5), order="o1"))
        await sim.advance_to(begin + timedelta(minutes=10))
        [record] = sim.records()
        shown = preview(
            definitions, sim.store, journey="echo_products", step="echo", customer_id="c1", order_id="o1",
            shop_name="Journeys", default_region="CN",
        )  # fmt: skip
    want = "30|skincare|-"
    assert record["status"] == "sent" and record["body"].split("】", 1)[1] == want
    [sms] = [c for c in shown.channels if c.channel == "sms"]
    assert sms.body is not None and sms.body.split("】", 1)[1] == want


def test_the_order_context_without_a_catalogue_is_as_it_was():
    """An instance started before the catalogue (no facts in its input) replays with the order it
    was recorded with: no `categories`, items untouched."""
    created = event("order.created", T, order="o1", items=[{"sku": "cream-30"}, "junk", {"sku": 7}])
    assert order_context("o1", [created]) == {
        "items": [{"sku": "cream-30"}, "junk", {"sku": 7}], "order_id": "o1", "status": "created",
        "created_at": T.isoformat(),
    }  # fmt: skip
    joined = order_context("o1", [created], {"cream-30": ProductFacts(product=CREAM)})
    assert joined["categories"] == ["skincare"]
    assert joined["items"][0]["product"]["title"] == "保湿面霜 30ml"
    assert joined["items"][0]["replenish"] == {"days": 30.0, "source": "catalogue", "samples": 0}
    assert joined["items"][1:] == ["junk", {"sku": 7}]
    assert created.data["items"][0] == {"sku": "cream-30"}  # the event's own data is not changed
    assert order_context("o1", [created], {})["categories"] == []


# ------------------------------------------------------------------ bought: segments


def add_customer(session, customer_id: str) -> None:
    created = event("customer.created", T - timedelta(days=900), customer=customer_id, phone="+8613800000001")
    queries.upsert_customer(session, apply_customer_event(None, created), created.occurred_at, "CN")


def bought(session, customer_id: str, order: str, days_ago: float, items, refunded: bool = False) -> None:
    paid_at = T - timedelta(days=days_ago)
    found = [
        event("order.created", paid_at - timedelta(hours=1), customer=customer_id, order=order, items=items),
        event("order.paid", paid_at, customer=customer_id, order=order),
    ]
    if refunded:
        found.append(event("order.refunded", paid_at + timedelta(days=1), customer=customer_id, order=order))
    queries.store_events(session, found, T)


def test_bought_selects_by_category_and_sku_within_a_window(store):
    with store.transaction() as session:
        save_products(session, [CREAM, TEA], T)
        for customer_id in ("c1", "c2", "c3", "c4", "c5", "c6", "c7"):
            add_customer(session, customer_id)
        bought(session, "c1", "o1", 10, [{"sku": "cream-30"}])  # skincare, recent
        bought(session, "c2", "o2", 200, [{"sku": "cream-30"}])  # skincare, too long ago
        bought(session, "c3", "o3", 10, [{"sku": "tea-01"}, {"sku": "cream-30", "qty": 2}])  # both
        bought(session, "c4", "o4", 10, [{"sku": "cream-30"}], refunded=True)  # taken back
        bought(session, "c5", "o5", 10, "not a list")  # items the order system got wrong
        bought(session, "c6", "o6", 10, [7, "cream-30", None, {"sku": ["x"]}, {"sku": 42}])  # odd items
        queries.store_events(
            session,
            [event("order.created", T - timedelta(days=3), customer="c7", order="o7", items=[{"sku": "cream-30"}])],
            T,
        )  # created, never paid: not bought
    skincare = Segment.model_validate({"name": "s", "where": {"bought": {"category": "skincare", "within": "180d"}}})
    ever = Segment.model_validate({"name": "s", "where": {"bought": {"category": "skincare"}}})
    tea = Segment.model_validate({"name": "s", "where": {"bought": {"sku": "tea-01", "within": "30d"}}})
    not_tea = Segment.model_validate({"name": "s", "where": {"not": {"bought": {"sku": "tea-01"}}}})
    with store.transaction() as session:
        ids = {name: [m.customer_id for m in members(session, s, T, _rfm())] for name, s in
               {"skincare": skincare, "ever": ever, "tea": tea, "not_tea": not_tea}.items()}  # fmt: skip
        assert count_members(session, skincare, T, _rfm()) == 2
    assert ids == {
        "skincare": ["c1", "c3"],
        "ever": ["c1", "c2", "c3"],
        "tea": ["c3"],
        "not_tea": ["c1", "c2", "c4", "c5", "c6", "c7"],
    }


def test_bought_conditions_are_checked_when_a_segment_loads():
    for where, problem in [
        ({"bought": {"within": "30d"}}, "give one of category or sku"),
        ({"bought": {"category": "a", "sku": "b"}}, "give one of category or sku"),
        ({"bought": {"category": "a", "within": "thirty"}}, "is not a duration"),
        ({"bought": {"category": "a", "within": "99999999w"}}, "at most 3650d"),
        ({"bought": {"category": "a", "within": "9999999999999w"}}, "is not a duration"),  # past timedelta
        ({"bought": {"category": "a", "within": "0d"}}, "not over 0"),
        ({"bought": {"category": "a", "color": "red"}}, "Extra inputs are not permitted"),
    ]:
        with pytest.raises(ValueError, match=problem):
            Segment.model_validate({"name": "s", "where": where})


def _rfm():
    from core.rfm import DEFAULT_TABLE

    return DEFAULT_TABLE


# ------------------------------------------------------------------ review fixes (issue 26, second review)


async def test_a_sku_with_a_slash_or_full_width_letters_can_be_read_back(store):
    """What POST and the CSV accept, GET finds: `KM/001` (a path) and `ＳＫ００１` (stored as SK001)."""
    async with client_for(create_app(store)) as api:
        saved = await api.post(
            "/products",
            json=[
                {"sku": "KM/001", "title": "茶具", "category": "tea"},
                {"sku": "ＳＫ００１", "title": "面霜", "category": "c"},
            ],
        )
        assert saved.json()["created"] == ["KM/001", "SK001"]
        for path in ("/products/KM/001", "/products/KM%2F001"):
            shown = await api.get(path)
            assert shown.status_code == 200, (path, shown.text)
            assert shown.json()["title"] == "茶具"
        assert (await api.get("/products/%EF%BC%B3%EF%BC%AB%EF%BC%90%EF%BC%90%EF%BC%91")).json()["title"] == "面霜"


async def test_a_batch_naming_a_sku_twice_is_refused_as_the_csv_does(store):
    async with client_for(create_app(store)) as api:
        answer = await api.post(
            "/products", json=[CREAM.model_dump(), TEA.model_dump(), {**CREAM.model_dump(), "title": "另一个"}]
        )
        assert answer.status_code == 422
        [problem] = answer.json()["problems"]
        assert (problem["index"], problem["sku"], problem["field"]) == (2, "cream-30", "sku")
        assert "first at index 0" in problem["message"]
        assert (await api.get("/products/cream-30")).status_code == 404  # nothing written


def test_a_bom_file_with_one_gbk_cell_names_its_line(sqlite_store, tmp_path):
    path = tmp_path / "products.csv"
    path.write_bytes(
        "\ufeffsku,title,category\ncream-30,保湿面霜,skincare\n".encode() + "tea-01,龙井,tea\n".encode("gbk")
    )
    with pytest.raises(ImportFileError, match=r"products\.csv:3: not UTF-8 text .* UTF-8 BOM"):
        import_products_file(sqlite_store, path)


def test_bought_counts_an_order_from_its_first_payment(store):
    """An order first paid 200 days ago, with a second `order.paid` 10 days ago (a retried
    webhook), was bought 200 days ago: not within 180d, as RFM and the effect report count it."""
    with store.transaction() as session:
        save_products(session, [CREAM], T)
        add_customer(session, "c1")
        bought(session, "c1", "o1", 200, [{"sku": "cream-30"}])
        queries.store_events(session, [event("order.paid", T - timedelta(days=10), customer="c1", order="o1")], T)
    recent = Segment.model_validate({"name": "s", "where": {"bought": {"category": "skincare", "within": "180d"}}})
    by_sku = Segment.model_validate({"name": "s", "where": {"bought": {"sku": "ｃｒｅａｍ-30"}}})  # read as cream-30
    with store.transaction() as session:
        assert [m.customer_id for m in members(session, recent, T, _rfm())] == []
        assert [m.customer_id for m in members(session, by_sku, T, _rfm())] == ["c1"]


def test_bought_reads_an_items_sku_as_the_order_context_does(store):
    """` 42 ` and 42 are SKU 42, as the order context joins them; 42.5 and true are no SKU."""
    answer = Product(sku="42", title="茶饼", category="tea")
    with store.transaction() as session:
        save_products(session, [answer, Product(sku="42.5", title="半饼", category="tea")], T)
        for customer_id, sku in (("c1", " 42 "), ("c2", 42), ("c3", 42.5), ("c4", True)):
            add_customer(session, customer_id)
            bought(session, customer_id, f"o-{customer_id}", 10, [{"sku": sku}])
    tea = Segment.model_validate({"name": "s", "where": {"bought": {"category": "tea"}}})
    with store.transaction() as session:
        assert [m.customer_id for m in members(session, tea, T, _rfm())] == ["c1", "c2"]
    joined = [order_context("o", [event("order.created", T, order="o", items=[{"sku": s}])],
                            {"42": ProductFacts(product=answer), "42.5": ProductFacts(product=answer)})
              for s in (" 42 ", 42, 42.5, True)]  # fmt: skip
    assert ["product" in order["items"][0] for order in joined] == [True, True, False, False]
