"""A batched broadcast's side effects (definitions.broadcasts.broadcast_path): its members' zones,
a page of members due, and `send_broadcast_page`, which decides a page of members under the
contact policy, writes their rows and hands their messages to the channels in bulk.

A page is what one instance per member did, for 500 members at once:
- the same rule (rules.policy.decide: staleness, blacklist, channel and contact, suppressions,
  quiet hours and send windows in each member's zone, resource limits, caps and priorities), fed
  by a few set-based queries for the whole page (`PageLookups`) instead of five per member;
- the same rows, keyed as an instance's would be (store/broadcast_pages.py): a ledger row per
  member decided, written in one statement before any provider is called; an instance row per
  member reached (`holdout` for the control group); a deferral row when quiet hours put a member
  off, whom the workflow brings back at that moment with the rest of their zone;
- exactly once: the page's customers are locked and what is still due is read under the lock, so
  a retry (a lost worker, a provider fault) decides nobody twice; it delivers the page's messages
  still `sending`, each message in doubt settled the channel's way first, as a journey's are
  (activities.journey `_deliver`); a provider's refusal to retry raises, so the page is retried
  until every message is answered.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.broadcast import entry_event
from activities.journey import JourneyActivities, outgoing_message
from activities.payloads import CloseRequest, MemberPage, PageRequest, PageResult, PlanRequest, SendPage
from core.channel import ChannelError, PermanentChannelError, bulk_limit, send_bulk
from core.contact_policy import CapWait, SendPolicy
from core.contacts import UnusableContact
from core.orders import order_context
from core.records import Customer
from core.rfm import customer_context
from core.vocabulary import Reason
from definitions.expressions import build_context, evaluate_time, message_context, zone
from definitions.render import TemplateRenderError, loyalty_facts, reads_loyalty, render_message
from definitions.schema import JourneySnapshot, SendSpec, SendStep, WaitUntilStep, split_draw, walk_steps
from instances.contract import BatchCounts, SendGroup, workflow_id
from rules.caps import ResourceLimits
from rules.contacts import address_for
from rules.policy import decide
from store import broadcast_pages as pages
from store import points as ledger
from store import queries, rates, segments
from store import tiers as member_tiers
from store.db import Store
from store.short_links import record_links
from store.tables import MessageRow

T = TypeVar("T")


def schedule_expression(snapshot: JourneySnapshot) -> str | None:
    """The time a broadcast's journey waits for before its send (definitions.broadcasts.journey_of)."""
    waits = [step.wait_until.at for _, step in walk_steps(snapshot.definition.steps) if isinstance(step, WaitUntilStep)]
    return waits[0] if waits else None


#: How often a page's activity heartbeats at least while it waits (a bulk call, the rate limit):
#: well within its heartbeat timeout (workflows.broadcast), so a live attempt is never taken for a
#: lost one and tried again beside itself.
HEARTBEAT_SECONDS = 5.0


