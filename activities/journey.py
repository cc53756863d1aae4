"""The side effects a journey asks for: load the customer, decide one message under the contact
policy, deliver it, record a failure.

`decide_message` (registered as `send_message`) is safe to retry: the ledger row for
`(workflow_id, run_id, step)` is written, in the same transaction as the policy checks, before the
channel is called. A retry finds the row: a decided row (sent, skipped, failed) is returned as it
is; a row still `sending` is delivered again only once any earlier unanswered provider call is
settled (`_begin_attempt`), with the same message id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.payloads import ExitRecord, FailureRecord, SendOutcome, SendRequest
from core.channel import Channel, OutgoingMessage, PermanentChannelError, RetryableChannelError
from core.contact_policy import ContactPolicy
from core.loyalty import NO_LOYALTY, Loyalty
from core.records import Customer
from core.sms_registry import NO_REGISTRY, SmsRegistry
from core.vocabulary import Reason
from definitions.expressions import message_context
from definitions.render import TemplateRenderError, loyalty_facts, reads_loyalty, render_message
from rules.policy import Decision, decide
from store import points as ledger
from store import queries
from store import tiers as member_tiers
from store.db import Store
from store.lookups import StoreLookups
from store.short_links import record_links
from store.tables import MessageRow


class JourneyActivities:
    """Activities with their dependencies: the store, the channel adapters, the shop's name and
    contact policy (policy.yaml, read when the worker starts; the shipped one without it), the
    loyalty programme (loyalty.yaml: the tiers' titles a template's `customer.tier` shows), the
    templates registered with Aliyun SMS (sms.yaml: what an SMS through Aliyun says), and where
    short links point and how long they live (`link_base`, `link_days`: the retention period)."""

    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel],
        shop_name: str,
        *,
        default_region: str,
        opt_out: dict[str, str] | None = None,
        deliver_inline: frozenset[str] = frozenset(),
        policy: ContactPolicy | None = None,
        loyalty: Loyalty = NO_LOYALTY,
        sms_registry: SmsRegistry = NO_REGISTRY,
        link_base: str | None = None,
        link_days: int = 0,
    ):
        self.store = store
        self.sms_registry = sms_registry
        self.link_base = link_base  # None: link() keeps the long URL, untracked
        self.link_days = link_days  # a short link's life: the retention period (0: ten years)
        self.loyalty = loyalty
        # The shop's policy as the worker read it; each send brings its journey's and step's overrides.
        self.policy = policy or ContactPolicy()
        self.channels = channels
        self.shop_name = shop_name
        self.default_region = default_region  # where national phone numbers are read
        self.opt_out = opt_out or {}  # marketing SMS opt-out text per locale, over the defaults
        # Channels with no rate limit: delivered by decide_message itself, saving the workflow an
        # activity and a workflow task per message (a rate-limited channel delivers from its queue).
        self.deliver_inline = deliver_inline

    @activity.defn(name="load_customer")
    def load_customer(self, customer_id: str) -> Customer | None:
        with self.store.transaction() as session:
            return queries.get_customer(session, customer_id)

    # Registered as "send_message", its name from before delivery became deliver_message: a
    # history records each activity call by this registered name (the activity type), and a
    # replay or a retry of a saved run asks the worker for it by that name, so it never changes.
    @activity.defn(name="send_message")
    def decide_message(self, request: SendRequest) -> SendOutcome:
        """Decide a send under the contact policy and record it in the ledger. A message for a
        rate-limited channel is left `ready` for deliver_message on the channel's queue; one for a
        channel without a limit is delivered here at once."""
        decided, row, retry = self._decide(request)
        if decided is not None:
            return decided
        if not request.deliver and row.channel not in self.deliver_inline:
            return SendOutcome(status="ready", channel=row.channel, message_id=row.id)
        return self._deliver(row.id, fresh=None if retry else row)

    @activity.defn(name="deliver_message")
    def deliver_message(self, message_id: str) -> SendOutcome:
        """Hand a message decided by decide_message to its channel. Runs on the channel's own task
        queue, whose rate limit keeps every worker together under the provider's limit."""
        return self._deliver(message_id)

    @activity.defn(name="record_exit")
    def record_exit(self, record: ExitRecord) -> None:
        """Put down how a run ended on its instance row (run as a local activity: no task of its
        own). Safe to retry: the same values again."""
        with self.store.transaction() as session:
            queries.record_exit(session, record.model_dump())

    @activity.defn(name="record_failure")
    def record_failure(self, failure: FailureRecord) -> str:
        """Write a `failed` ledger row for a run that stopped on an error in its data; a retry
        finds the row and writes nothing. Returns the row's id."""
        with self.store.transaction() as session:
            row = queries.find_ledger_row(session, failure.workflow_id, failure.run_id, failure.step)
            if row is not None:
                return row.id
            row = _new_row(
                failure,
                step=failure.step,
                template=failure.template or "-",
                status="failed",
                reason=failure.reason,
                channel=None,
                error=failure.error[:2000],
            )
            session.add(row)
            return row.id

    # -----------------------------------------------------------------------------------------

    def _decide(self, req: SendRequest) -> tuple[SendOutcome | None, MessageRow | None, bool]:
        """Apply the policy and write the ledger row, atomically per customer. The flag says the
        row was already there: an earlier attempt may have reached the provider.

        Only a retry looks for that row first (one query less on every first attempt). A step is
        decided once per run (a quiet-hours deferral writes no row), so a first attempt finds
        none; were one there all the same, the ledger's unique (workflow, run, step) refuses the
        insert, and the retry that follows finds it."""
        with self.store.transaction() as session:
            retrying = activity.in_activity() and activity.info().attempt > 1
            row = queries.find_ledger_row(session, req.workflow_id, req.run_id, req.step) if retrying else None
            if row is not None:
                return (None, row, True) if row.status == "sending" else (_outcome(row), None, True)
            decided, row = self._decide_new(session, req, retrying=retrying)
            return decided, row, False

    def _decide_new(
        self, session, req: SendRequest, *, retrying: bool = False
    ) -> tuple[SendOutcome | None, MessageRow | None]:
        """The policy for a send not decided before. A retry looks for the message's wait even when
        the workflow knows of none: an earlier attempt may have deferred it for a cap and committed
        before its result was lost, and the wait it left open must rank it and be closed."""
        # Locks the customer's row: two sends to one customer are decided one after the other,
        # so the frequency cap holds across journeys and workers.
        customer = queries.get_customer(session, req.customer_id, lock=True)
        message = (req.workflow_id, req.run_id, req.step)
        # Deferred before for a cap: its wait ranks it (since when it waits), until it is decided.
        waiting = queries.open_wait(session, *message) if req.waiting or retrying else None
        if (exited := self._exit_logged(session, req)) is not None:
            if waiting is not None:
                queries.close_waits(session, *message)
            row = _ledger_row(req, status="skipped", reason=Reason.EXITED, channel=None, address=None)
            row.error = f"{exited.type} {exited.event_id} is logged: the instance ends on it"
            session.add(row)
            return SendOutcome(status="skipped", reason=Reason.EXITED), None

        decision = decide(
            customer,
            channel=req.channel,
            fallback=req.fallback,
            category=req.category,
            at=req.at,
            deadline=req.deadline,
            lookups=StoreLookups(session, req.customer_id, message=message),
            resource=req.resource,
            default_region=self.default_region,
            planned_at=req.planned_at,
            max_lateness=req.max_lateness,
            policy=self.policy.for_send(req.policy),
            waiting=waiting,
        )
        notes = "; ".join(decision.notes) or None  # unusable contacts passed over, recorded with the outcome
        if waiting is not None and decision.action != "defer":  # decided: it waits no longer
            queries.close_waits(session, *message)
        if decision.action == "skip":
            row = _ledger_row(
                req, status="skipped", reason=decision.reason, channel=decision.channel, address=decision.address
            )
            row.error = "; ".join(filter(None, (decision.detail, notes))) or None  # e.g. which limit, and why
            session.add(row)
            return SendOutcome(status="skipped", reason=decision.reason, channel=decision.channel), None
        if decision.action == "defer":
            # No ledger row until it is decided; the deferral is recorded, and a wait for a cap's
            # slot stays open (under this customer's lock) for other messages to see.
            queries.record_deferral(session, _deferral(req, decision), earlier=waiting)
            outcome = SendOutcome(
                status="deferred",
                reason=decision.reason,
                detail=decision.detail,
                channel=decision.channel,
                defer_until=decision.resume_at,
            )
            return outcome, None

        try:
            rendered = render_message(
                req.template,
                name=req.template_name,
                channel=decision.channel,
                locale=customer.locale,
                context=message_context(req.context, customer=self._customer_now(session, req, customer)),
                shop_name=self.shop_name,
                marketing=req.category == "marketing",
                opt_out=self.opt_out,
                provider=self._provider(decision.channel, decision.address),
                registry=self.sms_registry,
                link_base=self.link_base,
            )
        except TemplateRenderError as err:
            activity.logger.warning("template error in %s/%s: %s", req.journey, req.step, err)
            row = _ledger_row(req, status="failed", reason=Reason.TEMPLATE_ERROR, channel=decision.channel)
            row.address, row.error = decision.address, str(err)
            session.add(row)
            return SendOutcome(status="failed", reason=Reason.TEMPLATE_ERROR, channel=decision.channel), None

        row = _ledger_row(req, status="sending", reason=None, channel=decision.channel, address=decision.address)
        row.cap = decision.cap  # counts against another cap than its category's
        row.locale, row.subject, row.body = rendered.locale, rendered.subject, rendered.body
        row.segments = rendered.segments
        row.provider_template, row.template_data = rendered.provider_template, rendered.template_data
        row.error = notes  # e.g. why the fallback channel was used
        if req.deliver or decision.channel in self.deliver_inline:
            row.attempted_at = datetime.now(UTC)  # this attempt calls the provider next
        session.add(row)
        if rendered.links:  # written with the ledger row: a link never points at no message
            record_links(session, row.id, rendered.links, datetime.now(UTC), self.link_days)
        return None, row

    def deliver_once(self, message_id: str) -> SendOutcome:
        """`deliver_message` outside its own activity: a batched broadcast's message in doubt is
        settled and delivered one at a time, as a journey's is. Raises ApplicationError when the
        provider's answer is still to come (the caller's activity is tried again)."""
        return self._deliver(message_id)

    def provider_of(self, channel_name: str | None, address: str | None) -> str | None:
        """Who delivers a message on this channel to this address (see `_provider`)."""
        return self._provider(channel_name, address)

    def _provider(self, channel_name: str | None, address: str | None) -> str | None:
        """Who delivers a message on this channel to this address: the adapter's `provider_for`
        (the sms channel picks Aliyun for mainland numbers), else its one provider."""
        channel = self.channels.get(channel_name) if channel_name else None
        if channel is None:
            return None
        provider_for = getattr(channel, "provider_for", None)
        if callable(provider_for) and address:
            return provider_for(address)
        return getattr(channel, "provider", None)

    def _customer_now(self, session, req: SendRequest, customer: Customer) -> dict:
        """The customer a template renders with: what the workflow saw (RFM, the stage, the
        segments), the record as the store has it now, and the loyalty facts now (`customer.points`,
        `customer.tier`), read only for a template that names them (two queries a send less)."""
        seen = {**req.context.get("customer", {}), **customer.model_dump(mode="json")}
        if not reads_loyalty(req.template.model_dump_json()):
            return seen
        points, tier = ledger.balance(session, req.customer_id), member_tiers.current(session, req.customer_id)
        return seen | loyalty_facts(points, tier, self.loyalty)

    @staticmethod
    def _exit_logged(session, req: SendRequest):
        """An exit event of the instance already in the log, though maybe not yet signalled (the
        dispatcher is behind, or a payment system's clock made it look older than its order)."""
        if not req.exit_on or req.exit_key is None:
            return None
        key = req.order_id if req.exit_key == "order" else req.customer_id
        if key is None:
            return None
        return queries.first_logged(session, key_field=req.exit_key, key=key, types=req.exit_on, since=req.exit_since)

    def _deliver(self, message_id: str, fresh: MessageRow | None = None) -> SendOutcome:
        """Hand a decided message to its channel and record what the provider said. `fresh` is
        the row this very attempt just wrote; otherwise the row is read, and an earlier call the
        provider never answered is settled first (`_begin_attempt`)."""
        if fresh is not None:
            row, earlier = fresh, None
        else:
            begun = self._begin_attempt(message_id)
            if isinstance(begun, SendOutcome):
                return begun
            row, earlier = begun
        channel = self.channels[row.channel]
        try:
            receipt = channel.send(outgoing_message(row, earlier))
        except PermanentChannelError as err:
            self._finish(row.id, status="failed", reason="provider_rejected", error=f"{err.code}: {err}")
            if err.unsubscribed:
                with self.store.transaction() as session:
                    queries.add_suppression(session, row.channel, row.address, "all", f"provider {err.code}", row.at)
            return SendOutcome(status="failed", reason="provider_rejected", channel=row.channel, message_id=row.id)
        except RetryableChannelError as err:
            # A refusal settles the doubt (the provider said no); a lost answer keeps the message
            # in doubt since its earliest unanswered call.
            changes = {"error": f"{err.code}: {err}"[:2000]} | ({} if err.in_doubt else {"attempted_at": None})
            self._finish(row.id, **changes)
            raise ApplicationError(
                f"{row.channel} send of {row.id} failed, will retry: {err}",
                next_retry_delay=timedelta(seconds=err.retry_after) if err.retry_after else None,
            ) from err
        self._record_sent(row.id, receipt.provider_id)
        return SendOutcome(status="sent", channel=row.channel, message_id=row.id)

    def _begin_attempt(self, message_id: str) -> SendOutcome | tuple[MessageRow, datetime | None]:
        """Mark a provider call as begun, before making it, so that if its answer is lost (a
        timeout, this worker killed) the next attempt knows the message is in doubt. A message
        in doubt is settled the channel's way (`core.channel.DoubtPolicy`) before it is sent
        again. Returns the outcome when there is nothing to send, else the row and, for a channel
        that looks earlier attempts up, since when to look."""
        with self.store.transaction() as session:
            row = session.get(MessageRow, message_id)
            if row is None:
                raise ApplicationError(f"no message {message_id} in the ledger", non_retryable=True)
            if row.status != "sending":  # decided by an earlier attempt, or a provider event settled it
                return _outcome(row)
            now = datetime.now(UTC)
            doubt = row.attempted_at
            if doubt is None:
                row.attempted_at = now
                return row, None
            channel = self.channels[row.channel]
            policy = channel.settles_doubt
            if policy == "lookup":  # the adapter looks for the earliest unanswered call itself
                return row, doubt
            if policy == "resend":
                row.attempted_at = now
                return row, None
            if policy == "never":
                row.status, row.reason, row.updated_at = "unknown", "in_doubt", now
                row.error = (
                    f"{channel.provider} did not answer a send begun at {doubt.isoformat()} and cannot be asked "
                    "whether it took it; not sent again (at most once). Configure its event webhook to settle this."
                )
                activity.logger.warning("message %s left unknown: %s", row.id, row.error)
                return _outcome(row)
            waited = (now - doubt).total_seconds()
            if waited >= channel.reconcile_seconds:  # no `processed` event came: SendGrid never took it
                row.attempted_at = now
                row.error = f"no {channel.provider} event for a send begun at {doubt.isoformat()}: sent again"
                return row, None
        wait = min(channel.reconcile_seconds - waited, 10.0)
        raise ApplicationError(
            f"{row.channel} send of {message_id} is in doubt since {doubt.isoformat()}: waiting for "
            f"{channel.provider}'s event before sending again ({waited:.0f} of {channel.reconcile_seconds:.0f} s)",
            next_retry_delay=timedelta(seconds=max(wait, 0.5)),
        )

    def _record_sent(self, message_id: str, provider_id: str) -> None:
        """The provider took the message. Its status callback may have come first (delivered):
        the status only moves forward."""
        with self.store.transaction() as session:
            row = session.get(MessageRow, message_id)
            row.provider_id, row.attempted_at = provider_id, None
            now = datetime.now(UTC)
            if not queries.advance_status(row, "sent", now):
                row.updated_at = now

    def _finish(self, message_id: str, **changes) -> None:
        with self.store.transaction() as session:
            row = session.get(MessageRow, message_id)
            for name, value in changes.items():
                setattr(row, name, value)
            row.updated_at = datetime.now(UTC)


