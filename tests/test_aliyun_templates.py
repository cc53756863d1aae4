"""Templates for Aliyun SMS: a template's `aliyun_sms` section renders as Aliyun sends it (the
registered text of sms.yaml with the params in, under 【signature】, billed 70 then 67 characters a
part); `journeys validate` finds at its line what Aliyun would refuse; the send activity asks the
sms adapter which provider serves a number and renders for it, and a template Aliyun cannot send
fails naming itself."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from activities.journey import JourneyActivities
from core.channel import OutgoingMessage, SendReceipt
from core.sms_registry import RegisteredTemplate, SmsRegistry
from definitions.lint import aliyun_problems
from definitions.loader import PACKAGE_DIR, check_definitions, sms_json_schema, template_json_schema
from definitions.render import TemplateRenderError, render_message
from definitions.schema import AliyunSmsTemplate, Template
from store.tables import MessageRow
from tests.helpers import attempt, customer
from tests.test_policy import request

REGISTRY = SmsRegistry(
    signatures=["小店"],
    templates={
        "SMS_1": RegisteredTemplate(kind="notification", text="亲爱的${name}，您的订单${order}已发货。"),
        "SMS_2": RegisteredTemplate(kind="marketing", text="亲爱的${name}，新品上架，回来看看吧。回T退订"),
    },
)
SHIPPED = Template(
    sms={
        "zh-CN": "亲爱的{{ customer.name }}，订单{{ order.order_id }}已发货",
        "en": "Order {{ order.order_id }} shipped",
    },
    aliyun_sms=AliyunSmsTemplate(
        template_code="SMS_1",
        sign_name="小店",
        params={"name": "{{ customer.name or '顾客' }}", "order": "{{ order.order_id }}"},
    ),
)
CONTEXT = {"customer": {"name": "王芳"}, "order": {"order_id": "TB２０２６０２０１"}}


def aliyun(template: Template, context=CONTEXT, registry: SmsRegistry = REGISTRY, **options):
    return render_message(
        template,
        name="t",
        channel="sms",
        locale="zh-CN",
        context=context,
        shop_name="别的名字",
        marketing=False,
        provider="aliyun",
        registry=registry,
        **options,
    )


def test_an_aliyun_sms_is_the_registered_text_with_the_params_in_under_the_signature():
    rendered = aliyun(SHIPPED)
    # Full-width digits go as they are, each one character; the shop's name is not the signature.
    assert rendered.body == "【小店】亲爱的王芳，您的订单TB２０２６０２０１已发货。"
    assert rendered.provider_template == "SMS_1"
    assert rendered.template_data == {"sign_name": "小店", "params": {"name": "王芳", "order": "TB２０２６０２０１"}}
    assert rendered.segments == 1 and rendered.locale == "zh-CN"
    # The same template to a Twilio or outbox number is its own text, with the shop's signature.
    twilio = render_message(
        SHIPPED, name="t", channel="sms", locale="zh-CN", context=CONTEXT, shop_name="小店", marketing=False
    )
    assert twilio.body == "【小店】亲爱的王芳，订单TB２０２６０２０１已发货" and twilio.provider_template is None


@pytest.mark.parametrize(("length", "parts"), [(70, 1), (71, 2), (134, 2), (135, 3)])
def test_aliyun_bills_70_characters_in_one_part_then_67_a_part(length, parts):
    digits = "０１２３４５６７８９"  # a param of ten full-width digits
    filler = "字" * (length - len("【小店】通知：") - len(digits))
    registry = SmsRegistry(
        signatures=["小店"], templates={"SMS_9": RegisteredTemplate(text=f"通知{filler}：${{code}}")}
    )
    template = Template(aliyun_sms=AliyunSmsTemplate(template_code="SMS_9", sign_name="小店", params={"code": digits}))
    rendered = aliyun(template, registry=registry)
    assert len(rendered.body) == length and rendered.body.endswith(digits)
    assert rendered.segments == parts


def test_what_aliyun_would_refuse_fails_the_render_naming_it():
    without = Template(sms={"zh-CN": "您好"})
    with pytest.raises(TemplateRenderError, match="template 't' has no aliyun_sms section: Aliyun sends only"):
        aliyun(without)
    unregistered = SHIPPED.model_copy(
        update={"aliyun_sms": SHIPPED.aliyun_sms.model_copy(update={"template_code": "SMS_404"})}
    )
    with pytest.raises(TemplateRenderError, match=r"'SMS_404' is not in sms.yaml \(registered: SMS_1, SMS_2\)"):
        aliyun(unregistered)
    long_name = {**CONTEXT, "customer": {"name": "王" * 36}}
    with pytest.raises(TemplateRenderError, match=r"params.name\): is 36 characters, over Aliyun's limit of 35"):
        aliyun(SHIPPED, context=long_name)
    assert aliyun(SHIPPED, context={**CONTEXT, "customer": {"name": "王" * 35}}).template_data["params"]["name"]
    no_order = {"customer": {"name": "王芳"}, "order": {"order_id": ""}}
    with pytest.raises(TemplateRenderError, match=r"params.order\): is empty: Aliyun refuses an empty variable"):
        aliyun(SHIPPED, context=no_order)
    missing = {"customer": {"name": "王芳"}, "order": {}}
    with pytest.raises(TemplateRenderError, match=r"params.order\) failed: 'order.order_id' is undefined"):
        aliyun(SHIPPED, context=missing)


# ---------------------------------------------------------------------------------------------
# journeys validate

SMS_YAML = """\
signatures: [小店]
templates:
  SMS_1:
    kind: notification
    text: 亲爱的${name}，您的订单${order}已发货。
  SMS_2:
    kind: marketing
    text: 亲爱的${name}，新品上架，回来看看吧。回T退订
  SMS_3:
    kind: marketing
    text: 亲爱的${name}，新品上架。
  SMS_4:
    text: 您的${id}和${1x}
