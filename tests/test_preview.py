"""`journeys preview`: the message as a given customer would get it, on every channel, with the
subject, segment count and the channel the policy would pick, from the real store and event log."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from activities.journey import JourneyActivities
from channels import build_channels
from core.contact_policy import PolicyOverride
from definitions.drafts import kind_of
from definitions.loader import PACKAGE_DIR, load_definitions
from store import queries
from store.tables import DefinitionChangeRow, DefinitionFileRow
from tests.helpers import attempt, customer, event
from tests.test_policy import request
from tests.test_resources import copy_definitions
from views.preview import PreviewError, describe, preview

NOW = datetime(2026, 2, 1, 4, 0, tzinfo=UTC)
#: What the CLI and the API pass from Settings.
SHOP = {"shop_name": "Journeys", "default_region": "CN"}


def log(store, *events):
    with store.transaction() as session:
        for item in events:
            queries.store_event(session, item, NOW)


def save(store, person):
    with store.transaction() as session:
        queries.upsert_customer(session, person, NOW, "CN")


def test_preview_shows_each_channel_and_the_policys_pick(definitions, store):
    save(store, customer(phone="13800000001"))
    log(store, event("order.created", "2026-02-01 10:00+08:00", order="o1", event_id="e1", amount=99))
    found = preview(
        definitions,
        store,
        journey="payment_reminder",
        step="first_reminder",
        customer_id="c1",
        order_id="o1",
        shop_name="小店",
        default_region="CN",
        now=NOW,
    )
    assert found.policy == "sms to +8613800000001"
    sms, email = found.channels
    assert sms.body.startswith("【小店】") and "o1" in sms.body
    assert (sms.encoding, sms.segments) == ("UCS-2", 1)
    assert email.subject and email.body.startswith("<p>")
    assert found.notes == []


def test_preview_names_why_the_policy_would_skip(definitions, store):
    save(store, customer(phone="010-12345678", email=None))
    found = preview(
        definitions,
        store,
        journey="review_request",
        step="review_request",
        customer_id="c1",
        order_id="o9",
        now=NOW,
        **SHOP,
    )
    assert found.policy == "skipped (no_contact)"
    # the record keeps a contact in one form (E.164), the landline typed as 010-12345678 too
    assert "phone '+861012345678' is not a mobile number" in found.notes
    assert "order 'o9' has no events in the log: only its id is known" in found.notes
    with store.transaction() as session:
        queries.upsert_customer(session, customer(), NOW, "CN")
        queries.add_suppression(session, "sms", "+8613800000001", "all", "STOP", NOW)
    assert (
        preview(
            definitions, store, journey="review_request", step="review_request", customer_id="c1", now=NOW, **SHOP
        ).policy
        == "email to wangfang@example.com"
    )


def test_preview_applies_quiet_hours_as_the_send_would(definitions, store):
    """The preview decides with the send activity's own rule: at 23:00 in Shanghai the SMS waits."""
    save(store, customer(phone="13800000001"))
    night = datetime(2026, 2, 1, 15, 0, tzinfo=UTC)  # 23:00 in Asia/Shanghai
    found = preview(
        definitions, store, journey="payment_reminder", step="first_reminder", customer_id="c1", now=night, **SHOP
    )
    assert found.policy == "sms to +8613800000001, held by quiet hours until 2026-02-02 08:00 (customer's time)"


def test_preview_refuses_unknown_names(definitions, store):
    save(store, customer())
    with pytest.raises(PreviewError, match="no journey 'nope'"):
        preview(definitions, store, journey="nope", step="x", customer_id="c1", **SHOP)
    with pytest.raises(PreviewError, match="its send steps: first_reminder"):
        preview(definitions, store, journey="payment_reminder", step="x", customer_id="c1", **SHOP)
    with pytest.raises(PreviewError, match="no customer 'ghost'"):
        preview(definitions, store, journey="payment_reminder", step="first_reminder", customer_id="ghost", **SHOP)


