"""Render a message template for one customer and channel.

SMS bodies get the shop's signature (【shop】) and, for marketing, the opt-out text; email bodies are
HTML-escaped where data is substituted. The locale is the customer's, else zh-CN, else any the
template has.

An SMS for Aliyun (provider "aliyun") is not free text: Aliyun sends a registered template code
with parameters under a registered signature. The template's `aliyun_sms` section names them;
each parameter renders here like any template, and the body is the registered text
(definitions/sms.yaml) with the parameters in, as the customer's phone shows it.

`{{ link(url) }}` in any template makes a tracked short link, `{link_base}/l/{code}`, with a random
code per message and URL (`RenderedMessage.links`); the send activity records them with the
ledger row. Without a link base the URL is kept as it is, untracked.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from jinja2 import Undefined, pass_context
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from core.loyalty import Loyalty
from core.sms_parts import MAX_SMS_CHARS, sms_segments
from core.sms_registry import NO_REGISTRY, RegisteredTemplate, SmsRegistry, aliyun_parts, aliyun_text
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
    provider_template: str | None = None  # email: a SendGrid dynamic template id; Aliyun: the template code
    template_data: dict[str, Any] | None = None  # ... and the data it renders with (Aliyun: sign_name, params)
    #: The tracked short links in the message, as (code, url): one ShortLinkRow each when it is sent.
    links: list[tuple[str, str]] = []


#: How many random bytes a short link's code has: 12 bytes, 16 URL-safe characters, unguessable.
LINK_CODE_BYTES = 12
#: What a preview's links carry instead of a code (as long as a real one, so counts stay true).
PREVIEW_CODE = "preview"
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)


class _Links:
    """The short links of one message being rendered: one code per URL (the same URL twice in a
    message is one link), random unless previewing."""

    def __init__(self, base: str | None, preview: bool):
        self.base = base.rstrip("/") if base else None
        self.preview = preview
        self.codes: dict[str, str] = {}
        #: Rendering an Aliyun parameter: Aliyun takes no URL in a variable (isv.PARAM_NOT_SUPPORT_URL),
        #: so the parameter is the code alone and the registered text holds `{base}/l/${param}`.
        self.code_only = False

    def short(self, url: str) -> str:
        if self.base is None:
            if self.code_only:
                raise ValueError(
                    "link() in an Aliyun parameter needs JOURNEYS_LINK_BASE (or JOURNEYS_PUBLIC_URL): the "
                    "parameter carries the short link's code, Aliyun takes no URL in a variable"
                )
            return url  # no public base to serve /l/{code}: the long URL, not tracked
        code = self.codes.get(url)
        if code is None:
            if self.preview:
                width = LINK_CODE_BYTES * 4 // 3 - len(PREVIEW_CODE)  # token_urlsafe's length
                code = f"{PREVIEW_CODE}{len(self.codes) + 1:0{width}d}"
            else:
                code = secrets.token_urlsafe(LINK_CODE_BYTES)
            self.codes[url] = code
        return code if self.code_only else f"{self.base}/l/{code}"

    def listed(self) -> list[tuple[str, str]]:
        return [(code, url) for url, code in self.codes.items()]


_links: ContextVar[_Links | None] = ContextVar("journeys_message_links", default=None)


@contextmanager
def _collecting(base: str | None, preview: bool) -> Iterator[_Links]:
    links = _Links(base, preview)
    token = _links.set(links)
    try:
        yield links
    finally:
        _links.reset(token)


def is_link_url(text: str) -> bool:
    """Whether `link()` takes `text`: an http:// or https:// URL."""
    return _URL.match(text) is not None


def _link(url: Any) -> str:
    """`{{ link("https://shop.example/item/123") }}`: a tracked short link to `url`."""
    if isinstance(url, Undefined):  # fail naming what is missing, as printing it would
        url._fail_with_undefined_error()
    text = str(url).strip()
    if not is_link_url(text):
        # Not the value: it may hold the customer's data, and the reason is logged and kept.
        raise ValueError(
            f"link() of something that is not an http(s) URL ({len(text)} characters; write it in full, https://...)"
        )
    collecting = _links.get()
    return collecting.short(text) if collecting is not None else text


