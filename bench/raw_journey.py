"""The floor for the benchmarks: what Temporal alone costs for one journey-like instance
(a signal-with-start, a 15-minute timer, one no-op activity), with no policy and no store."""

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
