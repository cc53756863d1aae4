"""`journeys validate` and the schema: the shipped journeys are valid, and each class of mistake a
marketer can make gets one line naming the file, the line and the field."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from definitions.loader import PACKAGE_DIR, RESERVED_FILES, check_definitions, json_schema
from definitions.schema import SendStep, WaitStep, walk_steps

SHIPPED = {
    # name: (entry events, key, exits, goal, category)
    "payment_reminder": (["order.created"], "order", ["order.paid", "order.cancelled", "order.closed"], "order.paid",
                         "transactional"),
    "pre_close_reminder": (["order.created"], "order", ["order.paid", "order.cancelled", "order.closed"],
                           "order.paid", "transactional"),
    "shipped_notice": (["order.shipped"], "order", [], None, "transactional"),
    "delivered_care": (["order.delivered"], "order", [], None, "transactional"),
    "review_request": (["order.delivered"], "order", ["review.posted", "order.refunded"], "review.posted",
                       "marketing"),
    "birthday_greeting": (["customer.created", "customer.updated"], "customer", [], "order.created", "marketing"),
    "revisit_28d": (["order.delivered"], "customer", ["order.created"], "order.created", "marketing"),
    "replenish_reminder": (["order.paid"], "customer", ["order.created", "order.refunded"], "order.paid", "marketing"),
    "tier_upgrade": (["member.tier_changed"], "customer", [], None, "transactional"),
    "points_expiring": (["points.expiring"], "customer", [], None, "transactional"),
    "member_card_expiry": (["member.card_expiring"], "customer", [], None, "transactional"),
    "winback_sleeping": (["lifecycle.changed"], "customer", ["order.created"], "order.paid", "marketing"),
}  # fmt: skip


def test_shipped_journeys_match_the_contract(definitions):
    assert set(definitions.journeys) == set(SHIPPED)
    for name, (events, key, exits, goal, category) in SHIPPED.items():
        d = definitions[name].definition
        assert (d.entry.events, d.entry.key, d.exit_on, d.goal, d.category) == (events, key, exits, goal, category)
        sends = [step.send for _, step in walk_steps(d.steps) if isinstance(step, SendStep)]
        assert [(s.channel, s.fallback) for s in sends] == [("sms", "email")], name
        for template in definitions[name].templates.values():
            assert set(template.sms) == set(template.email) == {"zh-CN", "en"}, name
    waits = {name: [s.wait for _, s in walk_steps(definitions[name].definition.steps) if isinstance(s, WaitStep)]
             for name in SHIPPED}  # fmt: skip
    assert waits["payment_reminder"] == ["15m"]
    assert waits["review_request"] == ["3d"]
    assert waits["revisit_28d"] == ["28d"]


def test_schema_file_is_current_and_named_by_every_journey():
    on_disk = json.loads((PACKAGE_DIR / "journey.schema.json").read_text())
    assert on_disk == json_schema(), "run: .venv/bin/journeys schema > definitions/journey.schema.json"
    for path in PACKAGE_DIR.glob("*.yaml"):
        if path.name in RESERVED_FILES:  # not journeys
            continue
        assert path.read_text().startswith("# yaml-language-server: $schema=journey.schema.json"), path


def test_versions_change_with_content_only(definitions, tmp_path):
    copy = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    loaded, problems = check_definitions(copy)
    assert problems == []
    assert {n: s.version for n, s in loaded.journeys.items()} == {n: s.version for n, s in definitions.journeys.items()}
    template = copy / "templates" / "review_request.yaml"
    template.write_text(template.read_text().replace("晒图好评", "晒图评价"))
    changed, _ = check_definitions(copy)
    assert changed["review_request"].version != definitions["review_request"].version
    assert changed["payment_reminder"].version == definitions["payment_reminder"].version


GOOD = """\
name: vip_thanks
category: marketing
entry:
  event: order.paid
  key: order
steps:
  - wait: 1h
  - send:
      channel: sms
      template: review_request
