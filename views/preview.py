"""A message exactly as a customer would get it, on each channel its template has, and the channel
the contact policy would pick: `journeys preview JOURNEY STEP --customer C [--order O]` and the
console's step preview (`GET /journeys/{name}/preview`).

The customer comes from the store; the order is what the event log knows of it, built by the same
function as a running journey's (core.orders.order_context), its items joined with the catalogue
as the router joins them for an instance (store.products.order_facts). Without an order given, the
customer's latest order is used, and a customer-keyed journey with none previews with an empty
`order`; the notes say which. With no event logged for the order, the entry event is made up from
the order id alone. Nothing is sent and nothing is written.

An SMS is shown as each provider would send it: the template's own text (Twilio, the outbox) and,
for a template with an `aliyun_sms` section, the registered text with its parameters in, under
its signature, as a customer of Aliyun gets it, with its characters and Aliyun's billed parts (70
characters in one, else 67 a part), the template code and the signature. `link()`s show as they
would look, with a placeholder code (`preview...`): a send makes its own.

A journey, step or customer that is not there is a `PreviewError` (404); a request that cannot be
previewed as given (an order of another customer) is a `PreviewRefused` (422) naming what to pass.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from core.orders import order_context
from core.records import Event
from core.rfm import customer_context
from core.vocabulary import CHANNELS, Reason
from definitions.expressions import build_context, evaluate, evaluate_time, message_context, zone
from definitions.loader import Definitions
from definitions.render import TemplateRenderError, has_variant, loyalty_facts, reads_segments, render_message
from definitions.schema import SendStep, walk_steps
from rules.policy import Decision, decide
from store import points as ledger
from store import products as catalogue
from store import queries
from store import tiers as member_tiers
from store.db import Store
from store.lookups import StoreLookups
from store.segments import segments_of


class PreviewError(ValueError):
    """A journey, step, customer or order that is not there; the message names it."""


class PreviewRefused(PreviewError):
    """A preview that cannot be made as asked; the message names what to pass instead."""


class AliyunPreview(BaseModel):
    """An SMS as Aliyun sends it: the registered text with the parameters in, under the signature."""

    template_code: str | None = None
    sign_name: str | None = None
    params: dict[str, str] | None = Field(default=None, description="The parameters as they would be sent.")
    body: str | None = Field(default=None, description="What the customer's phone shows, 【signature】 first.")
    characters: int | None = None
    parts: int | None = Field(default=None, description="Aliyun's billed parts: 70 characters in one, else 67 a part.")
    links: list[str] = Field(default_factory=list)
    error: str | None = Field(default=None, description="Why it does not render (or what Aliyun would refuse).")


class ChannelPreview(BaseModel):
    channel: str
    locale: str | None = None
    subject: str | None = None
    body: str | None = None
    characters: int | None = Field(default=None, description="SMS: the body's length, the signature included.")
    encoding: str | None = None
    segments: int | None = None
    links: list[str] = Field(
        default_factory=list, description="The long URLs of its short links (a preview's codes are placeholders)."
    )
    error: str | None = Field(default=None, description="Why this channel's text does not render.")
    aliyun: AliyunPreview | None = Field(
        default=None, description="SMS of a template with aliyun_sms: the text as Aliyun sends it (mainland numbers)."
    )


class Preview(BaseModel):
    journey: str
    step: str
    template: str
    category: str
    customer_id: str
    order_id: str | None
    policy: str = Field(description="What the contact policy would do now: the channel and address, or the skip.")
    notes: list[str] = Field(default_factory=list)
    channels: list[ChannelPreview]


def _find_step(definitions: Definitions, journey: str, step: str) -> tuple[Any, Any]:
    try:
        snapshot = definitions[journey]
    except KeyError:
        names = ", ".join(s.definition.name for s in definitions)
        raise PreviewError(f"no journey {journey!r} (there are: {names})") from None
    sends = [s.send for _, s in walk_steps(snapshot.definition.steps) if isinstance(s, SendStep)]
    for spec in sends:
        if spec.step_id == step:
            return snapshot, spec
    known = ", ".join(spec.step_id for spec in sends) or "none"
    raise PreviewError(f"journey {journey!r} has no send step {step!r} (its send steps: {known})")


def preview(
    definitions: Definitions,
    store: Store,
    *,
    journey: str,
    step: str,
    customer_id: str,
    order_id: str | None = None,
    shop_name: str,
    default_region: str,
    opt_out: dict[str, str] | None = None,
    now: datetime | None = None,
    link_base: str | None = None,
) -> Preview:
    snapshot, spec = _find_step(definitions, journey, step)
    definition = snapshot.definition
    now = now or datetime.now(UTC)
    with store.transaction() as session:
        customer = queries.get_customer(session, customer_id)
        if customer is None:
            raise PreviewError(f"no customer {customer_id!r} in the store (send a customer.created event first)")
        theirs = queries.orders_of_customer(session, customer_id)
        notes: list[str] = []
        if order_id is None and theirs:
            order_id = theirs[0]
            notes.append(f"order: the customer's latest, {order_id!r} (pass an order to preview another)")
        elif order_id is None:
            notes.append(
                "order: none (the customer has no order in the log): an empty order"
                if definition.entry.key == "customer"
                else "order: none in the log: a made-up order id"
            )
        order_events = queries.events_of_order(session, order_id) if order_id else []
        owners = {e.customer_id for e in order_events}
        if owners and customer_id not in owners:
            mine = ", ".join(repr(o) for o in theirs) or "none in the log"
            raise PreviewRefused(
                f"order {order_id!r} belongs to customer {sorted(owners)[0]!r}, not {customer_id!r}: "
                f"pass one of {customer_id!r}'s orders ({mine}), or no order"
            )
        purchases = queries.purchases_of(session, customer_id, now)
        points, tier = ledger.balance(session, customer_id), member_tiers.current(session, customer_id)
        facts = loyalty_facts(points, tier, definitions.loyalty)
        if reads_segments(snapshot.model_dump_json()):  # as the router gives a new instance
            every = list(definitions.segments.values())
            facts["segments"] = segments_of(session, customer_id, every, now, definitions.rfm)
    category = spec.category or definition.category
    entry_types = set(definition.entry.events)
    entry_rows = [row for row in order_events if row.type in entry_types] or order_events
    if entry_rows:
        entry: dict[str, Any] = entry_rows[-1].model_dump(mode="json")
    else:  # made up: a dict, not an Event, so an order event type may go without an order here
        made_up_order = order_id or ("preview-order" if definition.entry.key == "order" else None)
        entry = {
            "event_id": "preview",
            "type": definition.entry.events[0],
            "occurred_at": now.isoformat(),
            "customer_id": customer_id,
            "order_id": made_up_order,
            "data": {},
        }
        order_events = [Event.model_validate(entry)] if made_up_order else []
    # The catalogue's facts as of the entry event, read as the router reads them for the workflow's input.
    entered_at = datetime.fromisoformat(str(entry["occurred_at"]).replace("Z", "+00:00"))
    with store.transaction() as session:
        products = catalogue.order_facts(session, customer_id, order_events, entered_at) if order_events else {}
    order = order_context(entry["order_id"], order_events, products)  # as the workflow and the router see it
    tz = zone(customer.timezone)
    # As the workflow sees it, with the loyalty facts (and segments) as a new instance would have them now.
    seen = customer_context(customer, purchases, definitions.rfm, now) | facts
    context = build_context(tz=tz, now=now, event=entry, order=order, customer=seen)
    variables: dict[str, Any] = {}
    problems: list[str] = []
    for name, source in definition.vars.items():
        try:
            variables[name] = evaluate(source, {**context, "vars": variables})
        except Exception as err:  # shown, not raised: the preview is for finding such problems
            problems.append(f"vars.{name}: {err}")
    # The step's deadline, as the workflow has it: a deferral past it skips, and a full cap lets
    # the message wait for a slot until then.
    deadline = None
    if spec.deadline:
        try:
            deadline = evaluate_time(spec.deadline, {**context, "vars": variables}, tz)
        except Exception as err:
            problems.append(f"deadline: {err}")
    with store.transaction() as session:
        decision = decide(  # the very rule the send activity applies, as if the step ran now
            customer,
            channel=spec.channel,
            fallback=spec.fallback,
            category=category,
            at=now,
            deadline=deadline,
            lookups=StoreLookups(session, customer_id),
            resource=snapshot.resources.get(spec.resource) if spec.resource else None,
            default_region=default_region,
            policy=definitions.policy.for_send(spec.policy_over(definition.policy)),
        )
    notes = [*notes, *decision.notes, *problems]
    if order_id and not entry_rows:
        notes.append(f"order {order_id!r} has no events in the log: only its id is known")

    policy = _policy_line(decision, tz)
    template = snapshot.templates[spec.template]
    data = message_context({**context, "vars": variables})  # what a send of the step would render with
    channels = []
    options: dict[str, Any] = {
        "locale": customer.locale,
        "context": data,
        "shop_name": shop_name,
        "marketing": category == "marketing",
        "opt_out": opt_out,
        "link_base": link_base,
        "preview": True,
    }
    for channel in (name for name in CHANNELS if name != "outbox"):
        aliyun = channel == "sms" and template.aliyun_sms is not None
        if not (has_variant(template, channel) or aliyun) or (channel == "webhook" and not template.webhook):
            continue
        try:
            rendered = render_message(template, name=spec.template, channel=channel, **options)
        except TemplateRenderError as err:
            shown = ChannelPreview(channel=channel, error=str(err))
        else:
            shown = ChannelPreview(
                channel=channel,
                **rendered.model_dump(exclude={"links", "provider_template", "template_data"}),
                characters=len(rendered.body) if channel == "sms" else None,
                links=[url for _, url in rendered.links],
            )
        if aliyun:
            shown.aliyun = _aliyun_preview(template, spec.template, definitions, options)
        channels.append(shown)
    return Preview(
        journey=journey,
        step=step,
        template=spec.template,
        category=category,
        customer_id=customer_id,
        order_id=entry["order_id"],
        policy=policy,
        notes=notes,
        channels=channels,
    )


def _aliyun_preview(template, name: str, definitions: Definitions, options: dict[str, Any]) -> AliyunPreview:
    """The SMS as Aliyun would send it, with sms.yaml's registered text; or why it would not go."""
    try:
        rendered = render_message(
            template, name=name, channel="sms", provider="aliyun", registry=definitions.sms, **options
        )
    except TemplateRenderError as err:
        return AliyunPreview(
            template_code=template.aliyun_sms.template_code, sign_name=template.aliyun_sms.sign_name, error=str(err)
        )
    data = rendered.template_data or {}
    return AliyunPreview(
        template_code=rendered.provider_template,
        sign_name=data.get("sign_name"),
        params=data.get("params"),
        body=rendered.body,
        characters=len(rendered.body),
        parts=rendered.segments,
        links=[url for _, url in rendered.links],
    )


