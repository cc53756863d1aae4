"""Harassment limits on resources (防骚扰): a send step that hands out a coupon type is skipped with
`resource_limit` when the customer had one within `once_per`, or holds `max_unredeemed` issued and
neither redeemed (a declared event) nor expired. The rule is part of the one policy decision, through
the real send activity and store (SQLite and PostgreSQL); the definitions check what steps name."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, timedelta

import pytest

from definitions.loader import PACKAGE_DIR, check_definitions
from definitions.schema import Resource
from rules.caps import ResourceUses, resource_refusal, unredeemed
from store import queries
from tests.helpers import at, customer, event
from tests.test_policy import NOON, TEMPLATE, request, rows, save, sent_lines

COUPON = Resource(name="coupon_10off", once_per="30d", max_unredeemed=2, redeemed_by="coupon.redeemed")
T0 = at("2026-03-01 12:00+08:00")


def days(n: float):
    return T0 + timedelta(days=n)


# ------------------------------------------------------------------ the rule


@pytest.mark.parametrize(
    ("since_last", "refused"),
    [(29, True), (30 - 1 / 86400, True), (30, False), (31, False)],
)
def test_once_per_window_is_exact(since_last, refused):
    once = Resource(name="gift", once_per="30d")
    refusal = resource_refusal(once, days(since_last), ResourceUses(issued=(T0,)))
    assert (refusal is not None) == refused
    if refused:
        assert refusal == f"gift already issued at {T0.isoformat()}; at most once per 30d"


def test_a_later_issue_on_another_clock_still_counts():
    """Another journey may decide a moment later on its own clock: its issue counts all the same."""
    once = Resource(name="gift", once_per="1d")
    assert resource_refusal(once, T0, ResourceUses(issued=(T0 + timedelta(seconds=1),))) is not None


def test_each_redemption_redeems_the_oldest_issue_before_it():
    uses = ResourceUses(issued=(days(0), days(1), days(2)), redeemed=(days(3),))
    assert unredeemed(COUPON, days(4), uses) == 2
    # A redemption before any issue redeems nothing later.
    assert unredeemed(COUPON, days(4), ResourceUses(issued=(days(1),), redeemed=(days(0),))) == 1
    # Redeemed the moment it was issued: redeemed.
    assert unredeemed(COUPON, days(4), ResourceUses(issued=(days(1),), redeemed=(days(1),))) == 0
    # More redemptions than issues never go below zero.
    assert unredeemed(COUPON, days(4), ResourceUses(issued=(days(1),), redeemed=(days(2), days(3)))) == 0


def test_expired_issues_stop_counting_and_are_not_redeemed():
    expiring = COUPON.model_copy(update={"expires_after": "15d"})
    uses = ResourceUses(issued=(days(0), days(10)), redeemed=(days(20),))
    # The first had expired by the redemption on day 20, so the redemption took the second.
    assert unredeemed(expiring, days(21), uses) == 0
    assert unredeemed(expiring, days(14), ResourceUses(issued=(days(0),))) == 1
    assert unredeemed(expiring, days(15), ResourceUses(issued=(days(0),))) == 0  # expired exactly then


def test_max_unredeemed_refuses_at_the_limit():
    capped = Resource(name="coupon_10off", max_unredeemed=2, redeemed_by="coupon.redeemed")
    assert resource_refusal(capped, days(9), ResourceUses(issued=(days(0),))) is None
    refusal = resource_refusal(capped, days(9), ResourceUses(issued=(days(0), days(5))))
    assert refusal == "2 coupon_10off issued and not redeemed; at most 2"
    assert resource_refusal(capped, days(9), ResourceUses(issued=(days(0), days(5)), redeemed=(days(6),))) is None


# ------------------------------------------------------------------ in the decision, through the store


def coupon_request(workflow: str, when, resource: Resource = COUPON, **changes):
    return request(
        step="coupon",
        category="marketing",
        when=when,
        workflow_id=f"{workflow}:c1",
        journey=workflow,
        resource=resource,
        **changes,
    )


def redeem(store, when, resource="coupon_10off", customer_id="c1"):
    with store.transaction() as session:
        queries.store_event(session, event("coupon.redeemed", when, customer=customer_id, resource=resource), when)


def test_a_second_coupon_within_the_window_is_skipped_and_says_why(store, send, outbox):
    save(store, customer())
    first = send(coupon_request("care", NOON))
    assert (first.status, first.channel) == ("sent", "sms")
    second = send(coupon_request("winback", NOON + timedelta(days=29)))
    assert (second.status, second.reason, second.channel) == ("skipped", "resource_limit", "sms")
    ledger = {(r.journey, r.status): r for r in rows(store)}
    skipped = ledger[("winback", "skipped")]
    assert skipped.resource == "coupon_10off" and skipped.reason == "resource_limit"
    issued = NOON.astimezone(UTC).isoformat()  # as the store gives it back
    assert skipped.error == f"coupon_10off already issued at {issued}; at most once per 30d"
    assert ledger[("care", "sent")].resource == "coupon_10off"
    # The message itself tells the channel (a webhook to the shop's coupon system) what it hands out.
    [line] = sent_lines(outbox)
    assert (line["journey"], line["resource"]) == ("care", "coupon_10off")
    # Another resource, or none, is not limited by this one.
    other = Resource(name="birthday_gift", once_per="365d")
    assert send(coupon_request("birthday", NOON + timedelta(days=29), resource=other)).status == "sent"


def test_unredeemed_coupons_block_more_until_one_is_redeemed(store, send):
    save(store, customer())
    capped = Resource(name="coupon_10off", max_unredeemed=1, redeemed_by="coupon.redeemed")
    assert send(coupon_request("care", NOON, resource=capped)).status == "sent"
    blocked = send(coupon_request("winback", NOON + timedelta(days=40), resource=capped))
    assert (blocked.status, blocked.reason) == ("skipped", "resource_limit")
    # A redemption of some other coupon type, or by another customer, redeems nothing.
    redeem(store, NOON + timedelta(days=41), resource="birthday_gift")
    redeem(store, NOON + timedelta(days=41), customer_id="c2")
    still = send(coupon_request("winback2", NOON + timedelta(days=42), resource=capped))
    assert (still.status, still.reason) == ("skipped", "resource_limit")
    redeem(store, NOON + timedelta(days=43))
    assert send(coupon_request("winback3", NOON + timedelta(days=44), resource=capped)).status == "sent"


def test_a_message_that_failed_handed_nothing_out(store, send):
    save(store, customer("c1", phone=None, email=None))
    assert send(coupon_request("care", NOON)).reason == "no_contact"
    save(store, customer())
    assert send(coupon_request("winback", NOON + timedelta(days=1))).status == "sent"


def test_the_resource_limit_comes_before_the_frequency_cap(store, send):
    save(store, customer())
    assert send(coupon_request("care", NOON)).status == "sent"
    assert send(request(step="promo", category="marketing", workflow_id="promo:c1", journey="promo")).status == "sent"
    # Both limits would refuse; the more specific reason is recorded.
    outcome = send(coupon_request("winback", NOON + timedelta(hours=1)))
    assert (outcome.status, outcome.reason) == ("skipped", "resource_limit")


def test_a_retried_coupon_step_is_decided_once(store, send, outbox):
    save(store, customer())
    first = send(coupon_request("care", NOON))
    again = send(coupon_request("care", NOON), 2)  # a retry of the same run and step: the ledger row answers
    assert (first.status, again.status, again.message_id) == ("sent", "sent", first.message_id)
    assert len(sent_lines(outbox)) == 1


# ------------------------------------------------------------------ the definitions


def copy_definitions(tmp_path):
    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return folder


def test_shipped_definitions_declare_the_spring_coupon(definitions):
    broadcast, snapshot = definitions.broadcasts["spring_festival_care"]
    assert broadcast.send.resource == "spring_coupon"
    assert snapshot.resources == {"spring_coupon": definitions.resources["spring_coupon"]}
    assert definitions.resources["spring_coupon"].redeemed_by == "coupon.redeemed"
    # Journeys handing out nothing carry no resources.
    assert all(not snapshot.resources for snapshot in definitions)


def test_a_step_naming_an_undeclared_resource_is_a_problem(tmp_path):
    folder = copy_definitions(tmp_path)
    path = folder / "revisit_28d.yaml"
    path.write_text(path.read_text().replace("template: revisit_28d", "template: revisit_28d\n      resource: voucher"))
    _, problems = check_definitions(folder)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:")
    assert problems[0].endswith(
        "send.resource: unknown resource 'voucher' (declare it in resources.yaml); declared: spring_coupon"
    )


def test_resource_declarations_are_checked(tmp_path):
    folder = copy_definitions(tmp_path)
    (folder / "resources.yaml").write_text(
        "resources:\n"
        "  - {name: a, once_per: 30d, redeemed_by: coupon.used}\n"
        "  - {name: b, max_unredeemed: 0}\n"
        "  - {name: c, once_per: monthly}\n"
        "  - {name: spring_coupon, once_per: 30d}\n"
        "  - {name: spring_coupon, once_per: 7d}\n"
    )
    loaded, problems = check_definitions(folder)
    path = folder / "resources.yaml"
    assert problems == [
        f"{path}:3: resources[1].max_unredeemed: 0: Input should be greater than or equal to 1",
        f"{path}:4: resources[2].once_per: 'monthly': String should match pattern '^-?(\\d+[wdhms])+$'",
        f"{path}:6: resources[4].name: 'spring_coupon' is declared twice",
        f"{path}:2: resources.a.redeemed_by: 'coupon.used' is not a known event type (declare it in events.yaml)",
    ]
    assert set(loaded.resources) == {"spring_coupon"}


def test_changing_a_limit_makes_a_new_version_of_the_journeys_using_it(tmp_path, definitions):
    folder = copy_definitions(tmp_path)
    path = folder / "resources.yaml"
    path.write_text(path.read_text().replace("once_per: 30d", "once_per: 14d"))
    changed, problems = check_definitions(folder)
    assert problems == []
    assert (
        changed.broadcasts["spring_festival_care"][1].version
        != definitions.broadcasts["spring_festival_care"][1].version
    )
    assert {s.definition.name: s.version for s in changed} == {s.definition.name: s.version for s in definitions}


def test_templates_and_the_request_are_unchanged_without_a_resource(store, send, outbox):
    """A send step without a resource behaves as before: nothing is limited, nothing recorded."""
    save(store, customer())
    assert send(request(template=TEMPLATE)).status == "sent"
    [row] = rows(store)
    assert row.resource is None
    assert json.loads(outbox.read_text())["resource"] is None
