"""Erasure reaches every copy of a contact, in every form and every file (issue 22, items 4 and 5),
in process, on both databases:

- contacts are stored in one form (E.164 phone, lower-cased email) when the customer record is
  written, whatever the shop typed; a contact that cannot be read is kept as typed and breaks
  nothing;
- a record an older release stored as typed (`13800000001`) while the STOP suppression came in
  E.164 (`+8613800000001`) is erased by every form: the suppression is hashed, the number is
  nowhere in plain text;
- the outbox file loses the customer's lines (others' stay, none lost to a concurrent writer),
  and retention removes its old lines;
- the loyalty programme's rows (points ledger, tier, tier changes, lifecycle stage) are deleted,
  and the daily lifecycle evaluation reads the erased customer no more;
- on SQLite, the raw bytes of the database and its write-ahead log hold no phone, email or name
  after the erasure (secure_delete, and a checkpoint).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select
from temporalio.testing import ActivityEnvironment

from activities import lifecycle
from activities.journey import JourneyActivities
from activities.loyalty import DailyReport
from activities.payloads import RetentionRequest
from activities.retention import RetentionActivities
from channels import build_channels
from channels.outbox import OutboxChannel
from core.channel import OutgoingMessage
from core.outbox import expire_lines, forget_customer
from definitions.loader import Definitions
from store import queries
from store.tables import Base, CustomerRow, LifecycleStageRow, MemberTierRow, PointsEntryRow, TierChangeRow
from tests.helpers import customer, event
from tests.test_policy import NOON, request
from triggers.api import create_app
from triggers.router import Router

TYPED, E164, NATIONAL = "13800000001", "+8613800000001", "138 0000 0001"
EMAIL, NAME = "Wang.Fang@Example.COM", "王芳"
#: Every form the customer's contacts may be written in; none may be left anywhere.
SECRETS = (TYPED, E164, NATIONAL, "138-0000-0001", EMAIL, EMAIL.lower(), NAME)


class NoInstances:
    """A Temporal client whose visibility lists nothing: no journeys to stop."""

    namespace = "default"

    async def list_workflows(self, query: str, **options):
        for _ in ():
            yield


def everything_in(store) -> str:
    """Every row of every table, as text."""
    with store.transaction() as session:
        return "\n".join(
            repr(tuple(row)) for table in Base.metadata.sorted_tables for row in session.execute(select(table))
        )


def leftovers(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def write_through_router(store, *events) -> None:
    """Apply customer events as the dispatcher does (Router._prepare writes the record)."""
    router = Router(None, Definitions(), store, "journeys", default_region="CN")  # type: ignore[arg-type]  # no starts: no client
    for item in events:
        with store.transaction() as session:
            queries.store_event(session, item, item.occurred_at)
        router._prepare(item, [])


def send_one(store, outbox: Path, customer_id: str = "c1") -> None:
    activities = JourneyActivities(store, build_channels(outbox), "小店", default_region="CN")
    outcome = ActivityEnvironment().run(activities.decide_message, request(customer_id=customer_id))
    assert outcome.status == "sent", outcome


async def erase_by_api(store, outbox: Path, customer_id: str = "c1") -> dict:
    async def temporal():
        return NoInstances()

    app = create_app(store, temporal=temporal, outbox=outbox)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys") as api:
        erased = await api.delete(f"/customers/{customer_id}")
    assert erased.status_code == 200, erased.text
    return erased.json()


# ------------------------------------------------------------------ item 4: one stored form


def test_the_record_is_stored_in_one_form_whatever_was_typed(store):
    created = event("customer.created", NOON, name=NAME, phone=TYPED, email=f"  {EMAIL} ", timezone="Asia/Shanghai")
    odd = event("customer.created", NOON, customer="c2", phone="call me", email="wangfang@", locale="en")
    us = event("customer.created", NOON, customer="c3", phone="(415) 555-0123", locale="en", region="US")
    write_through_router(store, created, odd, us)
    with store.transaction() as session:
        found = queries.get_customers(session, ["c1", "c2", "c3"])
    assert (found["c1"].phone, found["c1"].email) == (E164, EMAIL.lower())
    assert (found["c2"].phone, found["c2"].email) == ("call me", "wangfang@")  # unreadable: kept as typed
    assert found["c3"].phone == "+14155550123"  # read in the customer's own region

    later = event("customer.updated", NOON + timedelta(hours=1), phone="138-0000-0002")
    write_through_router(store, later)
    with store.transaction() as session:
        assert queries.get_customer(session, "c1").phone == "+8613800000002"


async def test_a_number_stored_as_typed_by_an_older_release_is_erased_by_every_form(store, tmp_path):
    """The issue's setup: the record holds `13800000001`, the STOP suppression `+8613800000001`."""
    outbox = tmp_path / "outbox.jsonl"
    with store.transaction() as session:  # as an older release wrote it, bypassing the one form
        session.add(CustomerRow(customer_id="c1", name=NAME, phone=TYPED, email=EMAIL, timezone="Asia/Shanghai",
                                locale="zh-CN", tags=[], unsubscribed=[], blacklisted=False, traits={},
                                updated_at=NOON))  # fmt: skip
        queries.store_event(session, event("customer.created", NOON, phone=TYPED, email=EMAIL, name=NAME), NOON)
    send_one(store, outbox)
    with store.transaction() as session:  # the customer replied STOP; Twilio reports E.164
        queries.add_suppression(session, "sms", E164, "all", "twilio STOP", NOON)
        queries.add_suppression(session, "email", EMAIL.lower(), "marketing", "unsubscribe link", NOON)
    assert leftovers(everything_in(store))

    queries.configure_salt("salt")
    try:
        erased = await erase_by_api(store, outbox)
        assert erased["removed"]["suppressions_hashed"] == 2
        assert erased["outbox_lines_removed"] == 1
        assert leftovers(everything_in(store)) == []
        assert leftovers(outbox.read_text(encoding="utf-8")) == []
        with store.transaction() as session:  # still opted out, as a hash
            assert queries.suppression_scope(session, "sms", E164) == "all"
            assert queries.suppression_scope(session, "email", EMAIL.lower()) == "marketing"
    finally:
        queries.configure_salt(None)