"""


def problems_for(tmp_path: Path, text: str, name: str = "x.yaml", extra: dict[str, str] | None = None) -> list[str]:
    folder = tmp_path / "defs"
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    shutil.copy(PACKAGE_DIR / "templates" / "review_request.yaml", folder / "templates")
    (folder / "templates" / "sms_only.yaml").write_text('sms:\n  zh-CN: "您好"\n')
    (folder / name).write_text(textwrap.dedent(text))
    for other, content in (extra or {}).items():
        (folder / other).write_text(content)
    _, problems = check_definitions(folder)
    return [line.replace(str(folder) + "/", "") for line in problems]


def test_a_good_definition_passes(tmp_path):
    assert problems_for(tmp_path, GOOD) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("channel: sms", "channel: fax"),
         "x.yaml:9: steps[1].send.channel: 'fax' is not one of sms, email, webhook, outbox"),
        (("template: review_request", "template: nope"), "x.yaml:10: steps[1].send.template: unknown template 'nope'"),
        (("event: order.paid", "event: order.teleported"), "x.yaml:4: entry.event: 'order.teleported' is not a known event type (declare it in events.yaml)"),
        (("wait: 1h", "wait: soon"), "x.yaml:7: steps[0].wait: 'soon' is not a duration like 15m, 2h, 3d or -2h"),
        (("key: order", "key: shop"), "x.yaml:5: entry.key: 'shop' is not one of order, customer"),
        (("category: marketing", "category: spam"), "x.yaml:2: category: 'spam' is not one of transactional, marketing"),
        (("  - wait: 1h", "  - wait: 1h\n    send: {template: x}"), "x.yaml:7: steps[0]: a step is a mapping with exactly one of"),
        (("  - wait: 1h", "  - nap: 1h"), "x.yaml:7: steps[0]: a step is a mapping with exactly one of"),
        (("key: order", "key: order\n  condition: \"order.amount >\""), "x.yaml:6: entry.condition: expression 'order.amount >' does not parse"),
        (("  - wait: 1h", "  - wait_for: {event: customer.updated, timeout: 1d}"),
         "x.yaml:7: steps[0].wait_for.event: customer.updated carries no order_id, so it cannot reach a journey keyed by order"),
        (("steps:", "exit_on: [customer.updated]\nsteps:"), "x.yaml:6: exit_on[0]: customer.updated carries no order_id"),
        (("steps:", "colour: blue\nsteps:"), "x.yaml:6: colour: unknown field 'colour'"),
        (("name: vip_thanks\n", ""), "x.yaml:1: name: 'name' is required"),
        (("template: review_request", "template: sms_only\n      fallback: email"),
         "x.yaml:11: steps[1].send.fallback: template 'sms_only' has no email text"),
    ],
)  # fmt: skip
def test_each_mistake_is_named(tmp_path, change, expected):
    old, new = change
    assert old in GOOD
    problems = problems_for(tmp_path, GOOD.replace(old, new, 1))
    assert any(line.startswith(expected) for line in problems), problems


def test_duplicate_send_ids(tmp_path):
    text = GOOD + "  - send:\n      template: review_request\n"
    [line] = problems_for(tmp_path, text)
    assert line.startswith("x.yaml:11: steps[2].send: step id 'review_request' is already used at steps[1]")


def test_duplicate_journey_names(tmp_path):
    problems = problems_for(tmp_path, GOOD, extra={"y.yaml": GOOD})
    assert problems == ["y.yaml:1: name: journey 'vip_thanks' is already defined in x.yaml"]


def test_bad_yaml_names_the_line(tmp_path):
    [line] = problems_for(tmp_path, GOOD.replace("  - wait: 1h", "  - wait: [1h"))
    assert line.startswith("x.yaml:8: not valid YAML")


def test_template_that_does_not_parse(tmp_path):
    folder = tmp_path / "defs" / "templates"
    folder.mkdir(parents=True)
    (folder / "broken.yaml").write_text('sms:\n  zh-CN: "您好 {{ customer.name "\n')
    problems = problems_for(tmp_path, GOOD)
    assert any(line.startswith("templates/broken.yaml:2: sms.zh-CN: line 1:") for line in problems), problems


def test_validate_command_exit_codes(tmp_path):
    journeys = [str(Path(sys.executable).parent / "journeys")]
    ok = subprocess.run([*journeys, "validate", str(PACKAGE_DIR)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert f"{len(SHIPPED)} journeys OK" in ok.stdout
    problems_for(tmp_path, GOOD.replace("channel: sms", "channel: fax"))
    bad = subprocess.run([*journeys, "validate", str(tmp_path / "defs")], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "x.yaml:9: steps[1].send.channel: 'fax' is not one of sms, email, webhook, outbox" in bad.stderr


LAUGHS = "\n".join(
    ['lol: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 10)]
)


@pytest.mark.parametrize("where", ["x.yaml", "templates/x.yaml"])
def test_yaml_aliases_are_refused_before_anything_is_built(tmp_path, where):
    """A 'billion laughs' definition (9^10 strings through aliases) grew validate to 6.7 GB; aliases
    are refused while the file is scanned, naming the line of the first one."""
    import tracemalloc

    (tmp_path / "templates").mkdir()
    (tmp_path / where).write_text(LAUGHS + "\n")
    tracemalloc.start()
    try:
        _, problems = check_definitions(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (
        f"{tmp_path / where}:2: not valid YAML: YAML anchors and aliases (&name, *name) are not allowed"
        in "\n".join(problems)
    )
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"
