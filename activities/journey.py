"""The side effects a journey asks for: load the customer, and send one message under the contact policy.

`send_message` is safe to retry: the ledger row for `(workflow_id, run_id, step)` is written, in
the same transaction as the policy checks, before the channel is called. A retry finds the row:
a decided row (sent, skipped, failed) is returned as it is; a row still `sending` (the worker died
or the provider failed retryably) is sent again with the same message id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.models import FailureRecord, SendOutcome, SendRequest
from activities.policy import FREQUENCY_CAP, FREQUENCY_WINDOW, QUIET_HOURS, choose_channel
from channels.base import Channel, OutgoingMessage, PermanentChannelError, RetryableChannelError
from core.models import Customer
from definitions.render import TemplateRenderError, render_message
from store import queries
from store.db import Store
from store.models import MessageRow


class JourneyActivities:
    """Activities with their dependencies: the store, the channel adapters, the shop's name."""

    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel],
        shop_name: str,
        *,
        default_region: str = "CN",
        opt_out: dict[str, str] | None = None,
        deliver_inline: frozenset[str] = frozenset(),
    ):
        self.store = store
        self.channels = channels
        self.shop_name = shop_name
        self.default_region = default_region  # where national phone numbers are read
        self.opt_out = opt_out or {}  # marketing SMS opt-out text per locale, over the defaults
        # Channels with no rate limit: delivered by send_message itself, saving the workflow an
        # activity and a workflow task per message (a rate-limited channel delivers from its queue).
        self.deliver_inline = deliver_inline

    @activity.defn(name="load_customer")
    def load_customer(self, customer_id: str) -> Customer | None:
        with self.store.transaction() as session:
            return queries.get_customer(session, customer_id)

    @activity.defn(name="send_message")
    def send_message(self, request: SendRequest) -> SendOutcome:
        decided, row, retry = self._decide(request)
        if decided is not None:
            return decided
        if not request.deliver and row.channel not in self.deliver_inline:
            return SendOutcome(status="ready", channel=row.channel, message_id=row.id)
        return self._deliver(row, retry)

    @activity.defn(name="deliver_message")
    def deliver_message(self, message_id: str) -> SendOutcome:
        """Hand a message decided by send_message to its channel. Runs on the channel's own task
        queue, whose rate limit keeps every worker together under the provider's limit."""
        with self.store.transaction() as session:
            row = session.get(MessageRow, message_id)
        if row is None:
            raise ApplicationError(f"no message {message_id} in the ledger", non_retryable=True)
        if row.status != "sending":  # delivered by an earlier attempt
            return _outcome(row)
        return self._deliver(row, retry=activity.info().attempt > 1)

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
        row was already there: an earlier attempt may have reached the provider."""
        with self.store.transaction() as session:
            row = queries.find_ledger_row(session, req.workflow_id, req.run_id, req.step)
            if row is not None:
                return (None, row, True) if row.status == "sending" else (_outcome(row), None, True)
            decided, row = self._decide_new(session, req)
            return decided, row, False

    def _decide_new(self, session, req: SendRequest) -> tuple[SendOutcome | None, MessageRow | None]:
        """The policy for a send not decided before."""
        # Locks the customer's row: two sends to one customer are decided one after the other,
        # so the frequency cap holds across journeys and workers.
        customer = queries.get_customer(session, req.customer_id, lock=True)

        notes: list[str] = []  # unusable contacts passed over, recorded with the outcome

        def skip(reason: str, channel: str | None = None, address: str | None = None) -> SendOutcome:
            row = _ledger_row(req, status="skipped", reason=reason, channel=channel, address=address)
            row.error = "; ".join(notes) or None
            session.add(row)
            return SendOutcome(status="skipped", reason=reason, channel=channel)

        if customer is None:
            return skip("no_contact"), None
        if customer.blacklisted:
            return skip("blacklisted"), None
        choice = choose_channel(
            customer,
            req.channel,
            req.fallback,
            req.category,
            lambda channel, address: queries.suppression_scope(session, channel, address),
            self.default_region,
        )
        notes.extend(choice.problems)
        if choice.channel is None:
            return skip(choice.skip_reason or "no_contact"), None

        tz = ZoneInfo(customer.timezone)
        resume_at = QUIET_HOURS.deferral(req.at, tz)
        if resume_at is not None:
            if req.deadline is not None and resume_at >= req.deadline:
                return skip("quiet_hours", choice.channel, choice.address), None
            return SendOutcome(status="deferred", channel=choice.channel, defer_until=resume_at), None

        if req.category == "marketing":
            recent = queries.counted_marketing_since(session, customer.customer_id, req.at - FREQUENCY_WINDOW)
            if recent >= FREQUENCY_CAP:
                return skip("frequency_cap", choice.channel, choice.address), None

        try:
            rendered = render_message(
                req.template,
                name=req.template_name,
                channel=choice.channel,
                locale=customer.locale,
                context={**req.context, "customer": customer.model_dump(mode="json")},
                shop_name=self.shop_name,
                marketing=req.category == "marketing",
                opt_out=self.opt_out,
            )
        except TemplateRenderError as err:
            activity.logger.warning("template error in %s/%s: %s", req.journey, req.step, err)
            row = _ledger_row(req, status="failed", reason="template_error", channel=choice.channel)
            row.address, row.error = choice.address, str(err)
            session.add(row)
            return SendOutcome(status="failed", reason="template_error", channel=choice.channel), None

        row = _ledger_row(req, status="sending", reason=None, channel=choice.channel, address=choice.address)
        row.locale, row.subject, row.body = rendered.locale, rendered.subject, rendered.body
        row.segments = rendered.segments
        row.provider_template, row.template_data = rendered.provider_template, rendered.template_data
        row.error = "; ".join(notes) or None  # e.g. why the fallback channel was used
        session.add(row)
        return None, row

    def _deliver(self, row: MessageRow, retry: bool) -> SendOutcome:
        """Hand a decided message to its channel and record what the provider said."""
        message = OutgoingMessage(
            message_id=row.id,
            channel=row.channel,
            to=row.address,
            subject=row.subject,
            body=row.body,
            journey=row.journey,
            step=row.step,
            customer_id=row.customer_id,
            category=row.category,
            provider_template=row.provider_template,
            template_data=row.template_data,
            earlier_attempt_at=row.updated_at if retry else None,
        )
        try:
            receipt = self.channels[row.channel].send(message)
        except PermanentChannelError as err:
            self._finish(row.id, status="failed", reason="provider_rejected", error=f"{err.code}: {err}")
            if err.unsubscribed:
                with self.store.transaction() as session:
                    queries.add_suppression(session, row.channel, row.address, "all", f"provider {err.code}", row.at)
            return SendOutcome(status="failed", reason="provider_rejected", channel=row.channel, message_id=row.id)
        except RetryableChannelError as err:
            raise ApplicationError(
                f"{row.channel} send of {row.id} failed, will retry: {err}",
                next_retry_delay=timedelta(seconds=err.retry_after) if err.retry_after else None,
            ) from err
        self._record_sent(row.id, receipt.provider_id)
        return SendOutcome(status="sent", channel=row.channel, message_id=row.id)

    def _record_sent(self, message_id: str, provider_id: str) -> None:
        """The provider took the message. Its status callback may have come first (delivered):
        the status only moves forward."""
        with self.store.transaction() as session:
            row = session.get(MessageRow, message_id)
            row.provider_id = provider_id
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
        req, step=req.step, template=req.template_name, status=status, reason=reason, channel=channel, address=address
    )


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


def _outcome(row: MessageRow) -> SendOutcome:
    """A decided row as the workflow sees it: later provider statuses (delivered, clicked) were sent."""
    status = row.status if row.status in ("skipped", "failed") else "sent"
    return SendOutcome(status=status, reason=row.reason, channel=row.channel, message_id=row.id)