def _policy_line(decision: Decision, tz) -> str:
    if decision.action == "skip":
        return f"skipped ({decision.reason}" + (f": {decision.detail})" if decision.detail else ")")
    target = f"{decision.channel} to {decision.address}"
    if decision.action == "defer":
        resume = decision.resume_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        if decision.reason == Reason.FREQUENCY_CAP:  # which cap, and whether a waiting message holds the slot
            return f"{target}, deferred until {resume} (customer's time; {decision.detail})"
        by = "the send windows" if decision.reason == Reason.SEND_WINDOW else "quiet hours"
        return f"{target}, held by {by} until {resume} (customer's time)"
    return target


def describe(found: Preview) -> list[str]:
    """The preview as lines a person reads."""
    lines = [
        f"{found.journey}/{found.step}  template {found.template}  ({found.category})",
        f"customer {found.customer_id}" + (f", order {found.order_id}" if found.order_id else ""),
        f"policy now: {found.policy}",
    ]
    lines += [f"note: {note}" for note in found.notes]
    for channel in found.channels:
        lines.append("")
        if channel.error:
            lines.append(f"[{channel.channel}] cannot render: {channel.error}")
        else:
            detail = f"{channel.locale}"
            if channel.segments:
                detail += f", {channel.characters} characters, {channel.encoding}, {channel.segments} segment" + (
                    "s" if channel.segments != 1 else ""
                )
            lines.append(f"[{channel.channel}] ({detail})")
            if channel.subject is not None:
                lines.append(f"Subject: {channel.subject}")
            lines.append(channel.body or "")
            lines += _links_line(channel.links)
        if channel.aliyun is not None:
            lines += _aliyun_lines(channel.aliyun)
    return lines


def _aliyun_lines(shown: AliyunPreview) -> list[str]:
    """The Aliyun text beside the SMS's own, as a person reads it."""
    head = f"[sms via Aliyun] (template {shown.template_code}, signature 【{shown.sign_name}】"
    if shown.error:
        return ["", f"{head}) cannot send: {shown.error}"]
    parts = f"{shown.parts} billed part" + ("s" if shown.parts != 1 else "")
    return ["", f"{head}, {shown.characters} characters, {parts}: 70 in one, else 67 a part)", shown.body or "",
            *_links_line(shown.links)]  # fmt: skip


def _links_line(links: list[str]) -> list[str]:
    if not links:
        return []
    return ["links (placeholder codes here; each send makes its own): " + ", ".join(links)]
