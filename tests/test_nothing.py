"""Nothing is nothing, everywhere (issue 21): what each operation does with a missing key (at any
depth), a null value, and keys named like a mapping's methods; what still fails (a real error
on present data); and templates, which refuse to print nothing and name the path."""

from __future__ import annotations

from datetime import datetime

import pytest

from definitions.expressions import ExpressionError, build_context, evaluate, zone
from definitions.render import TemplateRenderError, render_message
from definitions.schema import Template

SHANGHAI = zone("Asia/Shanghai")

EVENT = {
    "type": "order.paid",
    "occurred_at": "2026-02-01T02:00:00Z",
    # method names present here, absent from the order below (and the other way round)
    "data": {"values": [1, 2], "update": "u", "pop": "x", "copy": {"deep": 1}, "empty": [], "rating": None},
}
ORDER = {
    "order_id": "o1",
    "amount": 129,
    "items": [{"sku": "tea", "price": 30}],
    "keys": "k",
    "get": 5,
    "tags": ["vip"],
    "empty": [],
    "none": None,
    "a": {"b": {}},
}
CUSTOMER = {"name": "王芳", "birthday": None, "traits": {"member_level": "gold", "pop": 1}}
VARS = {"n": 3, "closes_at": None}


def context():
    return build_context(
        tz=SHANGHAI,
        now=datetime(2026, 2, 1, 2, 0, tzinfo=zone("UTC")),
        event=EVENT,
        order=ORDER,
        customer=CUSTOMER,
        vars=VARS,
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # a missing key at each depth is nothing: None as a result, never an error
        ("event.data.x", None),
        ("event.data.x is defined", False),
        ("order.a.b.c", None),
        ("order.a.b.c is defined", False),
        ("order.x.y.z | default('z')", "z"),
        ("customer.traits.points > 1000", False),
        ("customer.traits.points >= 0", False),
        ("not customer.traits.points", True),
        ("vars.x", None),
        ("vars.x + 1", None),
        ("unknown_name.x", None),
        # keys named like a mapping's methods, absent: nothing, not the method
        ("order.values", None),
        ("order.values is defined", False),
        ("'values' in order", False),
        ("order.update", None),
        ("order.pop is defined", False),
        ("order.copy | default('none')", "none"),
        ("order['values']", None),
        ("event.data.items | default([]) | length", 0),
        ("event.data.items is defined", False),
        ("event.data.keys is defined", False),
        ("event.data.get", None),
        ("order.tags.count", None),  # a list shows only its items
        ("order.tags.index is defined", False),
        # ... and present: the value
        ("order.items | length", 1),
        ("order.items[0].sku", "tea"),
        ("order.items.0.sku", "tea"),
        ("order.items is defined", True),
        ("'items' in order", True),
        ("order.keys", "k"),
        ("order.get + 1", 6),
        ("event.data.values", [1, 2]),
        ("event.data.update is defined", True),
        ("event.data.pop", "x"),
        ("event.data.copy.deep", 1),
        ("customer.traits.pop", 1),
        # null reads as nothing
        ("customer.birthday", None),
        ("customer.birthday is defined", False),
        ("customer.birthday > '2000-01-01'", False),
        ("customer.birthday | default('--01-01')", "--01-01"),
        ("event.data.rating >= 4", False),
        ("order.none + 1", None),
        ("vars.closes_at or 5", 5),
        ("none < 1", False),
        ("none + 1", None),
        ("'a' in none", False),
        ("none | length", 0),
        ("none | default(7)", 7),
        # lists and empty lists
        ("order.empty | length", 0),
        ("order.empty | first", None),
        ("order.empty | sum", 0),
        ("order.items | map(attribute='price') | sum", 30),
        ("order.items | map(attribute='weight') | list", [None]),
        ("order.tags[5]", None),
        ("'vip' in order.tags", True),
        ("event.data.empty[0].sku", None),
        ("order.items | selectattr('weight', 'gt', 1) | list", []),
        # comparisons with nothing: false; != and not in: true
        ("order.x == 1", False),
        ("order.x != 1", True),
        ("order.x < 1", False),
        ("order.x > 1", False),
        ("order.x <= 1", False),
        ("order.x >= 1", False),
        ("1 < order.x", False),
        ("order.x == order.x", False),
        ("order.x == none", False),
        ("order.x in [1, 2]", False),
        ("order.x not in [1, 2]", True),
        ("'a' in order.x", False),
        ("'a' not in order.x", True),
        ("order.x in 'abc'", False),
        ("0 < order.x < 2", False),
        ("order.x is eq 1", False),
        # arithmetic with nothing: nothing
        ("order.x + 1", None),
        ("1 + order.x", None),
        ("order.x - 1", None),
        ("order.x * 2", None),
        ("order.x / 2", None),
        ("order.x // 2", None),
        ("order.x % 2", None),
        ("order.x ** 2", None),
        ("-order.x", None),
        ("(order.x + 1) > 0", False),
        ("now + days(order.x)", None),
        ("time(order.paid_at) < now", False),
        ("time(order.paid_at) or 'later'", "later"),
        ("order.x | int", 0),
        # truth, text, iteration
        ("order.x or 'fallback'", "fallback"),
        ("'yes' if order.x else 'no'", "no"),
        ("order.x | length", 0),
        ("order.x | list", []),
        ("order.x | join(',')", ""),
        ("order.x ~ 'y'", "y"),
        ("[order.x, 1]", [None, 1]),
        # present data as before
        ("order.amount * 2 > 200", True),
        ("order.amount - 29", 100),
        ("'abc'.upper()", "ABC"),
        ("vars.n // 2", 1),
    ],
)
def test_nothing(source, expected):
    assert evaluate(source, context()) == expected


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("1 + 'a'", "unsupported operand"),
        ("order.amount + 'a'", "unsupported operand"),
        ("order.amount > '100'", "not supported"),
        ("time('next Tuesday')", "not an RFC 3339 time"),
        ("yearly('soon')", "not a date"),
        ("1 / 0", "division by zero"),
        ("order.values()", "'order.values' is undefined"),  # data has no methods
        ("order.update({'x': 1})", "unsafe"),
    ],
)
def test_real_errors_on_present_data_still_fail(source, named):
    with pytest.raises(ExpressionError, match=named):
        evaluate(source, context())