async def test_a_record_written_now_is_erased_with_its_suppression(store, tmp_path):
    outbox = tmp_path / "outbox.jsonl"
    write_through_router(store, event("customer.created", NOON, name=NAME, phone=TYPED, email=EMAIL,
                                      timezone="Asia/Shanghai"))  # fmt: skip
    send_one(store, outbox)
    with store.transaction() as session:
        queries.add_suppression(session, "sms", E164, "all", "twilio STOP", NOON)
    erased = await erase_by_api(store, outbox)
    assert erased["removed"] == {
        "customer_record": 1,
        "messages_scrubbed": 1,
        "events_scrubbed": 1,
        "suppressions_hashed": 1,
        "loyalty_rows": 0,
        "sms_replies": 0,
        "links_and_clicks": 0,
    }
    assert leftovers(everything_in(store)) == []


async def test_the_loyalty_rows_are_deleted_and_the_lifecycle_forgets_the_customer(store, tmp_path):
    day = timedelta(days=1)
    for customer_id in ("c1", "c2"):
        write_through_router(store, event("customer.created", NOON - 10 * day, customer=customer_id, name=NAME),
                             event("order.paid", NOON - 10 * day, customer=customer_id, order=f"o-{customer_id}"))  # fmt: skip
    assert list(lifecycle.daily(store, Definitions(), NOON, DailyReport(at=NOON))) == []  # the stages, silently
    with store.transaction() as session:
        for customer_id in ("c1", "c2"):
            session.add(PointsEntryRow(customer_id=customer_id, kind="earn", points=99, reason="purchase",
                                       source=f"order:o-{customer_id}", at=NOON, recorded_at=NOON))  # fmt: skip
            session.add(MemberTierRow(customer_id=customer_id, tier="vip", since=NOON, until=NOON + 365 * day,
                                      updated_at=NOON))  # fmt: skip
            session.add(TierChangeRow(customer_id=customer_id, from_tier=None, to_tier="vip", direction="up",
                                      reason="purchase", by="engine", source=f"order:o-{customer_id}", at=NOON))  # fmt: skip
    erased = await erase_by_api(store, tmp_path / "outbox.jsonl")
    assert erased["removed"]["loyalty_rows"] == 4
    with store.transaction() as session:
        for table in (PointsEntryRow, MemberTierRow, TierChangeRow, LifecycleStageRow):
            assert set(session.scalars(select(table.customer_id))) == {"c2"}, table.__tablename__
    # Their orders stay for effect reports, but the daily run evaluates only c2: no stage, no move for c1.
    later = NOON + 100 * day
    moved = list(lifecycle.daily(store, Definitions(), later, DailyReport(at=later)))
    assert [(e.customer_id, e.data["to"]) for e in moved] == [("c2", "churned")]
    with store.transaction() as session:
        assert set(session.scalars(select(LifecycleStageRow.customer_id))) == {"c2"}


# ------------------------------------------------------------------ item 5: files


