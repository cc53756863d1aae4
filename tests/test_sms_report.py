"""The SMS report (短信报表) on PostgreSQL and SQLite, through the API and the CLI: a ledger of Aliyun and
Twilio SMS over two days that meet at the shop's midnight, counted per day, signature and
template: submitted, delivered, failed by error code, replied, clicked, billed parts and cost."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pytest
from typer.testing import CliRunner

from core.config import Settings
from core.sms_registry import RegisteredTemplate, SmsRegistry
from definitions.loader import PACKAGE_DIR, Definitions
from journeys.cli import app as cli
from store.tables import LinkClickRow, MessageRow, ShortLinkRow, SmsReplyRow
from tests.helpers import shipped_definitions_with
from tests.test_access import KEYS
from tests.test_api import client_for
from triggers.api import create_app
from views.effect import Prices

ZONE = "Asia/Shanghai"
SHOP = "好店"
FLAGSHIP, MEMBERS = "好店旗舰店", "好店会员"
DAY1, DAY2 = "2026-11-11", "2026-11-12"
#: 23:30 on the 11th and 00:30 on the 12th in Shanghai: one UTC day (the 11th), two shop days.
LATE = datetime.fromisoformat("2026-11-11T23:30:00+08:00")
EARLY = datetime.fromisoformat("2026-11-12T00:30:00+08:00")
REGISTRY = SmsRegistry(
    signatures=[FLAGSHIP, MEMBERS],
    templates={
        "SMS_100001": RegisteredTemplate(kind="marketing", text="${name}，您的订单还未付款 回T退订", title="催付")
    },
    price_per_part=0.045,
)


def message(
    at: datetime,
    status: str,
    *,
    sign: str | None = FLAGSHIP,
    code: str | None = "SMS_100001",
    segments: int = 1,
    reason: str | None = None,
    error: str | None = None,
    channel: str = "sms",
) -> MessageRow:
    aliyun = code is not None
    return MessageRow(
        id=str(uuid.uuid4()), workflow_id=f"payment_reminder:{uuid.uuid4()}", run_id="r1", step="first_reminder",
        journey="payment_reminder", journey_version="v1", customer_id=f"c-{uuid.uuid4().hex[:6]}", order_id=None,
        channel=channel, address="+8613900001111", template="payment_reminder", category="marketing",
        status=status, reason=reason, error=error, at=at, body="【好店旗舰店】王芳，您的订单还未付款 回T退订",
        segments=segments, provider_template=code,
        template_data={"sign_name": sign, "params": {"name": "王芳"}} if aliyun else None, updated_at=at,
    )  # fmt: skip


def reply(to: MessageRow, at: datetime, key: str) -> SmsReplyRow:
    return SmsReplyRow(
        id=str(uuid.uuid4()), provider="aliyun", provider_key=key, number="+8613900001111",
        customer_id=to.customer_id, message_id=to.id, content="好的", received_at=at,
    )  # fmt: skip


@pytest.fixture
def ledger(store):
    """What the report should find, by (day, signature, template), on the ledger it writes."""
    delivered = message(LATE, "delivered")
    clicked = message(LATE - timedelta(hours=1), "clicked", segments=2)
    rows = [
        delivered,
        clicked,
        message(LATE, "undelivered", reason="undelivered", error="MK:0005: 用户关机"),
        message(LATE, "failed", reason="provider_rejected", error="isv.MOBILE_NUMBER_ILLEGAL: 号码格式错误"),
        message(LATE, "failed", reason="template_error", error="template 'payment_reminder' has no aliyun_sms"),
        message(LATE, "skipped", reason="quiet_hours"),  # never reached the provider: not in the report
        message(EARLY, "sent"),
        message(EARLY, "delivered", sign=MEMBERS, code="SMS_200002", segments=3),
        # Twilio (no registered template): the shop's name as signature, the journey's template.
        message(LATE, "undelivered", sign=None, code=None, reason="undelivered", error="Twilio 30003"),
        message(LATE, "delivered", sign=None, code=None, segments=2),
        message(LATE, "delivered", channel="email", sign=None, code=None),  # not an SMS
        message(EARLY + timedelta(days=2), "delivered"),  # after the period
        reply(delivered, LATE + timedelta(minutes=5), "seq-1"),
        reply(delivered, LATE + timedelta(minutes=6), "seq-2"),  # two replies, one message replied to
        reply(clicked, EARLY + timedelta(minutes=1), "seq-3"),
        ShortLinkRow(code="c0de", message_id=clicked.id, url="https://shop.example/i/1", created_at=LATE,
                     expires_at=LATE + timedelta(days=180)),
        LinkClickRow(code="c0de", message_id=clicked.id, at=LATE, user_agent="phone"),
        LinkClickRow(code="c0de", message_id=clicked.id, at=LATE, user_agent="phone"),
    ]  # fmt: skip
    with store.transaction() as session:
        session.add_all(rows)
    return {
        (DAY1, FLAGSHIP, "SMS_100001"): {
            "submitted": 3, "delivered": 2, "failed": 3, "replied": 2, "clicked": 1, "parts": 4,
            "failed_by_code": {"MK:0005": 1, "isv.MOBILE_NUMBER_ILLEGAL": 1, "template_error": 1},
        },
        (DAY1, SHOP, "payment_reminder"): {
            "submitted": 2, "delivered": 1, "failed": 1, "replied": 0, "clicked": 0, "parts": 3,
            "failed_by_code": {"Twilio 30003": 1},
        },
        (DAY2, FLAGSHIP, "SMS_100001"): {
            "submitted": 1, "delivered": 0, "failed": 0, "replied": 0, "clicked": 0, "parts": 1, "failed_by_code": {},
        },
        (DAY2, MEMBERS, "SMS_200002"): {
            "submitted": 1, "delivered": 1, "failed": 0, "replied": 0, "clicked": 0, "parts": 3, "failed_by_code": {},
        },
    }  # fmt: skip


FIGURES = ("submitted", "delivered", "failed", "replied", "clicked", "parts", "failed_by_code")


def by_key(report: dict) -> dict:
    return {(line["day"], line["signature"], line["template"]): line for line in report["lines"]}


def app_for(store):
    return create_app(
        store,
        api_keys=KEYS,
        definitions=Definitions(sms=REGISTRY),
        shop_timezone=ZONE,
        shop_name=SHOP,
        prices=Prices(sms=0.05, email=0.001, currency="CNY"),
    )


async def test_the_report_counts_each_day_signature_and_template(store, ledger):
    async with client_for(app_for(store)) as api:
        answer = await api.get(
            "/reports/sms", params={"since": DAY1, "until": DAY2}, headers={"Authorization": "Bearer k-read"}
        )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["timezone"], report["currency"], report["price_per_part"]) == (ZONE, "CNY", 0.045)  # sms.yaml's
    lines = by_key(report)
    assert {key: {name: line[name] for name in FIGURES} for key, line in lines.items()} == ledger
    flagship = lines[DAY1, FLAGSHIP, "SMS_100001"]
    assert flagship["cost"] == 0.18  # 4 parts at 0.045
    assert flagship["title"] == "催付"  # as registered in sms.yaml
    assert (flagship["delivery_rate"], flagship["click_rate"]) == (0.6667, 0.5)
    assert [line["day"] for line in report["lines"]] == sorted(line["day"] for line in report["lines"])
    totals = report["totals"]
    assert (totals["submitted"], totals["delivered"], totals["failed"], totals["parts"]) == (7, 4, 4, 11)
    assert totals["cost"] == 0.495
    assert totals["failed_by_code"] == {
        "MK:0005": 1,
        "Twilio 30003": 1,
        "isv.MOBILE_NUMBER_ILLEGAL": 1,
        "template_error": 1,
    }


async def test_without_a_price_in_sms_yaml_a_part_costs_journeys_sms_price(store, ledger):
    app = create_app(store, shop_timezone=ZONE, shop_name=SHOP, prices=Prices(sms=0.05, email=0, currency="CNY"))
    async with client_for(app) as api:
        report = (await api.get("/reports/sms", params={"since": DAY1, "until": DAY1})).json()
    assert report["price_per_part"] == 0.05
    assert {key[0] for key in by_key(report)} == {DAY1}  # until a date: that day included, not the next
    assert report["totals"]["parts"] == 7 and report["totals"]["cost"] == 0.35


async def test_a_bad_period_is_a_422_naming_the_parameter(store):
    async with client_for(app_for(store)) as api:
        headers = {"Authorization": "Bearer k-read"}
        bad = await api.get("/reports/sms", params={"since": "11/11"}, headers=headers)
        backwards = await api.get("/reports/sms", params={"since": DAY2, "until": DAY1}, headers=headers)
        ingest = await api.get("/reports/sms", headers={"Authorization": "Bearer k-ingest"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("since: '11/11' is not a date")
    assert backwards.status_code == 422 and "must be before until" in backwards.json()["detail"]
    assert ingest.status_code == 403  # the order system's key reads no reports


def test_the_cli_prints_the_report_as_a_table_and_as_json(store, ledger, monkeypatch, tmp_path):
    # The shipped sms.yaml (the shipped templates are registered in it) with the shop's price.
    shipped = (PACKAGE_DIR / "sms.yaml").read_text(encoding="utf-8")
    folder = shipped_definitions_with(tmp_path / "definitions", {"sms.yaml": f"{shipped}\nprice_per_part: 0.045\n"})
    monkeypatch.setenv("DATABASE_URL", store.url)
    monkeypatch.setenv("JOURNEYS_SHOP_TIMEZONE", ZONE)
    monkeypatch.setenv("JOURNEYS_SHOP_NAME", SHOP)
    args = ["report", "sms", "--since", DAY1, "--until", DAY2, "--definitions", str(folder)]
    as_json = CliRunner().invoke(cli, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert {key: {name: line[name] for name in FIGURES} for key, line in by_key(report).items()} == ledger

    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == f"SMS {DAY1} 00:00 to 2026-11-13 00:00 ({ZONE}), 0.045 {Settings.default('currency')} a part"
    assert lines[1].split() == [
        "day", "signature", "template", "submitted", "delivered", "failed", "replied", "clicked", "parts", "cost",
    ]  # fmt: skip
    flagship = next(n for n, line in enumerate(lines) if line.startswith(f"{DAY1} {FLAGSHIP}"))
    assert lines[flagship].split() == [DAY1, FLAGSHIP, "SMS_100001", "3", "2", "3", "2", "1", "4", "0.18"]
    assert lines[flagship + 1] == "  failed: MK:0005 1, isv.MOBILE_NUMBER_ILLEGAL 1, template_error 1"
    assert lines[-2].split() == ["total", "-", "7", "4", "4", "2", "1", "11", "0.50"]

    bad = CliRunner().invoke(cli, ["report", "sms", "--since", "tomorrow", "--definitions", str(folder)])
    assert bad.exit_code == 2 and "--since: 'tomorrow' is not a date" in bad.output


def test_the_cli_refuses_options_of_the_other_report(store, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", store.url)
    folder = shipped_definitions_with(tmp_path / "definitions", {})
    mixed = CliRunner().invoke(cli, ["report", "sms", "--from", DAY1, "--definitions", str(folder)])
    assert (
        mixed.exit_code == 2
        and "journeys report sms: --from belongs to the effect report (`journeys report`)" in mixed.output
    )
    effect = CliRunner().invoke(cli, ["report", "--since", DAY1, "--definitions", str(folder)])
    assert effect.exit_code == 2 and "journeys report: --since belongs to `journeys report sms`" in effect.output
    unknown = CliRunner().invoke(cli, ["report", "smss", "--definitions", str(folder)])
    assert unknown.exit_code == 2 and "'smss' is not a report; give none (the effect) or sms" in unknown.output
