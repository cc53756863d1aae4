"""Starting the answers of SMS replies (应答设置).

The intake (the Aliyun SmsUp and Twilio inbound webhooks) logs a reply once and calls
`start_reply_answer` with its id: the `ReplyAnswer` workflow `reply:{id}` answers it, and a start
for a reply started before does nothing (the id is never reused), so the hook may run any number of
times.

If the hook never ran (the API stopped after logging the reply, Temporal was unreachable), the
sweep's schedule (journeys/replies.py) starts the answer.
"""

from __future__ import annotations

import logging

from temporalio.client import Client
from temporalio.service import RPCError

from activities.replies import start_answer

log = logging.getLogger("journeys.replies")


async def start_reply_answer(client: Client, reply_id: str, *, task_queue: str) -> None:
    """Answer the logged reply `reply_id` by the shop's rules, at most once: starting twice is a
    no-op. Temporal unreachable is logged, not raised: the reply is logged, and the sweep starts
    its answer within minutes of Temporal's return (the provider's push gets its 200)."""
    try:
        await start_answer(client, reply_id, task_queue)
    except RPCError as err:
        log.error("the answer of reply %s was not started (%s): the sweep will start it", reply_id, err.message)
