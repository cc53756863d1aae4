"""`journeys validate` catches the mistakes a journey parses with (definitions/lint.py): unknown
names, vars read before they are evaluated, waits that are not positive, steps, branches and
splits that do nothing, a transactional send handing out a resource, unreachable steps; and warns
of a field a declared event's schema lacks. Each is one line: `file:line: path: message`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from definitions.expressions import _CONDITIONS
from definitions.loader import EVENTS_FILE, PACKAGE_DIR, RESOURCES_FILE, check_definitions, load_definitions
from journeys.cli import app

BASE = """\
name: care
category: marketing
entry:
  event: order.paid
  key: order
vars:
  total: "order.amount"
  big: "vars.total > 100"
steps:
  - wait: 1h
  - if:
      condition: "vars.big"
      then:
        - send:
            template: review_request
  - send:
      id: later
      template: review_request
"""


def folder_with(tmp_path: Path, files: dict[str, str], events: str | None = None) -> Path:
    """A definitions directory: the shipped templates, events.yaml and resources.yaml, and `files`."""
    folder = tmp_path / "defs"
    shutil.copytree(PACKAGE_DIR / "templates", folder / "templates")
    shutil.copy(PACKAGE_DIR / RESOURCES_FILE, folder)
    if events is None:
        shutil.copy(PACKAGE_DIR / EVENTS_FILE, folder)
    else:
        (folder / EVENTS_FILE).write_text(textwrap.dedent(events))
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def check(tmp_path: Path, text: str, events: str | None = None) -> tuple[list[str], list[str]]:
    """The problems and the warnings of one journey, `x.yaml`, with paths relative to its folder."""
    folder = folder_with(tmp_path, {"x.yaml": text}, events)
    loaded, problems = check_definitions(folder)
    return [line.replace(f"{folder}/", "") for line in problems], [
        line.replace(f"{folder}/", "") for line in loaded.warnings
    ]


def changed(*changes: tuple[str, str], text: str = BASE) -> str:
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def test_the_base_journey_is_clean(tmp_path):
    assert check(tmp_path, BASE) == ([], [])


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # unknown root names, with what there is and the nearest
        ([('"order.amount"', '"ordr.amount"')],
         "x.yaml:7: vars.total: unknown name 'ordr' (known: customer, cycler, days, dict, duration, entry, event, hours, "
         "joiner, minutes, namespace, now, order, range, replenish_at, time, vars, yearly); did you mean 'order'?"),
        ([('condition: "vars.big"', 'condition: "vars.big and custmer.tags"')],
         "x.yaml:12: steps[1].if.condition: unknown name 'custmer' (known: "),
        ([("key: order", 'key: order\n  condition: "evnt.data"')], "x.yaml:6: entry.condition: unknown name 'evnt'"),
        ([("id: later", 'id: later\n      deadline: "noww + hours(1)"')],
         "x.yaml:18: steps[2].send.deadline: unknown name 'noww'"),
        ([("  - wait: 1h", '  - wait_until: {at: "yearly(customer.birthday, tim=1)"}')], None),  # a keyword is no name
        ([("  - wait: 1h", '  - wait_until: {at: "yearly(cust.birthday)"}')],
         "x.yaml:10: steps[0].wait_until.at: unknown name 'cust'"),
        # vars read before they are evaluated, or that do not exist
        ([('total: "order.amount"', 'total: "order.amount if vars.big else 0"')],
         "x.yaml:7: vars.total: vars.big is used before it is defined: vars are evaluated once, in order, and big "
         "comes after total"),
        ([('big: "vars.total > 100"', 'big: "vars.big or vars.total > 100"')],
         "x.yaml:8: vars.big: vars.big reads itself: a var is evaluated once, from the vars before it"),
        ([("key: order", 'key: order\n  condition: "vars.big"')],
         "x.yaml:6: entry.condition: vars.big is used before it is defined: entry.condition is evaluated before vars"),
        ([('condition: "vars.big"', 'condition: "vars.bgi"')],
         "x.yaml:12: steps[1].if.condition: unknown var 'bgi' (vars: total, big); did you mean vars.big?"),
        ([('condition: "vars.big"', "condition: \"vars['nope'] > 1\"")],
         "x.yaml:12: steps[1].if.condition: unknown var 'nope' (vars: total, big)"),
        # waits that are not positive
        ([("wait: 1h", "wait: -1d")], "x.yaml:10: steps[0].wait: wait '-1d' is not positive: it must be longer than zero"),
        ([("wait: 1h", "wait: 0s")], "x.yaml:10: steps[0].wait: wait '0s' is not positive"),
        ([("  - wait: 1h", "  - wait_for: {event: order.shipped, timeout: 0m}")],
         "x.yaml:10: steps[0].wait_for.timeout: timeout '0m' is not positive"),
        ([("  - wait: 1h", "  - wait_until: {at: order.closes_at, offset: -2h}")], None),  # an offset may be negative
        ([("key: order", "key: order\n  max_age: 0s")], "x.yaml:6: entry.max_age: max_age '0s' is not positive"),
        ([("id: later", "id: later\n      max_lateness: -1h")],
         "x.yaml:18: steps[2].send.max_lateness: max_lateness '-1h' is not positive"),
        ([("key: order", "key: order\n  max_age: 2d"), ("id: later", "id: later\n      max_lateness: 1h")], None),
        ([("steps:", "goal: {event: order.created, within: 0d}\nsteps:")],
         "x.yaml:9: goal.within: the goal's window '0d' is not positive"),
        # steps, branches and splits that do nothing
        ([(BASE[BASE.index("steps:") :], "steps: []\n")], "x.yaml:9: steps: no steps: a journey needs at least one"),
        ([("then:\n        - send:\n            template: review_request", "then: []")],
         "x.yaml:11: steps[1].if: neither then nor else has steps: the if does nothing"),
        ([("then:", "else:")], None),  # an if with only else steps: the negation
        ([("  - wait: 1h", "  - split: {branches: []}")],
         "x.yaml:10: steps[0].split: no branches and no holdout: the split does nothing"),
        ([("  - wait: 1h", "  - split: {branches: [{steps: []}, {weight: 2, steps: []}]}")],
         "x.yaml:10: steps[0].split: no holdout and no branch with steps: the split does nothing"),
        ([("  - wait: 1h", "  - split: {holdout: 0.1}")], None),  # a pure holdout
        ([("  - wait: 1h", "  - split: {branches: [{steps: []}, {steps: [{wait: 1h}]}]}")], None),  # empty control
        ([("  - wait: 1h", "  - wait_for: {event: order.shipped, timeout: 3d}")], None),  # wait for it, or 3 days
        # a transactional send handing out a resource
        ([("category: marketing", "category: transactional"), ("id: later", "id: later\n      resource: spring_coupon")],
         "x.yaml:18: steps[2].send.resource: a transactional send hands out 'spring_coupon': transactional messages "
         "carry no offers"),
        ([("id: later", "id: later\n      category: transactional\n      resource: spring_coupon")],
         "x.yaml:19: steps[2].send.resource: a transactional send hands out 'spring_coupon'"),
        ([("category: marketing", "category: transactional"),
          ("id: later", "id: later\n      category: marketing\n      resource: spring_coupon")], None),
        # steps that can never run
        ([("  - wait: 1h", "  - exit: done")], "x.yaml:11: steps[1]: unreachable: after exit at steps[0]"),
        ([("  - wait: 1h", "  - repeat: true")], "x.yaml:11: steps[1]: unreachable: after repeat at steps[0]"),
        ([("            template: review_request", "            template: review_request\n        - exit:\n        - wait: 1d")],
         "x.yaml:17: steps[1].if.then[2]: unreachable: after exit at steps[1].if.then[1]"),
        ([("      then:", "      else: [{repeat: true}]\n      then:"), ("template: review_request", "template: review_request\n        - exit: done")],
         "x.yaml:18: steps[2]: unreachable: every branch of the if at steps[1] ends the journey"),
        ([("id: later\n      template: review_request\n", "id: later\n      template: review_request\n  - exit: done\n")],
         None),  # the last step
    ],
)  # fmt: skip
def test_each_mistake_is_named_with_its_file_line_and_path(tmp_path, changes, expected):
    problems, warnings = check(tmp_path, changed(*changes))
    assert warnings == []
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_one_line_for_the_unreachable_rest_and_its_own_mistakes_still_named(tmp_path):
    text = changed(
        ("category: marketing", "category: transactional"),
        ("  - wait: 1h", "  - exit: done\n  - wait: -1h"),
        ("id: later", "id: later\n      resource: spring_coupon"),
    )
    problems, _ = check(tmp_path, text)
    assert [line.split(": ", 2)[:2] for line in problems] == [
        ["x.yaml:11", "steps[1]"],
        ["x.yaml:11", "steps[1].wait"],
        ["x.yaml:19", "steps[3].send.resource"],
    ]
    assert problems[0].endswith("unreachable: after exit at steps[0]")


def test_a_name_added_to_the_sandbox_is_known(tmp_path, monkeypatch):
    text = changed(('condition: "vars.big"', 'condition: "runtime_check()"'))
    assert check(tmp_path, text)[0][0].startswith("x.yaml:12: steps[1].if.condition: unknown name 'runtime_check'")
    monkeypatch.setitem(_CONDITIONS.globals, "runtime_check", lambda: True)
    assert check(tmp_path / "again", text) == ([], [])


# ------------------------------------------------------------------ fields of declared events: warnings

CART = """\
name: cart_care
category: marketing
entry:
  event: cart.abandoned
  key: customer
  condition: "event.data.cart_value > 100"
