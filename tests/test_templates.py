"""Templates under limits: resource abuse is refused with a message naming it, at send time a
refused template is recorded `failed`/`template_error`, `journeys validate` refuses an oversized
template before deploy, and SMS bodies carry their segment count and the configured opt-out."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from typer.testing import CliRunner

from core.sms_parts import sms_segments
from definitions.expressions import MAX_TEMPLATE_CHARS, ExpressionError, evaluate
from definitions.render import TemplateRenderError, render_message
from definitions.schema import Template
from journeys.cli import app


def render(source: str, channel: str = "sms", marketing: bool = False, **options):
    template = (
        Template(email={"zh-CN": {"subject": "s", "body": source}})
        if channel == "email"
        else Template(sms={"zh-CN": source, "en": source})
    )
    return render_message(
        template,
        name="t",
        channel=channel,
        locale=options.pop("locale", "zh-CN"),
        context={"customer": {"name": "王芳"}, "order": {"order_id": "o1"}},
        shop_name="小店",
        marketing=marketing,
        **options,
    )


@pytest.mark.parametrize(
    ("abuse", "named"),
    [
        ("{{ 'x' * 1000000 }}", "repetition"),
        ("{{ ['x'] * 10000000 }}", "repetition"),
        ("{{ ('x' * 90000) + ('y' * 90000) }}", "joining"),
        ("{{ 9 ** 999999 }}", "too large a number"),
        ("{% for i in range(100000000) %}{% endfor %}", "range of 100000000 items"),
        ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "loop iterations"),
        ("{{ 'x'|center(100000000) }}", "center width"),
        ("{{ 'x'|indent(100000000) }}", "indent width"),
        ("{{ 'x'.ljust(100000000) }}", "ljust width"),
        ("{{ '%099999999d'|format(1) }}", "format width"),
        ("{{ '{:>99999999}'.format(1) }}", "format width"),
        ("{% for i in range(9000) %}{{ 'x' * 90000 }}{% endfor %}", "output is over the limit"),
        ("{{ customer.name.__class__.__mro__ }}", "unsafe"),
        ("{{ lipsum.__globals__['os'] }}", "'lipsum' is undefined"),  # not offered at all
        ("{{ cycler.__init__.__globals__ }}", "unsafe"),
        # The bypasses of the limits found by fuzzing: each refused before it allocates much.
        (
            "{% set n = namespace(s='x') %}{% for i in range(60) %}{% set n.s = n.s ~ n.s %}{% endfor %}{{ n.s|length }}",
            "~ would make",
        ),
        (
            "{% set n = namespace(s='x') %}{% for i in range(60) %}{% set n.s = n.s ~ n.s ~ n.s %}{% endfor %}",
            "~ would make",
        ),
        ("{% set s = 'x' * 90000 %}{{ s|replace('x', 'yyyyyyyyyy') }}", "replace would make"),
        ("{% set s = 'x' * 90000 %}{{ s.replace('x', 'yyyyyyyyyy') }}", "replace would make"),
        ("{% set s = 'x' * 90000 %}{{ [s, s, s]|join }}", "join would make"),
        ("{% set s = 'x' * 90000 %}{{ '-'.join([s, s]) }}", "join would make"),
        ("{% set s = 'ab' * 40000 %}{{ s|replace('a', s)|length }}", "replace would make"),
        ("{{ lipsum(n=100000) }}", "'lipsum' is undefined"),
        ("{{ self._TemplateReference__context }}", "unsafe|undefined"),
        ("{% set x = [] %}{{ x.append(1) }}", "unsafe"),
        ("{{ {}.update(a=1) }}", "unsafe"),
    ],
)
def test_resource_abuse_and_escapes_are_refused_quickly(abuse, named):
    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(TemplateRenderError, match=named):
            render(abuse, channel="email")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 2
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_ordinary_loops_and_formatting_still_work():
    body = render("{% for i in range(3) %}{{ i }}{% endfor %} {{ '%.2f'|format(9.5) }} {{ '{:>4}'.format(7) }}")
    assert body.body == "【小店】012 9.50    7"


def test_conditions_refuse_repetition_too():
    with pytest.raises(ExpressionError, match="repetition"):
        evaluate("'a' * 10**8", {})


def test_an_sms_over_1600_characters_is_a_template_error():
    with pytest.raises(TemplateRenderError, match="over the SMS limit of 1600"):
        render("{{ 'x' * 1700 }}")


@pytest.mark.parametrize(
    ("body", "encoding", "count"),
    [
        ("x" * 160, "GSM-7", 1),
        ("x" * 161, "GSM-7", 2),
        ("x" * 306, "GSM-7", 2),
        ("x" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # extension characters count twice
        ("€" * 81, "GSM-7", 2),
        ("你" * 70, "UCS-2", 1),
        ("你" * 71, "UCS-2", 2),
        ("x" * 69 + "😀", "UCS-2", 2),  # an emoji is two UTF-16 units
    ],
)
def test_segments(body, encoding, count):
    segments = sms_segments(body)
    assert (segments.encoding, segments.count) == (encoding, count)


def test_rendered_sms_carries_segments_and_the_configured_opt_out():
    plain = render("您好{{ customer.name }}", marketing=True)
    assert (plain.body, plain.encoding, plain.segments) == ("【小店】您好王芳 退订回T", "UCS-2", 1)
    custom = render("Hi", marketing=True, locale="en", opt_out={"en": "Text STOP to end"})
    assert (custom.body, custom.encoding) == ("[小店] Hi Text STOP to end", "UCS-2")  # 【】-free but 小店 is not GSM
    transactional = render("Hi", locale="en")
    assert "STOP" not in transactional.body


def test_validate_refuses_an_oversized_template(tmp_path):
    from definitions.loader import PACKAGE_DIR

    for path in PACKAGE_DIR.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "templates").mkdir()
    for path in (PACKAGE_DIR / "templates").glob("*.yaml"):
        (tmp_path / "templates" / path.name).write_text(path.read_text())
    huge = "x" * (MAX_TEMPLATE_CHARS + 1)
    (tmp_path / "templates" / "birthday_greeting.yaml").write_text(f'sms:\n  zh-CN: "{huge}"\n')
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code != 0
    assert f"over the limit of {MAX_TEMPLATE_CHARS}" in result.output


def test_the_ledger_records_segments_and_refused_templates(store, tmp_path):
    from temporalio.testing import ActivityEnvironment

    from activities.journey import JourneyActivities
    from channels import build_channels
    from tests.helpers import customer
    from tests.test_policy import request, rows, save

    activities = JourneyActivities(
        store, build_channels(tmp_path / "outbox.jsonl"), "小店", default_region="CN", opt_out={"zh-CN": "回T退订"}
    )
    env = ActivityEnvironment()
    save(store, customer())
    long_text = Template(sms={"zh-CN": "{{ '好' * 100 }}"})
    env.run(activities.decide_message, request(step="long", template=long_text, category="marketing"))
    abusive = Template(sms={"zh-CN": "{{ 'x' * 10000000 }}"})
    outcome = env.run(activities.decide_message, request(step="abuse", template=abusive))
    assert (outcome.status, outcome.reason) == ("failed", "template_error")
    by_step = {row.step: row for row in rows(store)}
    assert (by_step["long"].segments, by_step["long"].body.endswith(" 回T退订")) == (2, True)
    assert "repetition" in by_step["abuse"].error