@pass_context
def _localtime(ctx, value: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if isinstance(value, Undefined):  # fail naming what is missing, as printing it would
        value._fail_with_undefined_error()
    tz = ZoneInfo((ctx.get("customer") or {}).get("timezone") or "Asia/Shanghai")
    return to_datetime(value, tz).astimezone(tz).strftime(fmt)


for _env in (TEMPLATES_TEXT, TEMPLATES_HTML):
    _env.filters["localtime"] = _localtime
    _env.globals["link"] = _link


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


#: Aliyun's limits on a parameter's value: a verification code is 4 to 6 letters or digits; any
#: other variable (names, numbers, times, amounts, other text) is at most 35 characters, and none
#: may be empty (Aliyun's 变量规范 for notification and promotional templates).
ALIYUN_PARAM_CHARS = 35
_VERIFICATION_CODE = re.compile(r"^[0-9A-Za-z]{4,6}$")


def aliyun_param_problem(kind: str, value: str) -> str | None:
    """Why Aliyun would refuse `value` for a parameter of a template of `kind`, or None. Never the
    value itself: it is the customer's data, and the reason is logged and kept in the ledger."""
    if not value:
        return "is empty: Aliyun refuses an empty variable"
    if kind == "verification" and not _VERIFICATION_CODE.match(value):
        return f"is not a verification code of 4 to 6 letters or digits ({len(value)} characters), as Aliyun requires"
    if len(value) > ALIYUN_PARAM_CHARS:
        return f"is {len(value)} characters, over Aliyun's limit of {ALIYUN_PARAM_CHARS} for a variable"
    return None


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
    provider: str | None = None,
    registry: SmsRegistry | None = None,
    link_base: str | None = None,
    preview: bool = False,
) -> RenderedMessage:
    """The message for one customer. `provider` is who sends an SMS ("aliyun" renders the
    template's registered Aliyun template, with `registry`, the shop's sms.yaml); `link_base` is
    where `link()`'s short links point (None: the long URLs, untracked); `preview` gives links a
    placeholder code instead of a random one."""
    data = {**context, "shop": {"name": shop_name}}
    with _collecting(link_base, preview) as links:
        if channel == "sms" and provider == "aliyun":
            rendered = _render_aliyun(template, name, data, registry or NO_REGISTRY)
        else:
            rendered = _render_text(template, name, channel, locale, data, shop_name, marketing, opt_out)
        rendered.links = links.listed()
    return rendered


def _render_aliyun(template: Template, name: str, data: Mapping[str, Any], registry: SmsRegistry) -> RenderedMessage:
    """An SMS as Aliyun sends it: the registered text with the parameters in, under the signature."""
    aliyun = template.aliyun_sms
    if aliyun is None:
        raise TemplateRenderError(
            f"template {name!r} has no aliyun_sms section: Aliyun sends only registered templates, so an SMS "
            "through Aliyun needs the template's code from sms.yaml and its params"
        )
    registered: RegisteredTemplate | None = registry.templates.get(aliyun.template_code)
    if registered is None:
        known = ", ".join(sorted(registry.templates)) or "none"
        raise TemplateRenderError(
            f"template {name!r}: Aliyun template code {aliyun.template_code!r} is not in sms.yaml (registered: {known})"
        )
    params: dict[str, str] = {}
    for param, source in aliyun.params.items():
        links = _links.get()
        try:
            if links is not None:
                links.code_only = True
            value = render_limited(source, data).strip()
        except Exception as err:  # a template can fail in any way; name it and the cause
            raise TemplateRenderError(f"template {name!r} (aliyun_sms.params.{param}) failed: {err}") from err
        finally:
            if links is not None:
                links.code_only = False
        problem = aliyun_param_problem(registered.kind, value)
        if problem:
            raise TemplateRenderError(f"template {name!r} (aliyun_sms.params.{param}): {problem}")
        params[param] = value
    missing = [param for param in registered.parameters if param not in params]
    if missing:
        raise TemplateRenderError(
            f"template {name!r}: {aliyun.template_code} declares {', '.join(missing)}, which aliyun_sms.params "
            "does not fill"
        )
    body = aliyun_text(aliyun.sign_name, registered.text, params)
    return RenderedMessage(
        locale="zh-CN",
        body=body,
        segments=aliyun_parts(body),
        provider_template=aliyun.template_code,
        template_data={"sign_name": aliyun.sign_name, "params": params},
    )


def _render_text(
    template: Template,
    name: str,
    channel: str,
    locale: str,
    data: Mapping[str, Any],
    shop_name: str,
    marketing: bool,
    opt_out: Mapping[str, str] | None,
) -> RenderedMessage:
    variants = _variants(template, channel)
    if not variants:
        raise TemplateRenderError(f"template {name!r} has no {channel} text")
    chosen = _pick_locale(variants, locale)
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
