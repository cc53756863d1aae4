"""The expression language: computed times, yearly dates, and the sandbox."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from definitions.expressions import ExpressionError, build_context, evaluate, evaluate_time, next_yearly, zone
from definitions.render import render_message
from definitions.schema import Template, parse_duration

SHANGHAI = zone("Asia/Shanghai")


def context(**names):
    return build_context(tz=SHANGHAI, now=datetime(2026, 2, 1, 2, 0, tzinfo=zone("UTC")), **names)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("15m", timedelta(minutes=15)), ("1d12h", timedelta(days=1, hours=12)), ("-2h", timedelta(hours=-2)),
     ("2w", timedelta(days=14))],
)  # fmt: skip
def test_durations(text, expected):
    assert parse_duration(text) == expected


def test_close_time_default_and_explicit():
    source = "time(order.closes_at) if order.closes_at else event.occurred_at + hours(72)"
    created = {"occurred_at": "2026-02-01T02:00:00Z"}
    assert evaluate_time(source, context(event=created, order={}), SHANGHAI) == datetime(
        2026, 2, 4, 10, 0, tzinfo=SHANGHAI
    )
    explicit = context(event=created, order={"closes_at": "2026-02-01T12:30:00+08:00"})
    assert evaluate_time(source, explicit, SHANGHAI) == datetime(2026, 2, 1, 12, 30, tzinfo=SHANGHAI)


def test_naive_times_are_read_in_the_customers_zone():
    assert evaluate_time("'2026-03-01T09:00:00'", context(), SHANGHAI) == datetime(2026, 3, 1, 9, 0, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("birthday", "now", "expected"),
    [
        ("1990-02-10", "2026-02-01 12:00", "2026-02-07 10:00"),
        ("1990-02-10", "2026-02-07 10:00", "2027-02-07 10:00"),  # strictly after now
        ("1990-01-02", "2026-12-01 12:00", "2026-12-30 10:00"),  # across the year boundary
        ("--02-29", "2027-01-01 00:00", "2027-02-25 10:00"),  # kept on 28 February
        ("--02-29", "2027-03-01 00:00", "2028-02-26 10:00"),  # a leap year
    ],
)
def test_yearly(birthday, now, expected):
    moment = datetime.fromisoformat(now).replace(tzinfo=SHANGHAI)
    assert next_yearly(birthday, moment, SHANGHAI, "10:00", "3d") == datetime.fromisoformat(expected).replace(
        tzinfo=SHANGHAI
    )


def test_conditions_are_lenient_about_missing_data():
    assert evaluate("customer.birthday", context(customer={})) is None
    assert evaluate("'vip' in customer.tags", context(customer={"tags": ["vip"]})) is True


@pytest.mark.parametrize(
    "attack",
    [
        "().__class__.__mro__[1].__subclasses__()",
        "event.__class__.__init__.__globals__",
        "time.__globals__['os'].system('true')",
        "order.update({'x': 1})",
    ],
)
def test_sandbox_refuses_escapes(attack):
    with pytest.raises(ExpressionError):
        evaluate(attack, context(order={}))


def test_templates_escape_html_in_email_only():
    template = Template(
        sms={"zh-CN": "{{ customer.name }}"}, email={"zh-CN": {"subject": "s", "body": "{{ customer.name }}"}}
    )
    ctx = {"customer": {"name": "<b>王</b>", "timezone": "Asia/Shanghai"}}
    email = render_message(
        template, name="t", channel="email", locale="zh-CN", context=ctx, shop_name="店", marketing=False
    )
    sms = render_message(template, name="t", channel="sms", locale="zh-CN", context=ctx, shop_name="店", marketing=True)
    assert email.body == "&lt;b&gt;王&lt;/b&gt;"
    assert sms.body == "【店】<b>王</b> 退订回T"


def test_locale_falls_back_to_zh_cn():
    template = Template(sms={"zh-CN": "中文"})
    rendered = render_message(
        template, name="t", channel="sms", locale="en", context={}, shop_name="店", marketing=False
    )
    assert (rendered.locale, rendered.body) == ("zh-CN", "【店】中文")


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ customer.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    ],
)
def test_templates_refuse_sandbox_escapes(attack):
    from definitions.render import TemplateRenderError

    with pytest.raises(TemplateRenderError, match="unsafe|undefined"):
        render_message(
            Template(sms={"zh-CN": attack}),
            name="evil",
            channel="sms",
            locale="zh-CN",
            context={"customer": {"name": "x"}},
            shop_name="店",
            marketing=False,
        )


# ------------------------------------------------------------------ durations are elapsed time

UTC_ZONE = zone("UTC")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("zone_name", "source", "occurred", "expected"),
    [
        # New York springs forward on 2026-03-08: 72 real hours, not 72 hours on the wall clock.
        ("America/New_York", "event.occurred_at + hours(72)", "2026-03-06T02:04:00Z", "2026-03-09T02:04:00Z"),
        (
            "America/New_York",
            "event.occurred_at + hours(72) - hours(2)",
            "2026-03-06T02:04:00Z",
            "2026-03-09T00:04:00Z",
        ),
        # ... and falls back on 2026-11-01.
        ("America/New_York", "event.occurred_at + days(3)", "2026-10-30T12:00:00Z", "2026-11-02T12:00:00Z"),
        ("America/New_York", "event.occurred_at + minutes(90)", "2026-11-01T05:30:00Z", "2026-11-01T07:00:00Z"),
        # Berlin: CET to CEST on 2026-03-29, back on 2026-10-25.
        ("Europe/Berlin", "event.occurred_at + days(1)", "2026-03-28T11:00:00Z", "2026-03-29T11:00:00Z"),
        (
            "Europe/Berlin",
            "time('2026-10-24T12:00:00') + duration('1d')",
            "2026-10-20T00:00:00Z",
            "2026-10-25T10:00:00Z",
        ),
        ("Europe/Berlin", "event.occurred_at - hours(24)", "2026-10-25T12:00:00Z", "2026-10-24T12:00:00Z"),
    ],
)
def test_durations_are_elapsed_time_across_daylight_saving(zone_name, source, occurred, expected):
    tz = zone(zone_name)
    ctx = build_context(tz=tz, now=utc(occurred), event={"occurred_at": occurred})
    assert evaluate_time(source, ctx, tz).astimezone(UTC_ZONE) == utc(expected)


def test_the_time_between_two_moments_is_real_time():
    tz = zone("America/New_York")
    ctx = build_context(tz=tz, now=utc("2026-03-09T12:00:00Z"), event={"occurred_at": "2026-03-08T06:00:00Z"})
    # 01:00 EST to 01:00 EDT the next day is 23 hours; `now - event.occurred_at` likewise.
    assert evaluate("time('2026-03-09T01:00:00') - time('2026-03-08T01:00:00')", ctx) == timedelta(hours=23)
    assert evaluate("now - event.occurred_at", ctx) == timedelta(hours=30)
    morning = build_context(tz=tz, now=utc("2026-03-08T12:00:00Z"))  # 08:00 EDT, the first day of DST
    assert evaluate("(now - hours(24)).hour", morning) == 7  # 24 real hours earlier it was 07:00 EST


def test_calendar_alignment_stays_where_a_function_says_so():
    """yearly() keeps 10:00 local across the change; adding time after it is elapsed again."""
    tz = zone("Europe/Berlin")
    ctx = build_context(tz=tz, now=utc("2026-03-20T00:00:00Z"))
    greeting = evaluate_time("yearly('--03-30', time='10:00', before='3d')", ctx, tz)
    assert greeting.astimezone(tz).hour == 10 and greeting.astimezone(UTC_ZONE) == utc("2026-03-27T09:00:00Z")
    later = evaluate_time("yearly('--03-30', time='10:00', before='3d') + days(3)", ctx, tz)
    assert later.astimezone(UTC_ZONE) == utc("2026-03-30T09:00:00Z")  # 11:00 CEST: 72 real hours on
