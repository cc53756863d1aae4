"""Tracked short links: `{{ link(url) }}` in a template renders `{base}/l/{code}` with a random,
unguessable code per message and URL, and the send activity writes one short_links row per link
with the ledger row, expiring with the retention period. Without a link base the long URL is
kept, untracked."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from activities.journey import JourneyActivities
from channels import build_channels
from definitions.render import TemplateRenderError, render_message
from definitions.schema import AliyunSmsTemplate, EmailTemplate, Template
from store.tables import MessageRow, ShortLinkRow
from tests.helpers import attempt, customer
from tests.test_aliyun_templates import REGISTRY, MainlandSms, save
from tests.test_policy import request

BASE = "https://s.shop.example"
CODE = re.compile(r"^[A-Za-z0-9_-]{16}$")
ITEM = "https://shop.example/item/123?from=sms&utm=1"
LINKED = Template(
    sms={
        "zh-CN": '新品到了：{{ link("https://shop.example/item/123?from=sms&utm=1") }} 店铺：{{ link("https://shop.example/") }}'
    },
    email={
        "zh-CN": EmailTemplate(
            subject="新品", body='<a href="{{ link("https://shop.example/item/123?from=sms&utm=1") }}">看看</a>'
        )
    },
)


def render(template: Template = LINKED, channel: str = "sms", **options):
    return render_message(
        template,
        name="new_arrivals",
        channel=channel,
        locale="zh-CN",
        context={"order": {"order_id": "o1"}},
        shop_name="小店",
        marketing=False,
        **options,
    )


def test_each_link_renders_a_short_url_with_its_own_random_code():
    first, second = render(link_base=BASE + "/"), render(link_base=BASE)
    for rendered in (first, second):
        (item_code, item_url), (shop_code, shop_url) = rendered.links
        assert (item_url, shop_url) == (ITEM, "https://shop.example/")
        assert CODE.match(item_code) and CODE.match(shop_code) and item_code != shop_code
        assert rendered.body == f"【小店】新品到了：{BASE}/l/{item_code} 店铺：{BASE}/l/{shop_code}"
    assert {code for code, _ in first.links}.isdisjoint(code for code, _ in second.links)  # unique per message


def test_a_link_in_an_email_or_an_aliyun_param_and_the_same_url_twice():
    email = render(channel="email", link_base=BASE)
    [(code, url)] = email.links
    assert url == ITEM and email.body == f'<a href="{BASE}/l/{code}">看看</a>'
    twice = Template(sms={"zh-CN": '{{ link("https://a.example/x") }} {{ link("https://a.example/x") }}'})
    rendered = render(twice, link_base=BASE)
    [(code, _)] = rendered.links  # one URL, one link: its clicks count together
    assert rendered.body == f"【小店】{BASE}/l/{code} {BASE}/l/{code}"
    aliyun = Template(
        aliyun_sms=AliyunSmsTemplate(
            template_code="SMS_1",
            sign_name="小店",
            params={"name": '{{ link("https://a.example/x") }}', "order": "{{ order.order_id }}"},
        )
    )
    sent = render(aliyun, provider="aliyun", registry=REGISTRY, link_base="https://s.cn")
    [(code, url)] = sent.links
    # Aliyun takes no URL in a variable: the parameter is the code, the registered text holds the base.
    assert sent.template_data["params"]["name"] == code and url == "https://a.example/x"
    with pytest.raises(TemplateRenderError, match=r"link\(\) in an Aliyun parameter needs JOURNEYS_LINK_BASE"):
        render(aliyun, provider="aliyun", registry=REGISTRY, link_base=None)


def test_without_a_link_base_the_long_url_stays_untracked_and_a_bad_url_is_named():
    rendered = render()
    assert rendered.links == []
    assert rendered.body == f"【小店】新品到了：{ITEM} 店铺：https://shop.example/"
    for bad in ("ftp://shop.example/x", "shop.example/item", "javascript:alert(1)"):
        template = Template(sms={"zh-CN": f'看看{{{{ link("{bad}") }}}}'})
        with pytest.raises(TemplateRenderError, match=r"link\(\) of something that is not an http\(s\) URL") as bad_url:
            render(template, link_base=BASE)
        assert bad not in str(bad_url.value)  # the value may be the customer's: it is logged and kept
    missing = Template(sms={"zh-CN": "看看{{ link(order.url) }}"})
    with pytest.raises(TemplateRenderError, match="'order.url' is undefined"):
        render(missing, link_base=BASE)


def test_a_preview_shows_placeholder_codes_as_long_as_real_ones():
    rendered = render(link_base=BASE, preview=True)
    assert rendered.body == f"【小店】新品到了：{BASE}/l/preview000000001 店铺：{BASE}/l/preview000000002"
    assert len("preview000000001") == 16


def _activities(store, outbox, days: int) -> JourneyActivities:
    return JourneyActivities(
        store,
        build_channels(outbox),
        "小店",
        default_region="CN",
        deliver_inline=frozenset({"sms", "outbox"}),
        link_base=BASE,
        link_days=days,
    )


def test_the_send_writes_each_link_with_the_ledger_row(store, outbox):
    save(store, customer(), customer("c2"))
    before = datetime.now(UTC)
    activities = _activities(store, outbox, 30)
    for person in ("c1", "c2"):
        sent = request(customer_id=person, template=LINKED, fallback=None)
        assert attempt(1).run(activities.decide_message, sent).status == "sent"
    plain = request(step="plain", fallback=None)  # no link() in it: no rows
    assert attempt(1).run(activities.decide_message, plain).status == "sent"
    with store.transaction() as session:
        messages = {row.customer_id + row.step: row for row in session.scalars(select(MessageRow))}
        links = session.scalars(select(ShortLinkRow)).all()
    assert len(links) == 4 and len({link.code for link in links}) == 4
    for person in ("c1", "c2"):
        row = messages[person + "remind"]
        theirs = [link for link in links if link.message_id == row.id]
        assert sorted(link.url for link in theirs) == sorted([ITEM, "https://shop.example/"])
        for link in theirs:
            assert f"{BASE}/l/{link.code}" in row.body  # the text the customer got carries its code
            created = link.created_at.replace(tzinfo=link.created_at.tzinfo or UTC)
            expires = link.expires_at.replace(tzinfo=link.expires_at.tzinfo or UTC)
            assert before <= created <= datetime.now(UTC) and expires - created == timedelta(days=30)
    assert not any(link.message_id == messages["c1plain"].id for link in links)


def test_links_of_a_shop_that_keeps_everything_live_ten_years(store, outbox):
    save(store, customer())
    activities = _activities(store, outbox, 0)
    assert attempt(1).run(activities.decide_message, request(template=LINKED, fallback=None)).status == "sent"
    with store.transaction() as session:
        links = session.scalars(select(ShortLinkRow)).all()
    assert len(links) == 2 and all(link.expires_at - link.created_at == timedelta(days=3650) for link in links)


def test_an_aliyun_send_records_the_links_of_its_params(store):
    save(store, customer())
    sms = MainlandSms()
    activities = JourneyActivities(
        store,
        {"sms": sms},
        "小店",
        default_region="CN",
        deliver_inline=frozenset({"sms"}),
        sms_registry=REGISTRY,
        link_base="https://s.cn",
    )
    template = Template(
        aliyun_sms=AliyunSmsTemplate(
            template_code="SMS_1",
            sign_name="小店",
            params={"name": "{{ customer.name }}", "order": '{{ link("https://a.example/o/1") }}'},
        )
    )
    assert attempt(1).run(activities.decide_message, request(template=template, fallback=None)).status == "sent"
    [message] = sms.sent
    with store.transaction() as session:
        [link] = session.scalars(select(ShortLinkRow)).all()
    assert (link.message_id, link.url) == (message.message_id, "https://a.example/o/1")
    assert message.template_data["params"]["order"] == link.code  # the text holds https://s.cn/l/


def test_validate_names_a_written_out_link_that_is_not_http(tmp_path):
    from tests.test_aliyun_templates import validate

    bad = 'sms:\n  zh-CN: "{{ link(\'https://a.example/x\') }}"\nemail:\n  zh-CN:\n    subject: "x"\n    body: "{{ link(\'www.a.example\') }}"\n'
    problems = validate(tmp_path, {"good": bad}, sms=None, journey=JOURNEY)
    assert problems == [
        "templates/good.yaml:6: email.zh-CN.body: link('www.a.example'): not an http(s) URL (write it in full, https://...)"
    ]


JOURNEY = """\
name: x
category: transactional
entry:
  event: order.paid
  key: order
steps:
  - send:
      template: good
"""