def test_preview_command(sqlite_store, tmp_path):
    save(sqlite_store, customer(name="Amy", locale="en", phone="+14155550123", region="US"))
    env = {**os.environ, "DATABASE_URL": sqlite_store.url, "JOURNEYS_SHOP_NAME": "Shop"}
    command = [
        str(Path(sys.executable).parent / "journeys"),
        "preview",
        "review_request",
        "review_request",
        "--customer",
        "c1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "policy now: sms to +14155550123" in done.stdout
    assert "[sms] (en, " in done.stdout and "GSM-7, 1 segment" in done.stdout
    assert "Reply STOP to opt out" in done.stdout  # review_request is marketing
    assert "Subject: " in done.stdout
    # Beside it, the text as Aliyun would send it to a mainland number (review_request is registered).
    assert "[sms via Aliyun] (template SMS_460000204, signature 【示例商城】, " in done.stdout
    assert "【示例商城】亲爱的Amy，订单" in done.stdout and "回T退订" in done.stdout
    bad = subprocess.run(
        [*command[:2], "nope", "x", "--customer", "c1"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert bad.returncode == 2 and "no journey 'nope'" in bad.stderr


def test_preview_shows_a_capped_message_waiting_for_its_slot(store, tmp_path, outbox):
    """A step with a deadline waits for the cap's next free slot; a waiting message of higher
    priority holds the slot ahead of it, and the preview says so."""
    folder = copy_definitions(tmp_path)
    path = folder / "review_request.yaml"
    path.write_text(
        path.read_text().replace("      max_lateness: 1d", "      deadline: now + days(10)\n      max_lateness: 1d")
    )
    definitions = load_definitions(folder)
    save(store, customer())
    activities = JourneyActivities(store, build_channels(outbox), "小店", default_region="CN")
    noon = datetime(2026, 2, 2, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai, a Monday
    day = timedelta(days=1)
    for n in (0, 1):  # the cap (2 per 7 days) is full until the next Monday noon
        sent = request(step=f"p{n}", category="marketing", when=noon + n * day, fallback=None)
        assert attempt(1).run(activities.decide_message, sent).status == "sent"

    def policy(now):
        return preview(
            definitions, store, journey="review_request", step="review_request", customer_id="c1", now=now, **SHOP
        ).policy

    assert policy(noon + 2 * day) == (
        "sms to +8613800000001, deferred until 2026-02-09 12:00 (customer's time; cap marketing 2/7d: 2 sent "
        "since 2026-01-28T04:00:00+00:00)"
    )
    high = request(step="h", category="marketing", when=noon + 3 * day, fallback=None, deadline=noon + 9 * day)
    high = high.model_copy(update={"workflow_id": "logistics:c1", "policy": PolicyOverride(priority=60)})
    assert attempt(1).run(activities.decide_message, high).defer_until == noon + 7 * day
    assert policy(noon + 7 * day) == (
        "sms to +8613800000001, deferred until 2026-02-10 12:00 (customer's time; cap marketing 2/7d; a "
        "higher-priority message holds the slot)"
    )


def test_preview_shows_the_aliyun_text_with_its_parts_and_the_links_as_they_would_look(store, tmp_path):
    folder = copy_definitions(tmp_path)
    path = folder / "templates" / "review_request.yaml"
    text = path.read_text()
    assert "晒图好评即有好礼相送。" in text
    path.write_text(
        text.replace(
            "晒图好评即有好礼相送。",
            "晒图好评即有好礼相送：{{ link('https://shop.example/review/' ~ order.order_id) }}",
            1,
        )
    )
    definitions = load_definitions(folder)
    save(store, customer())
    log(store, event("order.created", "2026-02-01 10:00+08:00", order="o1", event_id="e1", amount=99))
    found = preview(
        definitions,
        store,
        journey="review_request",
        step="review_request",
        customer_id="c1",
        order_id="o1",
        now=NOW,
        link_base="https://s.shop.example",
        **SHOP,
    )
    sms = next(channel for channel in found.channels if channel.channel == "sms")
    assert sms.body.startswith(
        "【Journeys】亲爱的王芳，订单o1的宝贝还满意吗？晒图好评即有好礼相送：https://s.shop.example/l/preview000000001"
    )
    assert sms.links == ["https://shop.example/review/o1"] and sms.characters == len(sms.body)
    shown = sms.aliyun
    assert shown.body == "【示例商城】亲爱的王芳，订单o1的宝贝还满意吗？晒图好评即有好礼相送。回T退订"
    assert (shown.template_code, shown.sign_name, shown.params) == (
        "SMS_460000204",
        "示例商城",
        {"name": "王芳", "order": "o1"},
    )
    assert (shown.characters, shown.parts, shown.error) == (len(shown.body), 1, None)
    lines = describe(found)
    at = lines.index(
        f"[sms via Aliyun] (template SMS_460000204, signature 【示例商城】, {shown.characters} characters, "
        "1 billed part: 70 in one, else 67 a part)"
    )
    assert lines[at + 1] == shown.body
    assert "links (placeholder codes here; each send makes its own): https://shop.example/review/o1" in lines

    # A long name takes Aliyun past one part; one over its 35 characters a variable is refused, said so.
    save(store, customer(name="王" * 35))
    again = preview(
        definitions,
        store,
        journey="review_request",
        step="review_request",
        customer_id="c1",
        order_id="o1",
        now=NOW,
        **SHOP,
    )
    shown = next(channel for channel in again.channels if channel.channel == "sms").aliyun
    assert (shown.characters, shown.parts) == (len(shown.body), 2) and len(shown.body) > 70
    save(store, customer(name="王" * 36))
    again = preview(
        definitions,
        store,
        journey="review_request",
        step="review_request",
        customer_id="c1",
        order_id="o1",
        now=NOW,
        **SHOP,
    )
    shown = next(channel for channel in again.channels if channel.channel == "sms").aliyun
    assert shown.body is None and "is 36 characters, over Aliyun's limit of 35" in shown.error
    assert any(
        line.startswith("[sms via Aliyun] (template SMS_460000204, signature 【示例商城】) cannot send: ")
        for line in describe(again)
    )


def test_the_preview_command_shows_what_runs_with_a_published_template(sqlite_store, tmp_path):
    """A template published through the console (a change in the store) is what `journeys preview`
    renders, as the API and the worker run it; after a publication that does not load, the newest
    that does, as the engine runs it."""
    save(sqlite_store, customer(name="Amy", locale="en", phone="+14155550123", region="US"))
    template = (PACKAGE_DIR / "templates" / "review_request.yaml").read_text(encoding="utf-8")
    newer = template.replace('  en: "Hi ', '  en: "NEW Hi ', 1)
    assert newer != template

    def publish(seq: int, path: str, text: str) -> None:
        now = datetime.now(UTC)
        with sqlite_store.transaction() as session:
            session.add(
                DefinitionChangeRow(
                    id=f"chg-{seq}", title="", state="published", author="a", created_at=now, updated_at=now,
                    hash="h", seq=seq, published_at=now, reviewed_by="b",
                )
            )  # fmt: skip
            kind, name = kind_of(path)
            session.add(DefinitionFileRow(change_id=f"chg-{seq}", path=path, kind=kind, name=name, text=text, hash="h"))

    publish(1, "templates/review_request.yaml", newer)
    env = {**os.environ, "DATABASE_URL": sqlite_store.url, "JOURNEYS_SHOP_NAME": "Shop"}
    command = [str(Path(sys.executable).parent / "journeys"), "preview", "review_request", "review_request"]
    done = subprocess.run([*command, "--customer", "c1"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "NEW Hi Amy" in done.stdout
    # A later publication that does not load: the newest that does runs, as in the engine, and it says so.
    publish(2, "review_request.yaml", "name: [\n")
    broken = subprocess.run([*command, "--customer", "c1"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert broken.returncode == 0, broken.stderr
    assert "NEW Hi Amy" in broken.stdout
    assert "publication 2 of the definitions does not load: running publication 1" in broken.stderr
