"""The contact policy as the shop's own file (definitions/policy.yaml) and a journey's or a send
step's overrides: what `journeys validate` says of them (`file:line`), the JSON Schema editors
read, and what the send activity decides under them on both databases: per-channel quiet hours,
several cap windows at once, per-channel windows, send windows, an exempt step, a named cap. The
shipped file is the engine's old behaviour (tests/test_policy.py passes unchanged on it)."""

from __future__ import annotations

import json
import textwrap
from datetime import timedelta

import jsonschema
import pytest
import yaml

from activities.journey import JourneyActivities
from channels import build_channels
from core.contact_policy import ContactPolicy, PolicyOverride
from core.vocabulary import CATEGORIES, CHANNELS
from definitions.loader import PACKAGE_DIR, check_definitions, load_policy, policy_json_schema
from store import queries
from tests.helpers import at, attempt, customer
from tests.test_policy import request, rows, save
from tests.test_resources import copy_definitions

# ------------------------------------------------------------------ the shipped file


def test_the_shipped_policy_is_what_the_engine_always_did():
    shipped = load_policy(PACKAGE_DIR).for_send()
    for category in CATEGORIES:
        for channel in CHANNELS:
            assert shipped.quiet_hours(category, channel) == "22:00-08:00"
            assert shipped.send_window(category, channel) is None
    [cap] = load_policy(PACKAGE_DIR).caps
    assert (cap.name, cap.category) == ("marketing", "marketing")
    assert [(w.max, w.per, w.per_channel) for w in cap.windows] == [(2, "7d", False)]
    assert shipped.cap("transactional") is None
    assert ContactPolicy().model_dump(exclude={"caps"}) == load_policy(PACKAGE_DIR).model_dump(exclude={"caps"})


def test_the_policy_schema_file_is_current_and_checks_the_shipped_file():
    on_disk = json.loads((PACKAGE_DIR / "policy.schema.json").read_text())
    assert on_disk == policy_json_schema(), "run: .venv/bin/journeys schema policy > definitions/policy.schema.json"
    text = (PACKAGE_DIR / "policy.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=policy.schema.json")
    jsonschema.validate(yaml.safe_load(text), on_disk)


def test_the_journey_schema_asks_an_exemption_for_its_reason():
    schema = json.loads((PACKAGE_DIR / "journey.schema.json").read_text())
    override = jsonschema.Draft202012Validator(schema["$defs"]["PolicyOverride"])
    assert [e.message for e in override.iter_errors({"cap": "exempt"})] == ["'reason' is a required property"]
    assert not list(override.iter_errors({"cap": "exempt", "reason": "好评有礼承诺的券"}))
    assert not list(override.iter_errors({"cap": "care"}))


# ------------------------------------------------------------------ validate


BAD_POLICY = """\
quiet_hours:
  - hours: 22:00-08:00
  - channel: fax
    hours: 21:00-09:00
  - category: marketting
    hours: 21:00-09:00
  - channel: sms
    hours: 25:00-09:00
  - channel: email
    hours: 21:00
caps:
  - name: marketing
    category: marketing
    windows:
      - {max: 2, per: 7 days}
    colour: red
send_windows:
  - category: marketing
    days: {sunday: [12:00-22:00]}
"""


def test_a_bad_policy_file_is_reported_line_by_line(tmp_path):
    folder = copy_definitions(tmp_path)
    (folder / "policy.yaml").write_text(BAD_POLICY)
    loaded, problems = check_definitions(folder)
    path = folder / "policy.yaml"
    assert problems == [
        f"{path}:3: quiet_hours[1].channel: 'fax' is not one of sms, email, webhook, outbox",
        f"{path}:5: quiet_hours[2].category: 'marketting' is not one of transactional, marketing",
        f"{path}:8: quiet_hours[3].hours: '25:00-09:00': String should match pattern "
        "'^(?:[01]\\d|2[0-3]):[0-5]\\d-(?:[01]\\d|2[0-3]):[0-5]\\d$'",
        f"{path}:10: quiet_hours[4].hours: 1260: Input should be a valid string",
        f"{path}:15: caps[0].windows[0].per: '7 days': String should match pattern '^-?(\\d+[wdhms])+$'",
        f"{path}:16: caps[0].colour: unknown field 'colour'",
        f"{path}:19: send_windows[0].days.sunday: 'sunday' is not one of mon, tue, wed, thu, fri, sat, sun",
    ]
    assert loaded.policy == ContactPolicy()  # nothing half-read: the checked defaults