def message(customer_id: str, n: int, body: str = "您好王芳") -> OutgoingMessage:
    return OutgoingMessage(message_id=f"m-{customer_id}-{n}", channel="sms", to=E164 if customer_id == "c1" else "+1",
                           body=body, journey="j", step="s", customer_id=customer_id, category="marketing")  # fmt: skip


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_outbox_loses_the_customers_lines_and_keeps_the_others(tmp_path):
    path = tmp_path / "outbox.jsonl"
    channel = OutboxChannel("sms", path)
    for n in range(3):
        channel.send(message("c1", n))
        channel.send(message("c2", n, body="hello"))
    with path.open("a", encoding="utf-8") as out:
        out.write('{"customer_id": "c1", "to": "+8613800000001", "bo\n')  # a line cut short by a crash
    path.chmod(0o640)
    assert forget_customer(path, "c1") == 4
    assert [line["message_id"] for line in lines_of(path)] == ["m-c2-0", "m-c2-1", "m-c2-2"]
    assert E164 not in path.read_text(encoding="utf-8") and NAME not in path.read_text(encoding="utf-8")
    assert path.stat().st_mode & 0o777 == 0o640
    assert forget_customer(path, "c1") == 0 and forget_customer(tmp_path / "none.jsonl", "c1") == 0
    assert forget_customer(None, "c1") == 0  # no outbox file configured


def test_no_line_is_lost_to_a_rewrite_while_workers_write(tmp_path):
    path = tmp_path / "outbox.jsonl"
    writers = [OutboxChannel("sms", path) for _ in range(4)]  # as separate workers hold their own

    def write(channel: OutboxChannel, w: int) -> None:
        for n in range(150):
            channel.send(message("c2", w * 1000 + n, body="hello"))
            channel.send(message("c1", w * 1000 + n))

    threads = [threading.Thread(target=write, args=(channel, w)) for w, channel in enumerate(writers)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        forget_customer(path, "c1")
    for thread in threads:
        thread.join()
    forget_customer(path, "c1")
    assert sorted(line["message_id"] for line in lines_of(path)) == sorted(
        f"m-c2-{w * 1000 + n}" for w in range(4) for n in range(150)
    )


def test_retention_removes_old_outbox_lines_dated_by_the_line_or_the_ledger(tmp_path):
    path = tmp_path / "outbox.jsonl"
    now = datetime.now(UTC)
    old, new = now - timedelta(days=400), now - timedelta(days=1)
    undated = [message("c1", 1).model_dump(mode="json"), message("c1", 2).model_dump(mode="json")]
    dated = [
        message("c2", n).model_dump(mode="json") | {"written_at": at.isoformat()} for n, at in ((3, old), (4, new))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*undated, *dated]) + "not json\n", encoding="utf-8")
    ledger = {"m-c1-1": old, "m-c1-2": new}
    assert expire_lines(path, now - timedelta(days=365), lambda ids: {i: ledger[i] for i in ids if i in ledger}) == 3
    assert [line["message_id"] for line in lines_of(path)] == ["m-c1-2", "m-c2-4"]


def test_the_retention_activity_reaches_the_outbox(store, tmp_path):
    outbox = tmp_path / "outbox.jsonl"
    with store.transaction() as session:
        queries.upsert_customer(session, customer(), NOON, "CN")
    send_one(store, outbox)
    line = lines_of(outbox)[0]
    assert line["written_at"] and line["to"] == "+8613800000001"
    report = ActivityEnvironment().run(
        RetentionActivities(store, outbox).expire_personal_data,
        RetentionRequest(before=datetime.now(UTC) + timedelta(seconds=1), batch=100),
    )
    assert (report.messages, report.outbox_lines) == (1, 1)
    assert outbox.read_text() == ""


# ------------------------------------------------------------------ item 5: SQLite's own files


async def test_the_sqlite_files_hold_nothing_of_an_erased_customer(sqlite_store, tmp_path):
    outbox = tmp_path / "outbox.jsonl"
    database = Path(sqlite_store.url.split("///", 1)[1])
    write_through_router(sqlite_store, event("customer.created", NOON, name=NAME, phone=TYPED, email=EMAIL,
                                             timezone="Asia/Shanghai"))  # fmt: skip
    write_through_router(sqlite_store, event("customer.updated", NOON + timedelta(minutes=1), tags=["vip"]))
    send_one(sqlite_store, outbox)
    with sqlite_store.transaction() as session:
        queries.add_suppression(session, "sms", E164, "all", "twilio STOP", NOON)
    files = [database, database.with_name(database.name + "-wal"), outbox]

    def raw_bytes() -> bytes:
        return b"".join(path.read_bytes() for path in files if path.exists())

    assert NAME.encode() in raw_bytes() and E164.encode() in raw_bytes()
    with sqlite_store.engine.connect() as connection:  # deleted bytes are zeroed whatever the build's default
        assert connection.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    await erase_by_api(sqlite_store, outbox)
    left = raw_bytes()
    for secret in SECRETS:
        for encoded in {secret.encode(), secret.encode("utf-16-le"), json.dumps(secret).encode()}:
            assert encoded not in left, f"{secret!r} is still in the files"