steps:
  - wait_for:
      event: coupon.redeemed
      timeout: 3d
      on_event:
        - if:
            condition: "event.data.coupon_code and entry.data.cart_value"
            then:
              - send: {template: review_request}
      on_timeout:
        - if:
            condition: "event.data.items | length > 0"
            then:
              - send: {id: nudge, template: review_request}
"""


def test_the_cart_journey_is_clean(tmp_path):
    assert check(tmp_path, CART) == ([], [])


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ([("event.data.cart_value > 100", "event.data.cart_valu > 100")],
         "x.yaml:6: entry.condition: warning: event.data.cart_valu: no field 'cart_valu' in the schema of "
         "cart.abandoned (events.yaml: cart_value, items); did you mean event.data.cart_value?"),
        ([("event.data.cart_value > 100", "event['data']['totl'] > 1")],
         "x.yaml:6: entry.condition: warning: event.data.totl: no field 'totl' in the schema of cart.abandoned"),
        # In on_event, `event` is the awaited event; `entry` the entry event.
        ([("event.data.coupon_code and", "event.data.cart_value and")],
         "x.yaml:13: steps[0].wait_for.on_event[0].if.condition: warning: event.data.cart_value: no field "
         "'cart_value' in the schema of coupon.redeemed (events.yaml: coupon_code, order_id, resource)"),
        ([("entry.data.cart_value", "entry.data.coupon_code")],
         "x.yaml:13: steps[0].wait_for.on_event[0].if.condition: warning: entry.data.coupon_code: no field "
         "'coupon_code' in the schema of cart.abandoned"),
        # In on_timeout, `event` is the entry event still.
        ([("event.data.items | length", "event.data.coupon_code | length")],
         "x.yaml:18: steps[0].wait_for.on_timeout[0].if.condition: warning: event.data.coupon_code: no field"),
        # Several entry types: a warning only when none has the field.
        ([("event: cart.abandoned", "event: [cart.abandoned, subscription.expiring]"),
          ("event.data.cart_value > 100", "event.data.level or event.data.cart_value")], None),
        ([("event: cart.abandoned", "event: [cart.abandoned, subscription.expiring]"),
          ("event.data.cart_value > 100", "event.data.levle")],
         "x.yaml:6: entry.condition: warning: event.data.levle: no field 'levle' in the schemas of cart.abandoned, "
         "subscription.expiring (events.yaml: cart_value, expires_on, items, level); did you mean event.data.level?"),
        # Built-in types have no schema: anything goes.
        ([("event: cart.abandoned", "event: [cart.abandoned, customer.updated]"),
          ("event.data.cart_value > 100", "event.data.anything")], None),
        # A field of the event itself.
        ([("event.data.cart_value > 100", "event.dat.cart_value > 100")],
         "x.yaml:6: entry.condition: warning: event.dat: an event has no field 'dat' (event_id, type, occurred_at, "
         "customer_id, order_id, data); did you mean event.data?"),
        # Inside the value of a field the schema does not describe: nothing to check.
        ([("event.data.items | length > 0", "event.data['items'][0].sku")], None),
    ],
)  # fmt: skip
def test_a_field_a_declared_schema_lacks_is_a_warning(tmp_path, changes, expected):
    problems, warnings = check(tmp_path, changed(*changes, text=CART))
    assert problems == []
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].startswith(expected), warnings


NESTED_EVENTS = """\
events:
  - name: cart.abandoned
    key: customer
    schema:
      type: object
      properties:
        cart_value: {type: number}
        address: {type: object, properties: {city: {type: string}}, additionalProperties: false}
        lines: {type: array, items: {type: object, properties: {sku: {type: string}}}}
        extra: {type: object, additionalProperties: true, properties: {a: {type: string}}}
        tagged: {type: object, patternProperties: {"^x_": {type: string}}, properties: {a: {type: string}}}
        level: {type: string}
        items: {type: array}
  - name: coupon.redeemed
    key: customer