def test_what_the_schema_cannot_see_is_reported_with_its_line(tmp_path):
    folder = copy_definitions(tmp_path)
    (folder / "policy.yaml").write_text(
        textwrap.dedent("""\
        quiet_hours:
          - hours: 22:00-08:00
          - {channel: sms, hours: 21:00-09:00}
          - {channel: sms, hours: 20:00-09:00}
          - {channel: email, hours: 09:00-09:00}
        caps:
          - {name: marketing, category: marketing, windows: [{max: 2, per: 7d}]}
          - {name: promos, category: marketing, windows: [{max: 1, per: 1d}]}
          - {name: marketing, windows: [{max: 1, per: 1d}]}
        send_windows:
          - {category: marketing, days: {sun: [22:00-12:00]}}
        """)
    )
    path = folder / "policy.yaml"
    _, problems = check_definitions(folder)
    assert problems == [
        f"{path}:4: quiet_hours[2]: a second rule for channel sms (the first is quiet_hours[1])",
        f"{path}:5: quiet_hours[3].hours: '09:00-09:00' never ends; `none` means no quiet hours",
        f"{path}:8: caps[1].category: marketing already has a cap (caps[0]); put every window in one cap",
        f"{path}:9: caps[2].name: cap 'marketing' is declared twice",
        f"{path}:11: send_windows[0].days.sun[0]: '22:00-12:00' ends before it starts",
    ]


REVIEW = """\
# yaml-language-server: $schema=journey.schema.json
name: review_thanks
title: 好评有礼
category: marketing
entry: {event: review.posted, key: customer}
steps:
  - send:
      id: thanks
      channel: sms
      template: review_request
      policy:
        cap: exempt
  - send:
      id: again
      channel: sms
      template: review_request
      policy: {cap: rewards}
"""


def test_an_exemption_without_a_reason_and_an_unknown_cap_are_refused(tmp_path):
    folder = copy_definitions(tmp_path)
    (folder / "review_thanks.yaml").write_text(REVIEW)
    _, problems = check_definitions(folder)
    path = folder / "review_thanks.yaml"
    assert problems == [
        f"{path}:11: steps[0].send.policy: Value error, `cap: exempt` needs a `reason`: why these messages may "
        "pass a full cap (a promised reward)"
    ]
    (folder / "review_thanks.yaml").write_text(
        REVIEW.replace("cap: exempt", "cap: exempt\n        reason: 承诺的好评券")
    )
    _, problems = check_definitions(folder)
    assert problems == [
        f"{path}:18: steps[1].send.policy.cap: no cap 'rewards' in policy.yaml; caps: marketing "
        "(or `exempt` with a reason)"
    ]
    with (folder / "policy.yaml").open("a") as policy:
        policy.write("\n")  # a cap of its own for rewards, counted only by the sends that name it
    text = (
        (folder / "policy.yaml")
        .read_text()
        .replace("caps:\n", "caps:\n  - name: rewards\n    title: 有礼\n    windows: [{max: 1, per: 30d}]\n")
    )
    (folder / "policy.yaml").write_text(text)
    loaded, problems = check_definitions(folder)
    assert problems == []
    steps = loaded["review_thanks"].definition.steps
    assert steps[0].send.policy == PolicyOverride(cap="exempt", reason="承诺的好评券")


def test_a_journeys_override_applies_to_its_sends_and_a_steps_wins(tmp_path):
    folder = copy_definitions(tmp_path)
    text = REVIEW.replace("cap: exempt", "cap: exempt\n        reason: 承诺的好评券\n        quiet_hours: none")
    text = text.replace("policy: {cap: rewards}", "policy: {priority: 90}")
    text = text.replace("steps:\n", "policy: {quiet_hours: 21:00-09:00, priority: 30}\nsteps:\n", 1)
    (folder / "review_thanks.yaml").write_text(text)
    loaded, problems = check_definitions(folder)
    assert problems == []
    definition = loaded["review_thanks"].definition
    first, second = (step.send.policy_over(definition.policy) for step in definition.steps)
    assert first == PolicyOverride(quiet_hours="none", cap="exempt", reason="承诺的好评券", priority=30)
    assert second == PolicyOverride(quiet_hours="21:00-09:00", priority=90)
    shop = loaded.policy
    assert shop.for_send(first).quiet_hours("marketing", "sms") == "none"
    assert shop.for_send(second).priority("marketing") == 90
    assert shop.for_send(None).priority("marketing") == 20 and shop.for_send(None).priority("transactional") == 60