# ------------------------------------------------------------------------------------ templates


def render(source: str, channel: str = "sms") -> str:
    template = (
        Template(email={"zh-CN": {"subject": "s", "body": source}})
        if channel == "email"
        else Template(sms={"zh-CN": source})
    )
    data = {"order": {"order_id": "o1"}, "customer": {"name": "王芳", "nick": None, "timezone": "Asia/Shanghai"}}
    rendered = render_message(
        template, name="t", channel=channel, locale="zh-CN", context=data, shop_name="店", marketing=False
    )
    return rendered.body.removeprefix("【店】")


@pytest.mark.parametrize("channel", ["sms", "email"])
@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("亲爱的{{ customer.nickname }}，", r"'customer\.nickname' is undefined"),
        ("{{ order.a.b.c }}", r"'order\.a\.b\.c' is undefined \('order\.a' is undefined\)"),
        ("{{ order.items }}", r"'order\.items' is undefined"),
        ("亲爱的{{ customer.nick }}，", r"'customer\.nick' is null"),
        ("{{ '亲爱的' ~ customer.nick }}", r"'customer\.nick' is null"),
        ("{{ order.coupon | upper }}", r"'order\.coupon' is undefined"),
        ("{{ order.amount + 1 }}", r"'order\.amount' is undefined"),
        ("{{ order.closes_at | localtime }}", r"'order\.closes_at' is undefined"),
    ],
)
def test_templates_refuse_to_print_nothing_and_name_the_path(source, named, channel):
    with pytest.raises(TemplateRenderError, match=named):
        render(source, channel)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ order.items | default([]) | length }}", "0"),
        ("{{ order.a.b.c | default('x') }}", "x"),
        ("{% if order.a.b is defined %}yes{% else %}no{% endif %}", "no"),
        ("{% if order.items is defined %}yes{% else %}no{% endif %}", "no"),
        ("{% if order.amount > 100 %}big{% else %}small{% endif %}", "small"),
        ("{% for item in order.items %}{{ item.sku }}{% else %}none{% endfor %}", "none"),
        ("{{ customer.nick | default('亲') }}", "亲"),
        ("{{ customer.nick or '亲' }}", "亲"),
        ("{{ order | items | list | length }}", "1"),  # a mapping's entries: the `items` filter
    ],
)
def test_templates_read_nothing_like_conditions(source, expected):
    assert render(source) == expected
