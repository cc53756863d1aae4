"""`journeys preview`: the message as a given customer would get it, on every channel, with the
subject, segment count and the channel the policy would pick, from the real store and event log."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from store import queries
from tests.helpers import customer, event
from views.preview import PreviewError, preview

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
    bad = subprocess.run(
        [*command[:2], "nope", "x", "--customer", "c1"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert bad.returncode == 2 and "no journey 'nope'" in bad.stderr