def test_journeys_without_a_policy_keep_their_versions():
    """The override fields are left out of the content hash when absent: running instances and
    the ledger's journey_version see the same versions as before policy.yaml."""
    loaded, _ = check_definitions(PACKAGE_DIR)
    for snapshot in loaded:
        assert "policy" not in snapshot.definition.model_dump(mode="json", by_alias=True)


# ------------------------------------------------------------------ decisions on both databases


SHOP = ContactPolicy.model_validate(
    yaml.safe_load("""
quiet_hours:
  - hours: 22:00-08:00
  - {channel: sms, hours: 21:00-09:00}
  - {channel: email, hours: none}
  - {category: transactional, channel: sms, hours: 23:00-07:00}
caps:
  - name: marketing
    category: marketing
    windows:
      - {max: 1, per: 1d}
      - {max: 2, per: 7d}
      - {max: 6, per: 30d}
  - name: care
    windows: [{max: 1, per: 7d}]
send_windows:
  - category: marketing
    days: {sun: [12:00-22:00]}
""")
)


@pytest.fixture
def shop_send(store, outbox):
    """The send activity under SHOP, the outbox for every channel."""
    activities = JourneyActivities(store, build_channels(outbox), "小店", default_region="CN", policy=SHOP)
    return lambda req: attempt(1).run(activities.decide_message, req)


def test_quiet_hours_by_channel_and_category(store, shop_send):
    save(store, customer(), customer("c2", phone=None), customer("c3", unsubscribed=["sms"]))
    evening = at("2026-02-02 21:30+08:00")  # a Monday
    marketing_sms = shop_send(request(step="promo", category="marketing", when=evening, fallback=None))
    assert (marketing_sms.status, marketing_sms.defer_until) == ("deferred", at("2026-02-03 09:00+08:00"))
    assert shop_send(request(step="notice", when=evening)).status == "sent"  # transactional SMS: 23:00-07:00
    by_email = shop_send(request(step="promo", category="marketing", when=evening, customer_id="c2"))
    assert (by_email.status, by_email.channel) == ("sent", "email")  # email has none
    # The channel is chosen first: SMS is unsubscribed, the email fallback has no quiet hours.
    late = shop_send(request(step="promo", category="marketing", when=at("2026-02-02 23:30+08:00"), customer_id="c3"))
    assert (late.status, late.channel) == ("sent", "email")
    night = shop_send(request(step="late", when=at("2026-02-02 23:30+08:00")))
    assert (night.status, night.defer_until) == ("deferred", at("2026-02-03 07:00+08:00"))


def test_a_steps_quiet_hours_over_the_shops(store, shop_send):
    save(store, customer())
    evening = at("2026-02-02 21:30+08:00")
    own = request(step="promo", category="marketing", when=evening, policy=PolicyOverride(quiet_hours="22:30-08:00"))
    assert shop_send(own).status == "sent"


def test_three_cap_windows_at_once(store, shop_send):
    save(store, customer())
    monday = at("2026-02-02 10:00+08:00")
    day = timedelta(days=1)
    outcomes = []
    # 1 a day, 2 in 7 days, 6 in 30 days: days 0, 1, 7, 8, 14, 15 go; day 21 is the 7th in 30 days.
    for n, when in enumerate([0, 0.1, 1, 2, 7, 8, 14, 15, 21, 30]):
        outcome = shop_send(request(step=f"m{n}", category="marketing", when=monday + when * day, fallback=None))
        outcomes.append(outcome.status + (f":{outcome.reason}" if outcome.reason else ""))
    assert outcomes == ["sent", "skipped:frequency_cap", "sent", "skipped:frequency_cap", "sent", "sent", "sent",
                        "sent", "skipped:frequency_cap", "sent"]  # fmt: skip
    details = [row.error for row in rows(store) if row.status == "skipped"]
    assert details == [
        "cap marketing 1/1d: 1 sent since 2026-02-01T12:24:00+08:00",
        "cap marketing 2/7d: 2 sent since 2026-01-28T10:00:00+08:00",
        "cap marketing 6/30d: 6 sent since 2026-01-24T10:00:00+08:00",
    ]


