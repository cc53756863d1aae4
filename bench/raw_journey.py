"""The floor for the benchmarks: what Temporal alone costs for journey-like instances, with no
policy, no store and no interpreter.

RawJourney: a signal-with-start, a 15-minute timer and one no-op activity (simulate_month's floor).
MinimalReminder: the payment reminder written by hand as directly as Temporal allows: wait until
the reminder is due (a timer), then one activity that decides and sends.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@workflow.defn(name="RawJourney")
class RawJourney:
    @workflow.signal(name="event")
    def on_event(self, _: dict) -> None:
        pass

    @workflow.run
    async def run(self, _: dict) -> None:
        await workflow.sleep(timedelta(minutes=15))
        await workflow.execute_activity("raw_send", start_to_close_timeout=timedelta(seconds=30))


@activity.defn(name="raw_send")
def raw_send() -> None:
    pass


@workflow.defn(name="MinimalReminder")
class MinimalReminder:
    def __init__(self) -> None:
        self.exited = False

    @workflow.signal(name="event")
    def on_event(self, event: dict) -> None:
        self.exited = self.exited or event.get("type") == "order.paid"

    @workflow.run
    async def run(self, wait_seconds: float) -> str:
        try:
            await workflow.wait_condition(lambda: self.exited, timeout=timedelta(seconds=wait_seconds))
            return "exited"
        except TimeoutError:
            pass
        await workflow.execute_activity("raw_send", start_to_close_timeout=timedelta(seconds=30))
        return "sent"