def _heartbeating(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` on a thread of its own while this activity's thread heartbeats every
    HEARTBEAT_SECONDS: a bulk call (a slow provider, a thousand recipients) may outlast the
    heartbeat timeout, and the activity's heartbeat can only be sent from its own thread."""
    with ThreadPoolExecutor(1, thread_name_prefix="bulk-send") as pool:
        future = pool.submit(call, *args)
        while True:
            try:
                return future.result(timeout=HEARTBEAT_SECONDS)
            except FutureTimeout:
                activity.heartbeat("handing messages to the provider")


def send_spec(snapshot: JourneySnapshot) -> SendSpec:
    """The one send of a broadcast's journey (definitions.broadcasts.journey_of)."""
    sends = [step.send for _, step in walk_steps(snapshot.definition.steps) if isinstance(step, SendStep)]
    if len(sends) != 1:
        raise ApplicationError(
            f"journey {snapshot.definition.name} has {len(sends)} sends: a batched broadcast has one",
            non_retryable=True,
        )
    return sends[0]


@dataclass
class PageLookups:
    """The policy's questions (rules.policy.Lookups) for a page's customers, answered from what was
    read for the whole page at once; a question not read ahead (another cap) goes to the store."""

    session: Any
    customer_ids: list[str]
    suppressions: dict[tuple[str, str], str] = field(default_factory=dict)
    caps: dict[tuple[str, str | None], tuple[datetime, dict[str, list[tuple[datetime, str | None]]]]] = field(
        default_factory=dict
    )
    waits: dict[str, dict[str, list[CapWait]]] = field(default_factory=dict)
    issued: dict[str, dict[str, list[datetime]]] = field(default_factory=dict)
    redeemed: dict[tuple[str, str], dict[str, list[datetime]]] = field(default_factory=dict)

    def read_ahead(
        self,
        customers: dict[str, Customer | None],
        channels: Sequence[str],
        default_region: str,
        policy: SendPolicy,
        category: str,
        at: datetime,
        resource: ResourceLimits | None,
    ) -> None:
        wanted: set[tuple[str, str]] = set()
        for customer in customers.values():
            for channel in channels:
                try:
                    address = address_for(customer, channel, default_region) if customer else None
                except UnusableContact:
                    continue
                if address:
                    wanted.add((channel, address))
        self.suppressions = pages.suppression_scopes(self.session, wanted)
        ids = self.customer_ids
        cap = policy.cap(category)
        if cap is not None and not policy.exempt:
            since = at - max(window.length for window in cap.windows)
            sent = pages.capped_at(self.session, ids, cap.name, cap.category, since)
            self.caps[(cap.name, cap.category)] = (since, sent)
            self.waits[cap.name] = pages.cap_waits(self.session, ids, cap.name)
        if resource is not None:
            self.issued[resource.name] = pages.resource_issued(self.session, ids, resource.name)
            if resource.redeemed_by:
                key = (resource.name, resource.redeemed_by)
                self.redeemed[key] = pages.resource_redeemed(self.session, ids, resource.redeemed_by, resource.name)

    def of(self, customer_id: str) -> _MemberLookups:
        return _MemberLookups(self, customer_id)


@dataclass(frozen=True)
class _MemberLookups:
    page: PageLookups
    customer_id: str

    def suppression_scope(self, channel: str, address: str) -> str | None:
        return self.page.suppressions.get((channel, address))

    def capped_at(self, cap: str, category: str | None, since: datetime) -> list[tuple[datetime, str | None]]:
        ahead = self.page.caps.get((cap, category))
        if ahead is None or since < ahead[0]:
            return queries.capped_at(self.page.session, self.customer_id, cap, category, since)
        return [(at, channel) for at, channel in ahead[1].get(self.customer_id, ()) if at > since]

    def cap_waits(self, cap: str) -> list[CapWait]:
        if cap not in self.page.waits:
            return queries.cap_waits(self.page.session, self.customer_id, cap)
        return self.page.waits[cap].get(self.customer_id, [])

    def resource_issued(self, resource: str) -> list[datetime]:
        if resource not in self.page.issued:
            return queries.resource_issued(self.page.session, self.customer_id, resource)
        return self.page.issued[resource].get(self.customer_id, [])

    def resource_redeemed(self, resource: str, event_type: str) -> list[datetime]:
        if (resource, event_type) not in self.page.redeemed:
            return queries.resource_redeemed(self.page.session, self.customer_id, event_type, resource)
        return self.page.redeemed[(resource, event_type)].get(self.customer_id, [])


class BroadcastPageActivities:
    """The batched path's activities, with the send activity's dependencies (JourneyActivities:
    the channels, the shop's policy, rendering, and the delivery of a message in doubt)."""

    def __init__(self, store: Store, sends: JourneyActivities):
        self.store = store
        self.sends = sends

    @activity.defn(name="broadcast_zones")
    def broadcast_zones(self, request: PageRequest) -> dict[str, int]:
        """The segment's members at the start by time zone: a send moment per zone."""
        with self.store.transaction() as session:
            return segments.member_zones(session, request.segment, request.at, request.rfm_table)

    @activity.defn(name="plan_broadcast")
    def plan_broadcast(self, request: PlanRequest) -> list[SendGroup]:
        """The broadcast's send moments, earliest first, each with the zones whose members it is
        due in: the schedule's local time in each zone (one moment for all with `at`). A moment
        already passed is due at once."""
        with self.store.transaction() as session:
            zones = segments.member_zones(session, request.segment, request.at, request.rfm_table)
        moment = schedule_expression(request.snapshot)
        groups: dict[datetime, list[str]] = defaultdict(list)
        for member_zone in sorted(zones):
            tz = zone(member_zone)
            when = request.at
            if moment is not None:
                due = evaluate_time(moment, build_context(tz=tz, now=request.at), tz).astimezone(UTC)
                when = max(due, request.at)
            groups[when].append(member_zone)
        return [SendGroup(at=when, zones=found) for when, found in sorted(groups.items())]

    @activity.defn(name="close_broadcast_members")
    def close_broadcast_members(self, request: CloseRequest) -> int:
        """A cancelled broadcast's members still deferred end without a message (`cancelled`):
        how many. Safe to retry."""
        with self.store.transaction() as session:
            return pages.close_waiting(session, request.journey, request.run_id, request.at)

    @activity.defn(name="broadcast_member_page")
    def broadcast_member_page(self, request: MemberPage) -> list[str]:
        """The ids of the next page of members due at `request.due` (read only)."""
        prefix = workflow_id(request.journey, "")
        with self.store.transaction() as session:
            return segments.member_ids(
                session,
                request.segment,
                request.members_at,
                request.rfm_table,
                zones=request.zones,
                after=request.after,
                limit=request.limit,
                unless=pages.decided(prefix, request.run_id, request.step, request.due),
            )

    @activity.defn(name="send_broadcast_page")
    def send_broadcast_page(self, request: SendPage) -> PageResult:
        """Decide the page's members still due, write their rows, deliver their messages; the
        page's outcome as the store then has it. Safe to retry (see the module's docstring)."""
        spec = send_spec(request.snapshot)
        self._decide(request, spec)
        activity.heartbeat("decided")
        unanswered = self._deliver(request, spec)
        if unanswered:
            raise ApplicationError(
                f"broadcast {request.broadcast}: {unanswered} of the page's messages are not answered yet; "
                "the page is tried again (nobody is sent twice)"
            )
        return self._result(request, spec)

    # ------------------------------------------------------------------------------ deciding

    def _decide(self, request: SendPage, spec: SendSpec) -> None:
        snapshot = request.snapshot
        definition = snapshot.definition
        name = definition.name
        prefix = workflow_id(name, "")
        step = spec.step_id
        category = spec.category or definition.category
        policy = self.sends.policy.for_send(spec.policy_over(definition.policy))
        resource = snapshot.resources[spec.resource] if spec.resource else None
        template = snapshot.templates[spec.template]
        split = definition.first_split
        at, now = request.at, datetime.now(UTC)
        planned_at = max(request.due, request.entered_at)
        loyalty = reads_loyalty(template.model_dump_json())
        messages: list[dict] = []
        instances: list[dict] = []
        deferrals: list[dict] = []
        links: list[tuple[str, list[tuple[str, str]]]] = []
        with self.store.transaction() as session:
            customers = pages.lock_customers(session, request.customer_ids)
            due = pages.still_due(session, request.customer_ids, prefix, request.run_id, step, request.due)
            reached = queries.reached_by_runs(session, due, request.not_again)
            members = [customer_id for customer_id in due if customer_id not in reached]
            if not members:
                return
            variants = {customer_id: definition.variant_of(customer_id) for customer_id in members}
            held_out = {
                customer_id
                for customer_id in members
                if split is not None and split.choose(split_draw(name, customer_id)) is None
            }
            reaching = [customer_id for customer_id in members if customer_id not in held_out]
            purchases = queries.purchases_of_customers(session, reaching, at) if reaching else {}
            lookups = PageLookups(session, reaching)
            lookups.read_ahead(
                {customer_id: customers[customer_id] for customer_id in reaching},
                [channel for channel in (spec.channel, spec.fallback) if channel],
                self.sends.default_region,
                policy,
                category,
                at,
                resource,
            )

            def instance(customer_id: str, ended: bool, reason: str | None) -> dict:
                return {
                    "workflow_id": prefix + customer_id,
                    "run_id": request.run_id,
                    "journey": name,
                    "journey_version": snapshot.version,
                    "customer_id": customer_id,
                    "order_id": None,
                    "variant": variants[customer_id],
                    "entered_at": request.entered_at,
                    "ended_at": at if ended else None,
                    "exit_reason": reason if ended else None,
                }

            def ledger_row(customer_id: str, status: str, reason: str | None, **fields: Any) -> dict:
                row = {
                    "id": str(uuid.uuid4()),
                    "workflow_id": prefix + customer_id,
                    "run_id": request.run_id,
                    "step": step,
                    "journey": name,
                    "journey_version": snapshot.version,
                    "customer_id": customer_id,
                    "order_id": None,
                    "channel": None,
                    "address": None,
                    "template": spec.template,
                    "resource": resource.name if resource else None,
                    "cap": None,
                    "variant": variants[customer_id],
                    "category": category,
                    "status": status,
                    "reason": reason,
                    "at": at,
                    "locale": None,
                    "subject": None,
                    "body": None,
                    "provider_id": None,
                    "error": None,
                    "segments": None,
                    "provider_template": None,
                    "template_data": None,
                    "delivered_at": None,
                    "attempted_at": None,
                    "updated_at": now,
                }
                row.update(fields)
                return row

            for customer_id in members:
                if customer_id in held_out:
                    instances.append(instance(customer_id, True, "holdout"))
                    continue
                customer = customers[customer_id]
                decision = decide(
                    customer,
                    channel=spec.channel,
                    fallback=spec.fallback,
                    category=category,
                    at=at,
                    deadline=None,
                    lookups=lookups.of(customer_id),
                    resource=resource,
                    default_region=self.sends.default_region,
                    planned_at=planned_at,
                    max_lateness=spec.lateness(category),
                    policy=policy,
                )
                notes = "; ".join(decision.notes) or None
                chosen = {"channel": decision.channel, "address": decision.address}
                if decision.action == "defer":
                    instances.append(instance(customer_id, False, None))
                    deferrals.append(
                        {
                            "workflow_id": prefix + customer_id,
                            "run_id": request.run_id,
                            "step": step,
                            "journey": name,
                            "customer_id": customer_id,
                            "category": category,
                            "variant": variants[customer_id],
                            "channel": decision.channel,
                            "reason": decision.reason or Reason.QUIET_HOURS,
                            "detail": decision.detail,
                            "at": at,
                            "resume_at": decision.resume_at,
                            "cap": None,
                            "priority": decision.priority,
                            "waiting_since": None,
                            "deadline": None,
                            "held": False,
                            "open": False,
                        }
                    )
                    continue
                instances.append(instance(customer_id, True, "completed"))
                if decision.action == "skip":
                    error = "; ".join(filter(None, (decision.detail, notes))) or None
                    messages.append(ledger_row(customer_id, "skipped", decision.reason, error=error, **chosen))
                    continue
                assert customer is not None  # decide skips a customer the store does not have
                try:
                    rendered = render_message(
                        template,
                        name=spec.template,
                        channel=decision.channel,
                        locale=customer.locale,
                        context=self._context(request, customer, purchases.get(customer_id, []), session, loyalty),
                        shop_name=self.sends.shop_name,
                        marketing=category == "marketing",
                        opt_out=self.sends.opt_out,
                        provider=self.sends.provider_of(decision.channel, decision.address),
                        registry=self.sends.sms_registry,
                        link_base=self.sends.link_base,
                    )
                except TemplateRenderError as err:
                    activity.logger.warning("template error in %s/%s: %s", name, step, err)
                    messages.append(ledger_row(customer_id, "failed", Reason.TEMPLATE_ERROR, error=str(err), **chosen))
                    continue
                row = ledger_row(
                    customer_id,
                    "sending",
                    None,
                    cap=decision.cap,
                    locale=rendered.locale,
                    subject=rendered.subject,
                    body=rendered.body,
                    segments=rendered.segments,
                    provider_template=rendered.provider_template,
                    template_data=rendered.template_data,
                    error=notes,
                    **chosen,
                )
                messages.append(row)
                if rendered.links:
                    links.append((row["id"], rendered.links))
            # Members a deferral held before have their instance row: it gets its end (or stays open).
            again = pages.reopened(session, prefix, request.run_id, members) if not request.first_pass else set()
            pages.write_page(
                session,
                messages=messages,
                instances=[row for row in instances if row["customer_id"] not in again],
                ended=[row for row in instances if row["customer_id"] in again and row["ended_at"] is not None],
                deferrals=deferrals,
            )
            for message_id, found in links:  # written with the ledger row: a link never points at no message
                record_links(session, message_id, found, now, self.sends.link_days)

    def _context(
        self, request: SendPage, customer: Customer, purchases: list, session: Any, loyalty: bool
    ) -> dict[str, Any]:
        """The message context a member's instance would render with: its entry event, the
        customer's RFM and stage as of the send (what the workflow passes), and the record as the
        store has it (and the loyalty facts, for a template that names them: what the send
        activity adds)."""
        tz = zone(customer.timezone)
        name = request.snapshot.definition.name
        entry = entry_event(name, customer.customer_id, request.entered_at).model_dump(mode="json")
        seen = customer_context(customer, purchases, request.rfm_table, request.at, lifecycle=True)
        context = build_context(
            tz=tz, now=request.at, event=entry, entry=entry, order=order_context(None, []), customer=seen, vars={}
        )
        passed = {key: value for key, value in context["customer"].items() if key in ("rfm", "lifecycle", "segments")}
        now = {**passed, **customer.model_dump(mode="json")}
        if loyalty:
            points = ledger.balance(session, customer.customer_id)
            tier = member_tiers.current(session, customer.customer_id)
            now |= loyalty_facts(points, tier, self.sends.loyalty)
        return message_context(context, customer=now)

    # ------------------------------------------------------------------------------ delivering

    def _deliver(self, request: SendPage, spec: SendSpec) -> int:
        """Hand the page's messages still `sending` to their channels, in bulk; those in doubt one
        by one, settled first. How many are still unanswered (the page is tried again).

        Each bulk call first claims its messages (`pages.claim`: marks them begun, in one
        statement, only those nobody has begun), so a message is handed over by one attempt of
        the page only, and a message is in doubt only once a call for it has begun: a worker lost
        mid-page leaves the messages of its later chunks fresh, not in doubt."""
        prefix = workflow_id(request.snapshot.definition.name, "")
        with self.store.transaction() as session:
            rows = pages.sending(session, prefix, request.run_id, spec.step_id, request.customer_ids)
            session.expunge_all()
        fresh = [row for row in rows if row.attempted_at is None]
        doubtful = [row.id for row in rows if row.attempted_at is not None]
        unanswered = 0
        for message_id in doubtful:  # a lost answer: settled the channel's way, as a journey's is
            try:
                self.sends.deliver_once(message_id)
            except ApplicationError:
                unanswered += 1
            activity.heartbeat(message_id)
        by_channel: dict[str, list[MessageRow]] = defaultdict(list)
        for row in fresh:
            by_channel[row.channel].append(row)
        for channel_name, group in by_channel.items():
            unanswered += self._send_group(channel_name, group)
        return unanswered

    def _send_group(self, channel_name: str, rows: list[MessageRow]) -> int:
        """Hand one channel's messages of the page over in bulk, within the channel's rate limit
        (a second's worth at a time, drawn from the bucket every worker shares: store.rates); how
        many the provider has not taken yet."""
        rate = self.sends.rate_limits.get(channel_name)
        largest = bulk_limit(self.sends.channels[channel_name]) or len(rows)
        step = max(1, min(int(rate), largest) if rate else largest)
        unanswered = 0
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            if rate:
                self._tokens(channel_name, len(chunk), rate)
            unanswered += self._send_chunk(channel_name, chunk)
        return unanswered

    def _tokens(self, channel_name: str, wanted: int, rate: float) -> None:
        """Wait for `wanted` of the channel's tokens, heartbeating while others hold the budget."""
        while wanted > 0:
            wanted -= rates.acquire(self.store, channel_name, wanted, rate, max_wait=HEARTBEAT_SECONDS)
            activity.heartbeat(f"{channel_name}: waiting for the rate limit")

    def _send_chunk(self, channel_name: str, rows: list[MessageRow]) -> int:
        with self.store.transaction() as session:
            claimed = pages.claim(session, [row.id for row in rows], datetime.now(UTC))
        rows = [row for row in rows if row.id in claimed]  # another attempt of the page began the rest
        if not rows:
            return 0
        channel = self.sends.channels[channel_name]
        results = _heartbeating(send_bulk, channel, [outgoing_message(row) for row in rows])
        sent: dict[str, str] = {}
        refused: list[tuple[MessageRow, ChannelError]] = []
        retry: list[tuple[MessageRow, ChannelError]] = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, PermanentChannelError):
                refused.append((row, result))
            elif isinstance(result, ChannelError):
                retry.append((row, result))
            else:
                sent[row.id] = result.provider_id
        now = datetime.now(UTC)
        with self.store.transaction() as session:
            pages.record_sent(session, rows, sent, now)
            for row, err in refused:
                found = session.get(MessageRow, row.id)
                if found is not None and found.status == "sending":
                    found.status, found.reason, found.updated_at = "failed", "provider_rejected", now
                    found.error, found.attempted_at = f"{err.code}: {err}"[:2000], None
                if err.unsubscribed:
                    queries.add_suppression(session, row.channel, row.address, "all", f"provider {err.code}", row.at)
            for row, err in retry:
                found = session.get(MessageRow, row.id)
                if found is not None and found.status == "sending":
                    found.error, found.updated_at = f"{err.code}: {err}"[:2000], now
                    if not err.in_doubt:  # refused: nothing is in doubt; a lost answer keeps it
                        found.attempted_at = None
        if retry:
            activity.logger.warning(
                "%s: %d of %d messages not taken yet (%s)", channel_name, len(retry), len(rows), retry[0][1]
            )
        return len(retry)

    # ------------------------------------------------------------------------------ the outcome

    def _result(self, request: SendPage, spec: SendSpec) -> PageResult:
        prefix = workflow_id(request.snapshot.definition.name, "")
        with self.store.transaction() as session:
            state = pages.page_state(session, prefix, request.run_id, spec.step_id, request.customer_ids)
            reached = (
                queries.reached_by_runs(session, request.customer_ids, request.not_again)
                if request.first_pass and request.not_again
                else set()
            )
        counts = BatchCounts(not_again=len(reached))
        skipped: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        for status, reason in state.message.values():
            if status == "skipped":
                skipped[reason or "-"] += 1
            elif status == "failed":
                failed[reason or "-"] += 1
            elif status == "unknown":
                counts.unknown += 1
            else:
                counts.sent += 1
        counts.skipped, counts.failed = dict(sorted(skipped.items())), dict(sorted(failed.items()))
        counts.held_out = sum(1 for reason in state.ended.values() if reason == "holdout")
        groups: dict[datetime, list[str]] = defaultdict(list)
        sizes: Counter[datetime] = Counter()
        for resume_at, member_zone in state.waiting.values():
            if member_zone not in groups[resume_at]:
                groups[resume_at].append(member_zone)
            sizes[resume_at] += 1
        counts.deferred = len(state.waiting)
        deferred = [
            SendGroup(at=moment, zones=sorted(zones), members=sizes[moment], resumed=True)
            for moment, zones in sorted(groups.items())
        ]
        return PageResult(counts=counts, deferred=deferred)