def test_a_window_may_count_each_channel_on_its_own(store, outbox):
    shop = ContactPolicy.model_validate(
        {
            "caps": [
                {
                    "name": "marketing",
                    "category": "marketing",
                    "windows": [{"max": 1, "per": "1d", "per_channel": True}],
                }
            ]
        }  # fmt: skip
    )
    activities = JourneyActivities(store, build_channels(outbox), "小店", default_region="CN", policy=shop)
    save(store, customer(), customer("c2", phone=None))
    noon = at("2026-02-02 12:00+08:00")

    def send(step, **changes):
        return attempt(1).run(activities.decide_message, request(step=step, category="marketing", when=noon, **changes))

    assert send("a", fallback=None).channel == "sms"
    assert send("b", channel="email", fallback=None).channel == "email"  # another channel's own count
    refused = send("c", fallback=None)
    assert (refused.status, refused.reason) == ("skipped", "frequency_cap")
    assert rows(store)[-1].error == "cap marketing 1/1d on sms: 1 sent since 2026-02-01T12:00:00+08:00"


def test_an_exempt_step_passes_a_full_cap_and_still_counts(store, shop_send):
    save(store, customer())
    monday = at("2026-02-02 10:00+08:00")
    assert shop_send(request(step="promo", category="marketing", when=monday)).status == "sent"
    full = shop_send(request(step="promo2", category="marketing", when=monday + timedelta(hours=1)))
    assert (full.status, full.reason) == ("skipped", "frequency_cap")
    promised = PolicyOverride(cap="exempt", reason="好评有礼：承诺的优惠券")
    thanks = shop_send(request(step="thanks", category="marketing", when=monday + timedelta(hours=2), policy=promised))
    assert thanks.status == "sent"
    with store.transaction() as session:  # it counts: the customer has had two marketing messages today
        assert len(queries.capped_at(session, "c1", "marketing", "marketing", monday - timedelta(days=1))) == 2


def test_a_step_counts_against_another_named_cap(store, shop_send):
    save(store, customer())
    monday = at("2026-02-02 10:00+08:00")
    care = PolicyOverride(cap="care")
    first = shop_send(request(step="care1", when=monday, policy=care))
    second = shop_send(request(step="care2", when=monday + timedelta(days=2), policy=care))
    assert (first.status, second.status, second.reason) == ("sent", "skipped", "frequency_cap")
    assert rows(store)[-1].error == "cap care 1/7d: 1 sent since 2026-01-28T10:00:00+08:00"
    # Counted against care alone: the marketing cap has room still, and its messages do not fill care.
    assert shop_send(request(step="promo", category="marketing", when=monday)).status == "sent"
    assert [row.cap for row in rows(store) if row.status == "sent"] == ["care", None]
    with store.transaction() as session:
        assert len(queries.capped_at(session, "c1", "care", None, monday - timedelta(days=1))) == 1
        assert len(queries.capped_at(session, "c1", "marketing", "marketing", monday - timedelta(days=1))) == 1


def test_no_marketing_on_sunday_mornings(store, shop_send):
    save(store, customer())
    sunday = at("2026-02-08 10:00+08:00")
    deferred = shop_send(request(step="promo", category="marketing", when=sunday))
    assert (deferred.status, deferred.defer_until) == ("deferred", at("2026-02-08 12:00+08:00"))
    assert shop_send(request(step="notice", when=sunday)).status == "sent"  # transactional: no window
    late = shop_send(request(step="promo2", category="marketing", when=sunday, deadline=at("2026-02-08 11:00+08:00")))
    assert (late.status, late.reason) == ("skipped", "send_window")
    assert rows(store)[-1].error == "send window closed until 2026-02-08 12:00:00+08:00"
    # Saturday 21:30: SMS quiet hours until 09:00, then Sunday's window opens at 12:00.
    night = shop_send(request(step="promo3", category="marketing", when=at("2026-02-07 21:30+08:00"), fallback=None))
    assert (night.status, night.defer_until) == ("deferred", at("2026-02-08 12:00+08:00"))
