"""Answering one SMS reply (应答设置), at most once: the `ReplyAnswer` workflow, id `reply:{id}`,
never reused, started by the intake's hook or by the sweep (triggers/replies.py).

It asks for the plan (activities/replies.py), then:
- sends the unsubscribe's confirmation at once, whatever the hour (the plan exempts it from quiet
  hours and caps), or the keyword's answer within the shop's quiet hours: a deferral sleeps on a
  durable timer until they end and the send is decided again, through the journeys' own send
  activities and ledger (exactly once);
- or posts the reply to the shop's customer service (retried while it fails for a while; a
  refusal is recorded);
- and records what was done on the reply.

And `ReplySweep`, which the `journeys-replies` schedule starts every few minutes: the answers of
replies whose hook never ran.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.payloads import SendOutcome, SendRequest
    from activities.replies import (
        REPLY_SWEEP_WORKFLOW,
        REPLY_WORKFLOW,
        ReplyActivities,
        ReplyOutcome,
        SweepReport,
        SweepRequest,
        WebhookPost,
    )
    from workflows.journey import ACTIVITY_RETRY, decide_and_deliver

#: Customer service down: tried for about an hour and a half, then the reply records why it was not posted.
WEBHOOK_ATTEMPTS = 24
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5), maximum_attempts=WEBHOOK_ATTEMPTS
)


@workflow.defn(name=REPLY_WORKFLOW)
class ReplyAnswerWorkflow:
    @workflow.run
    async def run(self, reply_id: str) -> ReplyOutcome:
        plan = await workflow.execute_activity_method(
            ReplyActivities.plan_reply_answer,
            reply_id,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ACTIVITY_RETRY,
        )
        outcome = ReplyOutcome(reply_id=reply_id, action=plan.action, handled_at=workflow.now(), error=plan.error)
        if plan.done:  # answered before (or no such reply): nothing again
            return outcome
        if plan.send is not None:
            sent = await self._send(plan.send)
            outcome.step = plan.send.step
            if sent.status in ("skipped", "failed", "unknown"):
                outcome.error = f"{plan.send.step} {sent.status}: {sent.reason or '-'}"
        elif plan.url is not None and plan.error is None:
            outcome.error = await self._post(WebhookPost(reply_id=reply_id, url=plan.url))
        outcome.handled_at = workflow.now()
        await workflow.execute_activity_method(
            ReplyActivities.record_reply_outcome,
            outcome,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ACTIVITY_RETRY,
        )
        return outcome

    async def _send(self, planned: SendRequest) -> SendOutcome:
        """Decide and deliver as a journey's send step does; a deferral (quiet hours, a cap) sleeps
        until its end and decides again. The ledger row's key makes it once."""
        queue = workflow.info().task_queue
        while True:
            outcome = await decide_and_deliver(planned.model_copy(update={"at": workflow.now()}), queue)
            if outcome.status != "deferred" or outcome.defer_until is None:
                return outcome
            await workflow.sleep(max(outcome.defer_until - workflow.now(), timedelta(seconds=1)))

    async def _post(self, post: WebhookPost) -> str | None:
        """Post to customer service; what stopped it, if anything (a refusal, or it never answered)."""
        try:
            return await workflow.execute_activity_method(
                ReplyActivities.post_reply,
                post,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=WEBHOOK_RETRY,
            )
        except ActivityError as err:
            cause = err.cause.message if err.cause is not None and hasattr(err.cause, "message") else str(err)
            return f"not posted after {WEBHOOK_ATTEMPTS} tries: {cause}"[:2000]


@workflow.defn(name=REPLY_SWEEP_WORKFLOW)
class ReplySweepWorkflow:
    @workflow.run
    async def run(self) -> SweepReport:
        return await workflow.execute_activity_method(
            ReplyActivities.start_unanswered_replies,
            SweepRequest(at=workflow.now()),
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
