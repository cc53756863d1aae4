"""Render a message template for one customer and channel.

SMS bodies get the shop's signature (【shop】) and, for marketing, the opt-out text; email bodies are
HTML-escaped where data is substituted. The locale is the customer's, else zh-CN, else any the
template has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from jinja2 import Undefined, pass_context
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from core.loyalty import Loyalty
from core.sms_parts import MAX_SMS_CHARS, sms_segments
from definitions.expressions import MESSAGE_NAMES, TEMPLATES_HTML, TEMPLATES_TEXT, render_limited, to_datetime
from definitions.schema import Template

#: The names a template renders with, besides Jinja's globals: the data of the send (the message
#: context, definitions.expressions `message_context`) and `shop`, which render_message adds.
#: definitions/lint.py checks templates against these.
TEMPLATE_NAMES = frozenset({*MESSAGE_NAMES, "shop"})
#: The opt-out text marketing SMS end with, per locale (JOURNEYS_SMS_OPT_OUT changes it).
OPT_OUT_TEXT = {"zh-CN": "退订回T", "en": "Reply STOP to opt out"}


#: The customer's loyalty facts (`customer.points`, `customer.tier`), read from the store outside
#: the workflow: by the router at the entry event (its entry condition, and the instance's input:
#: the re-checked entry condition, vars and steps see them as of then, from revision 6), by the
#: send activity at the send (templates) and by the preview (now).
LOYALTY_FACTS = ("points", "tier")
#: The fields of each loyalty fact (`customer.points` is a number: none), for `journeys validate`.
LOYALTY_FIELDS: dict[str, tuple[str, ...]] = {"points": (), "tier": ("name", "title", "until")}


_READS_LOYALTY = re.compile(rf"\bcustomer\s*(?:\.\s*|\[\s*['\"])(?:{'|'.join(LOYALTY_FACTS)})\b")


_READS_SEGMENTS = re.compile(r"\bcustomer\s*(?:\.\s*|\[\s*['\"])segments\b")


def reads_segments(source: str) -> bool:
    """Whether an expression or template may read `customer.segments` (the names of the segments
    the customer is in at the entry event; the router evaluates them only then)."""
    return _READS_SEGMENTS.search(source) is not None


def reads_loyalty(source: str) -> bool:
    """Whether an expression or template may read `customer.points` or `customer.tier` (the
    router reads them from the store only then)."""
    return _READS_LOYALTY.search(source) is not None


class TierLike(Protocol):
    """A customer's tier as the store keeps it (store.tables.MemberTierRow)."""

    tier: str
    until: datetime


def loyalty_facts(points: int, tier: TierLike | None, loyalty: Loyalty) -> dict[str, Any]:
    """`customer.points` (the ledger's balance now) and `customer.tier` (`{name, title, until}`,
    `until` the date of the card's end in the programme's zone, or None without a tier).
    A tier no longer in loyalty.yaml keeps its name as its title."""
    if tier is None:
        return {"points": points, "tier": None}
    levels = {level.name: level for level in loyalty.tiers.levels} if loyalty.tiers else {}
    level = levels.get(tier.tier)
    return {
        "points": points,
        "tier": {
            "name": tier.tier,
            "title": (level.title if level else None) or tier.tier,
            "until": tier.until.astimezone(ZoneInfo(loyalty.zone)).date().isoformat(),
        },
    }


class TemplateRenderError(ValueError):
    """A template that is missing for a channel, or failed to render."""


class RenderedMessage(BaseModel):
    locale: str
    subject: str | None = None
    body: str
    encoding: str | None = None  # SMS: GSM-7 or UCS-2
    segments: int | None = None  # SMS: the segments carriers bill
    provider_template: str | None = None  # email: a SendGrid dynamic template id
    template_data: dict[str, Any] | None = None  # ... and the data it renders with


@pass_context
def _localtime(ctx, value: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if isinstance(value, Undefined):  # fail naming what is missing, as printing it would
        value._fail_with_undefined_error()
    tz = ZoneInfo((ctx.get("customer") or {}).get("timezone") or "Asia/Shanghai")
    return to_datetime(value, tz).astimezone(tz).strftime(fmt)


for _env in (TEMPLATES_TEXT, TEMPLATES_HTML):
    _env.filters["localtime"] = _localtime


def _pick_locale(available: Mapping[str, Any], wanted: str) -> str:
    for locale in (wanted, "zh-CN", *available):
        if locale in available:
            return locale
    raise TemplateRenderError("no text")


def has_variant(template: Template, channel: str) -> bool:
    return bool(_variants(template, channel))


def _variants(template: Template, channel: str) -> Mapping[str, Any]:
    if channel == "email":
        return template.email
    if channel == "webhook":
        return template.webhook or template.sms
    return template.sms  # sms, and the outbox standing in for it


def render_message(
    template: Template,
    *,
    name: str,
    channel: str,
    locale: str,
    context: Mapping[str, Any],
    shop_name: str,
    marketing: bool,
    opt_out: Mapping[str, str] | None = None,
) -> RenderedMessage:
    variants = _variants(template, channel)
    if not variants:
        raise TemplateRenderError(f"template {name!r} has no {channel} text")
    chosen = _pick_locale(variants, locale)
    data = {**context, "shop": {"name": shop_name}}
    try:
        if channel == "email":
            email = variants[chosen]
            subject = render_limited(email.subject, data).strip()
            body = render_limited(email.body, data, html=True).strip()
            if not email.sendgrid_template_id:
                return RenderedMessage(locale=chosen, subject=subject, body=body)
            dynamic = to_jsonable_python({**data, "subject": subject, "body": body}, fallback=str)
            return RenderedMessage(
                locale=chosen,
                subject=subject,
                body=body,
                provider_template=email.sendgrid_template_id,
                template_data=dynamic,
            )
        text = render_limited(variants[chosen], data).strip()
    except Exception as err:  # a template can fail in any way; name it and the cause
        raise TemplateRenderError(f"template {name!r} ({channel}, {chosen}) failed: {err}") from err
    if channel != "sms":
        return RenderedMessage(locale=chosen, body=text)
    signature = f"【{shop_name}】" if chosen == "zh-CN" else f"[{shop_name}] "
    text = signature + text
    if marketing:
        texts = {**OPT_OUT_TEXT, **(opt_out or {})}
        text = f"{text} {texts.get(chosen, texts['en'])}".rstrip()
    if len(text) > MAX_SMS_CHARS:
        raise TemplateRenderError(
            f"template {name!r} (sms, {chosen}) gave {len(text)} characters, over the SMS limit of {MAX_SMS_CHARS}"
        )
    segments = sms_segments(text)
    return RenderedMessage(locale=chosen, body=text, encoding=segments.encoding, segments=segments.count)