"""


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("event.data.address.city", None),
        ("event.data.address.cty", "warning: event.data.address.cty: no field 'cty' in the schema of cart.abandoned "
                                   "(events.yaml: city); did you mean event.data.address.city?"),
        ("event.data.lines[0].sku", None),
        ("event.data.lines[0].sk", "warning: event.data.lines[0].sk: no field 'sk'"),
        ("event.data.extra.anything", None),
        ("event.data.tagged.x_colour", None),
        ("event.data.tagged.colour", "warning: event.data.tagged.colour: no field 'colour'"),
        ("event.data.level.upper()", None),  # a string's own method, not a field
        ("event.data.cart_value.anything", None),
    ],
)  # fmt: skip
def test_nested_fields_are_checked_as_deep_as_the_schema_says(tmp_path, condition, expected):
    text = changed(("event.data.cart_value > 100", condition), text=CART)
    problems, warnings = check(tmp_path, text, events=NESTED_EVENTS)
    assert problems == []
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].startswith(f"x.yaml:6: entry.condition: {expected}"), warnings


def test_warnings_never_stop_loading(tmp_path):
    folder = folder_with(tmp_path, {"x.yaml": changed(("cart_value > 100", "cart_valu > 100"), text=CART)})
    loaded = load_definitions(folder)
    assert set(loaded.journeys) == {"cart_care"}
    assert len(loaded.warnings) == 1


# ------------------------------------------------------------------ templates


def test_a_template_reading_a_name_it_never_has_is_a_problem(tmp_path):
    folder = folder_with(
        tmp_path,
        {
            "x.yaml": BASE,
            "templates/typo.yaml": 'sms:\n  zh-CN: "{{ ordr.order_id }}"\n',
            "templates/fine.yaml": (
                'sms:\n  zh-CN: "{% set n = customer.name or entry.type %}{{ n }} {{ shop.name }} {{ event.type }}'
                ' {{ vars.x | default(1) }} {% for i in range(2) %}{{ i }}{% endfor %}"\n'
            ),
        },
    )
    _, problems = check_definitions(folder)
    assert [line.replace(f"{folder}/", "") for line in problems] == [
        "templates/typo.yaml:2: sms.zh-CN: unknown name 'ordr' (known: customer, cycler, dict, entry, event, joiner, link, "
        "namespace, order, range, shop, vars); did you mean 'order'?"
    ]


# ------------------------------------------------------------------ broadcasts, the CLI and the shipped definitions


def test_broadcasts_go_through_the_same_checks(tmp_path):
    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = folder / "broadcasts" / "spring_festival_care.yaml"
    path.write_text(path.read_text().replace("holdout: 0.1", "holdout: 0.1\ncategory: transactional"))
    loaded, problems = check_definitions(folder)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("send:"))
    assert problems == [
        f"{path}:{line}: send.resource: a transactional send hands out 'spring_coupon': transactional messages carry "
        "no offers (send it as marketing: `category: marketing`)"
    ]
    assert "spring_festival_care" not in loaded.broadcasts


ISSUE_MISTAKES = {
    # What the issue's "What happens today" 4 lists, one file each.
    "typo.yaml": changed(("name: care", "name: typo"), ('"order.amount"', '"ordr.amount"')),
    "early_var.yaml": changed(("name: care", "name: early_var"), ('"order.amount"', '"order.amount + vars.big"')),
    "negative.yaml": changed(("name: care", "name: negative"), ("wait: 1h", "wait: -1d")),
    "empty.yaml": "name: empty\ncategory: marketing\nentry: {event: order.paid, key: order}\nsteps: []\n",
    "coupon.yaml": changed(
        ("name: care", "name: coupon"),
        ("category: marketing", "category: transactional"),
        ("id: later", "id: later\n      resource: spring_coupon"),
    ),
    "after_exit.yaml": changed(("name: care", "name: after_exit"), ("  - wait: 1h", "  - exit: done")),
}


def test_the_command_names_each_mistake_of_the_issue(tmp_path):
    folder = folder_with(tmp_path, ISSUE_MISTAKES)
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 1
    lines = [line.replace(f"{folder}/", "") for line in result.stderr.splitlines()]
    expected = [
        "typo.yaml:7: vars.total: unknown name 'ordr' (known: ",
        "early_var.yaml:7: vars.total: vars.big is used before it is defined",
        "negative.yaml:10: steps[0].wait: wait '-1d' is not positive",
        "empty.yaml:4: steps: no steps: a journey needs at least one",
        "coupon.yaml:18: steps[2].send.resource: a transactional send hands out 'spring_coupon': transactional "
        "messages carry no offers",
        "after_exit.yaml:11: steps[1]: unreachable: after exit at steps[0]",
    ]
    for start in expected:
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert len(lines) == len(expected), lines


def test_the_command_prints_warnings_and_passes(tmp_path):
    folder = folder_with(tmp_path, {"x.yaml": changed(("cart_value > 100", "cart_valu > 100"), text=CART)})
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"{folder}/x.yaml:6: entry.condition: warning: event.data.cart_valu: no field 'cart_valu' in the schema of "
        "cart.abandoned (events.yaml: cart_value, items); did you mean event.data.cart_value?\n"
    )
    assert "1 journeys OK (cart_care)" in result.stdout


def test_the_shipped_definitions_have_no_problems_and_no_warnings():
    loaded, problems = check_definitions(PACKAGE_DIR)
    assert (problems, loaded.warnings) == ([], [])
    journeys = str(Path(sys.executable).parent / "journeys")
    run = subprocess.run([journeys, "validate", str(PACKAGE_DIR)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert "broadcasts OK" in run.stdout


def test_an_unknown_filter_is_reported_once_not_raised(tmp_path):
    folder = folder_with(
        tmp_path,
        {
            "x.yaml": changed(('condition: "vars.big"', 'condition: "vars.big | nofilter"')),
            "templates/t.yaml": 'sms:\n  zh-CN: "{{ order | nofilter }}"\n',
        },
    )
    _, problems = check_definitions(folder)
    assert [line.replace(f"{folder}/", "") for line in problems] == [
        "templates/t.yaml:2: sms.zh-CN: line 1: No filter named 'nofilter'.",
        "x.yaml:12: steps[1].if.condition: expression 'vars.big | nofilter' does not parse: No filter named "
        "'nofilter'.",
    ]