"""
GOOD = """\
sms:
  zh-CN: "订单{{ order.order_id }}已发货"
aliyun_sms:
  template_code: SMS_1
  sign_name: 小店
  params:
    name: "{{ customer.name or '顾客' }}"
    order: "{{ order.order_id }}"
"""
JOURNEY = """\
name: x
category: transactional
entry:
  event: order.paid
  key: order
steps:
  - send:
      template: good
  - send:
      id: promo
      category: marketing
      template: good
"""


def validate(tmp_path: Path, templates: dict[str, str], sms: str | None = SMS_YAML, journey: str = JOURNEY):
    folder = tmp_path / "defs"
    (folder / "templates").mkdir(parents=True)
    for name, text in templates.items():
        (folder / "templates" / f"{name}.yaml").write_text(textwrap.dedent(text))
    if sms is not None:
        (folder / "sms.yaml").write_text(sms)
    (folder / "x.yaml").write_text(journey)
    _, problems = check_definitions(folder)
    return [line.replace(f"{folder}/", "") for line in problems]


def test_validate_names_each_aliyun_mistake_at_its_line(tmp_path):
    bad = """\
    sms:
      zh-CN: "您好"
    aliyun_sms:
      template_code: SMS_1
      sign_name: 大店
      params:
        name: "{{ custmer.name }}"
        extra: "{{ order.order_id"
    """
    unregistered = GOOD.replace("SMS_1", "SMS_404")
    promo = GOOD.replace("SMS_1", "SMS_3").replace('    order: "{{ order.order_id }}"\n', "")
    problems = validate(tmp_path, {"good": GOOD, "bad": bad, "nowhere": unregistered, "promo": promo})
    assert problems == [
        "templates/bad.yaml:7: aliyun_sms.params.name: unknown name 'custmer' (known: customer, cycler, dict, entry, "
        "event, joiner, link, namespace, order, range, shop, vars); did you mean 'customer'?",
        "templates/bad.yaml:8: aliyun_sms.params.extra: line 1: unexpected end of template, expected 'end of print "
        "statement'.",
        "sms.yaml:11: templates.SMS_3.text: a marketing template must carry the opt-out text '回T退订'",
        "sms.yaml:13: templates.SMS_4.text: ${id} is not a parameter name Aliyun takes (1 to 25 letters, digits "
        "or _, a letter first; not email, mobile, id, nick or site)",
        "sms.yaml:13: templates.SMS_4.text: ${1x} is not a parameter name Aliyun takes (1 to 25 letters, digits "
        "or _, a letter first; not email, mobile, id, nick or site)",
        "templates/bad.yaml:6: aliyun_sms.params: SMS_1 declares order, not filled here (Aliyun refuses a send "
        "without them)",
        "templates/bad.yaml:8: aliyun_sms.params.extra: SMS_1's text has no ${extra} (it declares: name, order)",
        "templates/bad.yaml:5: aliyun_sms.sign_name: '大店' is not a signature sms.yaml lists (signatures: 小店)",
        "templates/nowhere.yaml:4: aliyun_sms.template_code: 'SMS_404' is not registered in sms.yaml (registered: "
        "SMS_1, SMS_2, SMS_3, SMS_4)",
        # promo.yaml uses SMS_3, whose missing opt-out text is named once, at its line in sms.yaml (above).
        "x.yaml:12: steps[1].send.template: a marketing send through Aliyun needs a marketing template: template "
        "'good' goes out as SMS_1, registered as notification (register a marketing one, with the opt-out text, "
        "or send it as transactional)",
    ]


def test_a_marketing_send_of_a_marketing_template_is_clean_and_no_sms_yaml_checks_nothing(tmp_path):
    good_sms = SMS_YAML.split("  SMS_3:")[0]
    promo = GOOD.replace("SMS_1", "SMS_2").replace('    order: "{{ order.order_id }}"\n', "")
    journey = JOURNEY.replace("template: good\n", "template: promo\n").replace(
        "      template: promo", "      template: good", 1
    )
    assert validate(tmp_path / "a", {"good": GOOD, "promo": promo}, good_sms, journey) == []
    # A shop without sms.yaml does not send through Aliyun: nothing to check the sections against.
    assert validate(tmp_path / "b", {"good": GOOD.replace("SMS_1", "SMS_404")}, None) == []
    # Its params are templates all the same: checked with or without sms.yaml.
    typo = GOOD.replace('{{ order.order_id }}"\n', '{{ ordr.order_id }}"\n').replace("SMS_1", "SMS_404")
    assert validate(tmp_path / "c", {"good": typo}, None) == [
        "templates/good.yaml:8: aliyun_sms.params.order: unknown name 'ordr' (known: customer, cycler, dict, entry, "
        "event, joiner, link, namespace, order, range, shop, vars); did you mean 'order'?"
    ]


def test_the_shipped_templates_go_out_through_aliyun_with_registered_texts(definitions):
    shipped = {name: t for s in definitions for name, t in s.templates.items()}
    shipped |= {name: t for _, s in definitions.broadcasts.values() for name, t in s.templates.items()}
    assert shipped and all(t.aliyun_sms is not None for t in shipped.values() if t.sms)
    for snapshot in [*definitions, *(s for _, s in definitions.broadcasts.values())]:
        category = snapshot.definition.category
        for template in snapshot.templates.values():
            registered = definitions.sms.templates[template.aliyun_sms.template_code]
            if category == "marketing":
                assert registered.kind == "marketing" and registered.text.endswith("回T退订")
    text = (PACKAGE_DIR / "sms.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=sms.schema.json") and "EXAMPLES" in text


def test_the_editors_schemas_are_current():
    for name, made in (("sms", sms_json_schema), ("template", template_json_schema)):
        on_disk = json.loads((PACKAGE_DIR / f"{name}.schema.json").read_text())
        assert on_disk == made(), f"run: .venv/bin/journeys schema {name} > definitions/{name}.schema.json"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "journeys"), "schema", "sms"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and json.loads(done.stdout) == sms_json_schema()


# ---------------------------------------------------------------------------------------------
# The send activity


class MainlandSms:
    """The sms channel as a shop with Aliyun and Twilio has it: mainland numbers through Aliyun.
    It records what it was asked and what it was given (no provider behind it)."""

    name = "sms"
    provider = "twilio"
    settles_doubt = "resend"
    reconcile_seconds = 0.0

    def __init__(self):
        self.asked: list[str] = []
        self.sent: list[OutgoingMessage] = []

    def provider_for(self, address: str) -> str:
        self.asked.append(address)
        return "aliyun" if address.startswith("+86") else "twilio"

    def send(self, message: OutgoingMessage) -> SendReceipt:
        self.sent.append(message)
        return SendReceipt(provider_id=f"biz-{len(self.sent)}")


def activities_with(store, sms: MainlandSms) -> JourneyActivities:
    return JourneyActivities(
        store, {"sms": sms}, "小店", default_region="CN", deliver_inline=frozenset({"sms"}), sms_registry=REGISTRY
    )


def save(store, *people):
    from store import queries
    from tests.test_policy import NOON

    with store.transaction() as session:
        for person in people:
            queries.upsert_customer(session, person, NOON, "CN")


def test_a_mainland_number_gets_the_registered_text_and_the_ledger_holds_code_and_params(store):
    save(store, customer(), customer("c2", phone="+14155550123", locale="en"))
    sms = MainlandSms()
    activities = activities_with(store, sms)
    context = {"order": {"order_id": "o1"}}
    china = request(template=SHIPPED, fallback=None, context=context)
    usa = request(template=SHIPPED, fallback=None, context=context, customer_id="c2")
    assert attempt(1).run(activities.decide_message, china).status == "sent"
    assert attempt(1).run(activities.decide_message, usa).status == "sent"
    assert sms.asked == ["+8613800000001", "+14155550123"]
    first, second = sms.sent
    assert (first.to, first.body, first.provider_template) == (
        "+8613800000001",
        "【小店】亲爱的王芳，您的订单o1已发货。",
        "SMS_1",
    )
    assert first.template_data == {"sign_name": "小店", "params": {"name": "王芳", "order": "o1"}}
    assert (second.to, second.body, second.provider_template) == ("+14155550123", "[小店] Order o1 shipped", None)
    with store.transaction() as session:
        row = session.scalars(select(MessageRow).where(MessageRow.customer_id == "c1")).one()
        assert (row.status, row.provider_template, row.segments, row.provider_id) == ("sent", "SMS_1", 1, "biz-1")
        assert row.template_data == {"sign_name": "小店", "params": {"name": "王芳", "order": "o1"}}


def test_a_template_without_aliyun_sms_to_an_aliyun_number_fails_naming_it(store):
    save(store, customer())
    sms = MainlandSms()
    plain = Template(sms={"zh-CN": "您好{{ customer.name }}"})
    outcome = attempt(1).run(activities_with(store, sms).decide_message, request(template=plain, fallback=None))
    assert (outcome.status, outcome.reason) == ("failed", "template_error")
    assert sms.sent == []
    with store.transaction() as session:
        row = session.scalars(select(MessageRow)).one()
        assert (row.status, row.reason, row.address) == ("failed", "template_error", "+8613800000001")
        assert row.error.startswith("template 't' has no aliyun_sms section: Aliyun sends only registered templates")


def test_sms_yaml_itself_is_checked_as_aliyun_takes_it(tmp_path):
    registry = (
        "signatures: [小店, 【大店】]\ntemplates:\n  SMS-1:\n    text: 您好${name}\n  SMS_2:\n    text: 您好${mobile}\n"
    )
    plain = 'sms:\n  zh-CN: "您好"\n'
    assert validate(tmp_path, {"good": plain}, registry) == [
        "sms.yaml:1: signatures[1]: '【大店】': a signature is its name alone, without 【】",
        "sms.yaml:3: templates.SMS-1: 'SMS-1' is not an Aliyun template code like SMS_123456789",
        "sms.yaml:6: templates.SMS_2.text: ${mobile} is not a parameter name Aliyun takes (1 to 25 letters, digits "
        "or _, a letter first; not email, mobile, id, nick or site)",
    ]


def test_the_worker_sends_with_the_sms_yaml_it_loaded(tmp_path):
    from core.config import Settings
    from journeys.worker import _sms_registry, compile_definitions

    settings = Settings.embedded(definitions_dir=PACKAGE_DIR)
    loaded = compile_definitions(settings)  # what run_worker hands build_workers: no second read
    assert loaded.sms == _sms_registry(settings) and "SMS_460000103" in loaded.sms.templates
    broken = tmp_path / "defs"
    broken.mkdir()
    (broken / "sms.yaml").write_text("templates:\n  SMS_1:\n    kind: promo\n    text: x\n")
    assert _sms_registry(Settings.embedded(definitions_dir=broken)).templates == {}


def test_validate_wants_the_link_base_in_the_registered_text_of_a_parameter_holding_a_link():
    """link() in an Aliyun parameter gives the code alone (Aliyun takes no URL in a variable): the
    registered text must hold the base before it."""
    registry = SmsRegistry(
        signatures=["小店"],
        templates={
            "SMS_7": RegisteredTemplate(text="${name}，新品上架，详情 https://s.shop.cn/l/${link}"),
            "SMS_8": RegisteredTemplate(text="${name}，新品上架，详情 ${link}"),
        },
    )
    params = {"name": "{{ customer.name }}", "link": '{{ link("https://shop.cn/new") }}'}
    good = AliyunSmsTemplate(template_code="SMS_7", sign_name="小店", params=params)
    bad = AliyunSmsTemplate(template_code="SMS_8", sign_name="小店", params=params)
    assert aliyun_problems(good, registry) == []
    [(where, message)] = aliyun_problems(bad, registry)
    assert where == ("aliyun_sms", "params", "link")
    assert "registered text must hold the link's base before it, e.g. https://s.shop.example/l/${link}" in message