def _ledger_row(req: SendRequest, *, status: str, reason: str | None, channel: str | None, address=None) -> MessageRow:
    return _new_row(
        req,
        step=req.step,
        template=req.template_name,
        status=status,
        reason=reason,
        channel=channel,
        address=address,
        resource=req.resource.name if req.resource else None,
        variant=req.variant,
    )


def _deferral(req: SendRequest, decision: Decision) -> dict:
    """The deferrals row of a send the policy put off (store.tables.DeferralRow's fields)."""
    return {
        "workflow_id": req.workflow_id,
        "run_id": req.run_id,
        "step": req.step,
        "journey": req.journey,
        "customer_id": req.customer_id,
        "category": req.category,
        "variant": req.variant,
        "channel": decision.channel,
        "reason": decision.reason or Reason.QUIET_HOURS,
        "detail": decision.detail,
        "at": req.at,
        "resume_at": decision.resume_at,
        "cap": decision.waits_for,
        "priority": decision.priority,
        "deadline": req.deadline if decision.waits_for else None,
        "held": decision.held,
        "open": False,
    }


def _new_row(origin: SendRequest | FailureRecord, **fields) -> MessageRow:
    """A new ledger row for one step of one journey run."""
    return MessageRow(
        id=str(uuid.uuid4()),
        workflow_id=origin.workflow_id,
        run_id=origin.run_id,
        journey=origin.journey,
        journey_version=origin.journey_version,
        customer_id=origin.customer_id,
        order_id=origin.order_id,
        category=origin.category,
        at=origin.at,
        updated_at=datetime.now(UTC),
        **fields,
    )


def outgoing_message(row: MessageRow, earlier_attempt_at: datetime | None = None) -> OutgoingMessage:
    """A ledger row as its channel takes it (`earlier_attempt_at`: an earlier call may have reached the provider)."""
    return OutgoingMessage(
        message_id=row.id,
        channel=row.channel,
        to=row.address,
        subject=row.subject,
        body=row.body,
        journey=row.journey,
        step=row.step,
        customer_id=row.customer_id,
        category=row.category,
        resource=row.resource,
        provider_template=row.provider_template,
        template_data=row.template_data,
        earlier_attempt_at=earlier_attempt_at,
    )


def _outcome(row: MessageRow) -> SendOutcome:
    """A decided row as the workflow sees it: later provider statuses (delivered, clicked) were sent."""
    status = row.status if row.status in ("skipped", "failed", "unknown") else "sent"
    return SendOutcome(status=status, reason=row.reason, channel=row.channel, message_id=row.id)
