"""Importing a platform's order export (`journeys import orders`, `POST /imports`) as history, on
SQLite and PostgreSQL: a generated 10,000-row Taobao report (GBK, a BOM, duplicates, bad rows,
full-width digits, quoted commas) gives each buyer the purchases and RFM it should, starts no
journey and sends nothing, and importing it again changes nothing."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from core.order_exports import FORMATS, ExportError, ExportReader, ImportProblem, parse_mapping
from core.orders import order_context
from core.rfm import score
from journeys.cli import app as cli
from store import queries
from store.tables import CustomerRow, ErasureRow, EventRow, InstanceRow, MessageRow
from tests.data.order_exports import SHANGHAI, taobao_export, write_csv
from triggers.api import create_app
from triggers.imports import run_import
from triggers.router import plan

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=SHANGHAI)
PROBLEM = re.compile(r"^export\.csv:(\d+): ([^:]+): (.+)$")


def reader(path: Path, export: str = "taobao", mapping: dict[str, str] | None = None, name: str = "export.csv"):
    return ExportReader(path, FORMATS[export], mapping, timezone="Asia/Shanghai", default_region="CN", name=name)


def count(store, column) -> int:
    with store.transaction() as session:
        return session.scalar(select(func.count(column)))


@pytest.fixture(scope="module")
def export():
    return taobao_export(10_000, now=NOW)


def test_a_taobao_export_imports_the_same_way_twice_sends_nothing_and_gives_the_expected_rfm(store, tmp_path, export):
    lines, expected = export
    path = write_csv(tmp_path / "export.csv", lines, encoding="gbk")  # saved again by Excel on Windows

    first = run_import(store, reader(path))
    assert first.tally.encoding == "gb18030"
    c = first.counts
    assert (c.rows, c.orders, c.duplicates, c.skipped) == (
        expected.rows,
        expected.orders,
        expected.duplicates,
        expected.bad_rows,
    )
    assert c.masked_phones == expected.masked and c.erased == 0 and c.left_for_exits == 0
    assert c.customers_new == count(store, CustomerRow.customer_id) == len(expected.buyers)
    assert c.events_new == count(store, EventRow.event_id) and c.events_known == 0
    assert len(first.problems) == expected.bad_rows
    for text in first.problems:
        assert PROBLEM.match(text), text
    assert any(": 订单编号: '3.00000E+18' was turned into a number by a spreadsheet" in p for p in first.problems)

    again = run_import(store, reader(path))
    assert again.counts.events_new == 0 and again.counts.events_known == c.events_new
    assert (again.counts.customers_new, again.counts.customers_updated) == (0, 0)
    assert again.counts.customers_unchanged == c.customers_new
    assert again.problems == first.problems

    with store.transaction() as session:
        # History: every event written as dispatched backfill with the router's note, so the
        # dispatcher never routes it; nothing started, nothing sent.
        notes = set(session.execute(select(EventRow.backfill, EventRow.note, EventRow.dispatched_at.is_(None))))
        assert notes == {(True, "backfill: history, started nothing", False)}
        assert session.scalar(select(func.count()).select_from(InstanceRow)) == 0
        assert session.scalar(select(func.count()).select_from(MessageRow)) == 0
        # Each buyer's RFM as of NOW, against the purchases the generator made.
        found = queries.purchases_of_customers(session, sorted(expected.purchases), NOW)
        for buyer, made in expected.purchases.items():
            held = [
                (paid, amount) for paid, amount, refunded in made if not refunded and paid > NOW - timedelta(days=365)
            ]
            rfm = score(found[buyer], NOW)
            assert rfm.purchases == len(held), buyer
            assert rfm.amount == pytest.approx(sum(amount for _, amount in held)), buyer
            assert rfm.last_purchase_at == (max(paid for paid, _ in held).astimezone(UTC) if held else None), buyer
        # Each order's status as the engine tells it, and the buyers' phones in E.164.
        for order_id, status in list(expected.statuses.items())[:300]:
            assert order_context(order_id, queries.events_of_order(session, order_id))["status"] == status, order_id
        phones = {cid: phone for cid, phone in session.execute(select(CustomerRow.customer_id, CustomerRow.phone))}
    assert {buyer: phones[buyer] for buyer in expected.phones} == expected.phones
    assert all(phones[buyer] is None for buyer in phones if buyer not in expected.phones)


def test_the_bom_and_the_gbk_copies_of_an_export_read_alike(tmp_path, export):
    lines, _ = export
    utf8 = write_csv(tmp_path / "bom.csv", lines[:2000], encoding="utf-8-sig")
    gbk = write_csv(tmp_path / "gbk.csv", lines[:2000], encoding="gbk")
    read_utf8, read_gbk = list(reader(utf8).read()), list(reader(gbk).read())
    assert len(read_utf8) > 1900
    assert [_shape(item) for item in read_utf8] == [_shape(item) for item in read_gbk]


def _shape(item):
    if isinstance(item, ImportProblem):
        return item
    return item.customer, [e.model_dump() for e in item.events]


def _csv(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode(encoding))
    return path


HEADER = "订单编号,买家会员名,买家实际支付金额,订单状态,订单创建时间,订单付款时间,收货人姓名,联系手机,收货地址,宝贝标题,商家编码,宝贝种类,宝贝总数量\r\n"


def test_a_row_becomes_the_events_its_status_says_and_problems_name_file_line_and_column(tmp_path):
    path = _csv(
        tmp_path,
        HEADER
        + '="1001",小明,１２９．００,交易成功,2026-11-11 00:05:00,2026-11-11 00:06:00,王小明,\'13812345678,"浙江省 杭州市 西湖区 文三路1号",面霜,FC-30,1,１\r\n'
        + '1002,小红,12元,买家已付款，等待卖家发货,2026-11-11 01:00:00,2026-11-11 01:01:00,红,138****5678,,"标题,带逗号\r\n跨两行",X,1,1\r\n'
        + "1003,小刚,0.00,付款以前，卖家或买家主动关闭交易,2026/11/12 9:03,,刚,,,茶,T,1,1\r\n"
        + "1004,小刚,0.00,等待买家付款,昨天,,刚,,,茶,T,1,1\r\n"
        + "1005,,1.00,交易成功,2026-11-12 09:03:00,2026-11-12 09:04:00,,,,茶,T,1,1\r\n"
        + "1006,小刚,1.00,退款中,2026-11-12 09:03:00,2026-11-12 09:04:00,,,,茶,T,1,1\r\n"
        + "1007,小刚,5.00,卖家已发货，等待买家确认,2026-11-12 09:03:00,,,,,茶,T,1,1\r\n",
    )
    items = list(reader(path).read())
    problems = [reader(path).problem_text(i) for i in items if isinstance(i, ImportProblem)]
    assert problems == [
        "export.csv:3: 买家实际支付金额: '12元' is not an amount (digits with an optional decimal part)",
        "export.csv:6: 订单创建时间: '昨天' is not a time like 2026-11-11 20:05:00",
        "export.csv:7: 买家会员名: empty; every row needs it",
        "export.csv:8: 订单状态: '退款中' is not a status of the taobao format (等待买家付款, 买家已付款，等待卖家发货, "
        "等待卖家发货，即：买家已付款, 卖家部分发货, 卖家已发货，等待买家确认, 等待买家确认收货，即：卖家已发货, 买家已签收, 交易成功, "
        "交易关闭, 付款以前，卖家或买家主动关闭交易, 交易被淘宝关闭; or created, paid, shipped, delivered, confirmed, closed, "
        "cancelled, refunded)",
        "export.csv:9: 订单付款时间: empty, but the status '卖家已发货，等待买家确认' says the order was paid",
    ]
    first, closed = [i for i in items if not isinstance(i, ImportProblem)]
    assert [(e.event_id, e.type, e.occurred_at.isoformat(), e.data) for e in first.events] == [
        ("import:1001:order.created", "order.created", "2026-11-10T16:05:00+00:00",
         {"source": "import:taobao", "amount": 129.0, "items": [{"title": "面霜", "sku": "FC-30", "qty": 1}], "item_kinds": 1}),
        ("import:1001:order.paid", "order.paid", "2026-11-10T16:06:00+00:00", {"amount": 129.0}),
        ("import:1001:order.confirmed", "order.confirmed", "2026-11-10T16:06:00+00:00", {"time_estimated": True}),
    ]  # fmt: skip
    assert first.customer.model_dump(include={"customer_id", "name", "phone", "traits"}) == {
        "customer_id": "小明", "name": "王小明", "phone": "+8613812345678", "traits": {"province": "浙江省", "city": "杭州市"},
    }  # fmt: skip
    assert [(e.type, e.occurred_at.isoformat()) for e in closed.events] == [
        ("order.created", "2026-11-12T01:03:00+00:00"),
        ("order.closed", "2026-11-12T01:03:00+00:00"),
    ]
    assert order_context("1003", closed.events)["status"] == "closed"


def test_a_file_that_cannot_be_imported_says_why_before_anything_is_read(tmp_path):
    path = _csv(tmp_path, "单号,会员,时间\r\n1,a,2026-11-11 00:00:00\r\n")
    with pytest.raises(ExportError, match=r"^export\.csv:1: header: no column for order_id \(订单编号\); customer_id "):
        list(reader(path).read())
    with pytest.raises(ExportError, match="--map 单号=order_idx: 'order_idx' is not a field"):
        parse_mapping(["单号=order_idx"])
    with pytest.raises(ExportError, match=r"export\.csv:1: 编号: --map 编号=order_id names no column of the file"):
        reader(path, mapping={"order_id": "编号"}).check_header()
    with pytest.raises(ExportError, match="the file is empty"):
        reader(_csv(tmp_path, "")).check_header()


def test_jd_item_rows_make_one_order_and_a_repeated_item_row_is_a_duplicate(tmp_path):
    header = "订单号,商品ID,商品名称,订购数量,下单时间,订单金额,应付金额,订单状态,下单帐号,客户姓名,客户地址,联系电话,付款确认时间,订单完成时间\n"
    rows = (
        "J1,100,牙膏,2,2026-10-01 10:00:00,59.80,59.80,完成,jd_a,张三,北京 北京市 朝阳区,13912345678,2026-10-01 10:01:00,2026-10-05 10:00:00\n"
        "J1,200,牙刷,1,2026-10-01 10:00:00,59.80,59.80,完成,jd_a,张三,北京 北京市 朝阳区,13912345678,2026-10-01 10:01:00,2026-10-05 10:00:00\n"
        "J1,200,牙刷,1,2026-10-01 10:00:00,59.80,59.80,完成,jd_a,张三,北京 北京市 朝阳区,13912345678,2026-10-01 10:01:00,2026-10-05 10:00:00\n"
        "J2,300,毛巾,1,2026-10-02 10:00:00,20.00,20.00,已取消,jd_b,李四,,13912345679,,\n"
    )
    path = _csv(tmp_path, header + rows, encoding="gb18030")
    read = reader(path, "jd")
    j1, j2 = list(read.read())
    assert j1.events[0].data["items"] == [
        {"title": "牙膏", "sku": "100", "qty": 2},
        {"title": "牙刷", "sku": "200", "qty": 1},
    ]
    assert [e.type for e in j1.events] == ["order.created", "order.paid", "order.confirmed"]  # no time to ship at
    assert j1.events[-1].occurred_at.isoformat() == "2026-10-05T02:00:00+00:00"
    assert [e.type for e in j2.events] == ["order.created", "order.cancelled"]
    assert (read.tally.rows, read.tally.orders, read.tally.duplicates) == (4, 2, 1)


def test_history_of_an_order_with_an_open_instance_is_left_for_the_dispatcher_to_end_it(
    sqlite_store, tmp_path, definitions
):
    path = _csv(
        tmp_path,
        HEADER
        + "2001,阿强,99.00,交易成功,2026-11-11 00:05:00,2026-11-11 00:06:00,,,,面霜,FC-30,1,1\r\n"
        + "2002,阿珍,99.00,交易成功,2026-11-11 00:05:00,2026-11-11 00:06:00,,,,面霜,FC-30,1,1\r\n",
    )
    with sqlite_store.transaction() as session:
        session.add(InstanceRow(workflow_id="payment_reminder:2001", run_id="r1", journey="payment_reminder",
                                journey_version="1", customer_id="阿强", order_id="2001", entered_at=NOW))  # fmt: skip
    state = run_import(sqlite_store, reader(path))
    assert state.counts.left_for_exits == 3 and state.counts.events_new == 6
    pending = [event for event, backfill in _pending(sqlite_store, "阿强") if backfill]
    assert [e.order_id for e in pending] == ["2001"] * 3
    assert _pending(sqlite_store, "阿珍") == []
    # The router's meaning of history: these may end the instance, and start nothing.
    assert {d.action for e in pending for d in plan(e, definitions, backfill=True)} == {"signal"}


def _pending(store, customer_id):
    with store.transaction() as session:
        return queries.pending_events_of(session, customer_id)


def test_an_erased_customer_stays_erased_and_a_known_one_is_only_filled_in(sqlite_store, tmp_path):
    path = _csv(
        tmp_path,
        HEADER
        + '3001,老王,99.00,交易成功,2026-11-11 00:05:00,2026-11-11 00:06:00,王五,13812345678,"广东省 深圳市 南山区",面霜,FC-30,1,1\r\n'
        + "3002,已删,99.00,交易成功,2026-11-11 00:05:00,2026-11-11 00:06:00,某人,13812345679,,面霜,FC-30,1,1\r\n",
    )
    with sqlite_store.transaction() as session:
        session.add(CustomerRow(customer_id="老王", name="王老板", timezone="Asia/Shanghai", locale="zh-CN",
                                traits={"city": "广州市"}, updated_at=NOW))  # fmt: skip
        session.add(ErasureRow(customer_id="已删", erased_at=NOW, requested_by="dpo", removed={}))
    state = run_import(sqlite_store, reader(path))
    assert (state.counts.erased, state.counts.customers_updated, state.counts.customers_new) == (1, 1, 0)
    with sqlite_store.transaction() as session:
        wang = session.get(CustomerRow, "老王")
        assert (wang.name, wang.phone, wang.traits) == (
            "王老板",
            "+8613812345678",
            {"city": "广州市", "province": "广东省"},
        )
        assert session.get(CustomerRow, "已删") is None
        assert session.scalar(select(func.count()).select_from(EventRow).where(EventRow.customer_id == "已删")) == 0


def test_the_command_maps_columns_and_a_dry_run_writes_nothing(store, tmp_path):
    path = _csv(
        tmp_path,
        "单号,会员,下单,付款,实付,手机\n"
        "G1,c1,2026-11-01 10:00:00,2026-11-01 10:05:00,100,13812345678\n"
        "G2,c1,2026-11-02 10:00:00,,,13812345678\n"
        "G3,c2,2026-11-03 10:00:00,2026-11-03 10:05:00,abc,\n",
    )
    options = ["--format", "generic", "--map", "单号=order_id", "--map", "会员=customer_id", "--map", "下单=created_at",
               "--map", "付款=paid_at", "--map", "实付=amount", "--map", "手机=phone", "--no-progress"]  # fmt: skip
    env = {"DATABASE_URL": store.url}
    dry = CliRunner().invoke(cli, ["import", "orders", str(path), *options, "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "dry run: 3 rows read" in dry.output
    assert "events: would write 3 new, 0 already in the log" in dry.output
    assert "customers: 1 new, 0 filled in, 0 unchanged" in dry.output
    assert f"{path}:4: 实付: 'abc' is not an amount" in dry.output
    assert count(store, EventRow.event_id) == 0 and count(store, CustomerRow.customer_id) == 0

    real = CliRunner().invoke(cli, ["import", "orders", str(path), *options], env=env)
    assert real.exit_code == 0, real.output
    assert "events: wrote 3 new, 0 already in the log" in real.output
    again = CliRunner().invoke(cli, ["import", "orders", str(path), *options], env=env)
    assert "events: wrote 0 new, 3 already in the log" in again.output
    assert "customers: 0 new, 0 filled in, 1 unchanged" in again.output
    with store.transaction() as session:
        assert session.get(CustomerRow, "c1").phone == "+8613812345678"
        assert order_context("G2", queries.events_of_order(session, "G2"))["status"] == "created"

    wrong = CliRunner().invoke(cli, ["import", "orders", str(path), "--format", "taobao", "--no-progress"], env=env)
    assert wrong.exit_code == 2
    assert f"{path}:1: header: no column for order_id (订单编号)" in wrong.output


async def test_an_upload_imports_in_the_background_with_progress_and_no_500_for_any_file(store, tmp_path, export):
    lines, expected = export
    body = write_csv(tmp_path / "export.csv", lines[:3000], encoding="utf-8-sig").read_bytes()
    app = create_app(store, max_import_bytes=len(body) + 10)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys") as api:
        csv_type = {"Content-Type": "text/csv"}
        started = await api.post("/imports?format=taobao&name=export.csv", content=body, headers=csv_type)
        assert started.status_code == 202, started.text
        job = await _finished(api, started.json()["url"])
        assert job["status"] == "done" and job["bytes_read"] == job["bytes_total"] == len(body)
        assert job["counts"]["rows"] == 3000 and job["counts"]["events_new"] == count(store, EventRow.event_id) > 0
        assert job["problem_count"] == len(job["problems"]) > 0
        assert all(PROBLEM.match(text) for text in job["problems"])
        assert job["rows_per_second"] > 0

        again = await _finished(api, (await api.post("/imports", content=body, headers=csv_type)).json()["url"])
        assert again["counts"]["events_new"] == 0 and again["counts"]["customers_new"] == 0

        refused = [
            await api.post("/imports", content=body + b"x" * 20, headers=csv_type),
            await api.post("/imports", content=b"a,b\n1,2\n", headers=csv_type),
            await api.post("/imports", content=body, headers={"Content-Type": "text/plain"}),
            await api.post("/imports?format=ebay", content=body, headers=csv_type),
            await api.post("/imports?map=nothing", content=body, headers=csv_type),
            await api.get("/imports/nope"),
        ]
        assert [r.status_code for r in refused] == [413, 422, 415, 422, 422, 404]
        assert "header: no column for order_id (订单编号)" in refused[1].json()["detail"]
        junk = await api.post(
            "/imports", content=bytes(range(256)) * 8, headers={"Content-Type": "application/octet-stream"}
        )
        assert junk.status_code == 422 and "header: no column for order_id" in junk.json()["detail"]
        odd = b'order_id,customer_id,created_at\n\x00\xff\xfe,\x81,x\n1,c\x00,2026-01-01\n"2\n3",c,2026-01-01 10:00\n'
        started = await api.post(
            "/imports?format=generic&name=odd.csv", content=odd, headers={"Content-Type": "application/octet-stream"}
        )
        assert started.status_code == 202, started.text
        job = await _finished(api, started.json()["url"])
        assert (job["status"], job["counts"]["events_new"], job["problem_count"]) == ("done", 0, 3), job
        assert job["problems"] == [
            "odd.csv:2: order_id: bytes that are not gb18030 text",
            "odd.csv:3: customer_id: holds a NUL character",
            "odd.csv:4: order_id: an id must not hold a control character",
        ]


async def _finished(api, url: str) -> dict:
    for _ in range(600):
        job = (await api.get(url)).json()
        if job["status"] != "running":
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} still running: {job}")
