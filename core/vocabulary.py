"""The names every layer shares: channels, message statuses and their order, why a message was
not sent, and the search attributes journeys are found by in Temporal."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

from temporalio.common import SearchAttributeKey

#: The channels messages go out on, each delivered from its own task queue. `outbox` records only.
ChannelName = Literal["sms", "email", "webhook", "outbox"]
CHANNELS: tuple[ChannelName, ...] = get_args(ChannelName)

#: What a message is: a notice the customer expects (payment, delivery), or marketing (opt-out
#: text, email unsubscribes, the shipped frequency cap).
CategoryName = Literal["transactional", "marketing"]
CATEGORIES: tuple[CategoryName, ...] = get_args(CategoryName)


class Status(StrEnum):
    """A ledger row's status. `sending`: decided, the provider not (yet) sure to have it;
    `unknown`: its answer was lost and nothing could settle it (sent at most once)."""

    SENDING = "sending"
    UNKNOWN = "unknown"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    OPENED = "opened"
    CLICKED = "clicked"
    SKIPPED = "skipped"


#: How far along a message is. A provider status moves a message only to a higher rank, so a late
#: `sent` never overwrites `delivered`, and a final status (delivered, failed) is never reopened.
#: `unknown` moves on when a provider event about it arrives later (processed, delivered).
STATUS_RANK = {
    Status.SENDING: 0,
    Status.UNKNOWN: 0,
    Status.SENT: 1,
    Status.DELIVERED: 2,
    Status.UNDELIVERED: 2,
    Status.FAILED: 2,
    Status.OPENED: 3,
    Status.CLICKED: 4,
}

#: A message that reached the provider (it was sent, whatever happened after): the effect report's
#: sent, and what makes a run reached.
SENT_STATUSES = (Status.SENT, Status.DELIVERED, Status.UNDELIVERED, Status.OPENED, Status.CLICKED)

#: Statuses that count towards the frequency cap: sent, or possibly sent.
COUNTED_STATUSES = (Status.SENDING, Status.UNKNOWN, Status.SENT, Status.DELIVERED, Status.OPENED, Status.CLICKED)


class Reason(StrEnum):
    """Why a message was skipped or failed (the ledger's `reason`)."""

    NO_CONTACT = "no_contact"
    UNSUBSCRIBED = "unsubscribed"
    BLACKLISTED = "blacklisted"
    QUIET_HOURS = "quiet_hours"
    SEND_WINDOW = "send_window"  # outside the send windows of policy.yaml, and deferred past its deadline
    FREQUENCY_CAP = "frequency_cap"
    RESOURCE_LIMIT = "resource_limit"
    TEMPLATE_ERROR = "template_error"
    EXPRESSION_ERROR = "expression_error"
    PROVIDER_REJECTED = "provider_rejected"
    IN_DOUBT = "in_doubt"
    BOUNCED = "bounced"
    BLOCKED = "blocked"
    DROPPED = "dropped"
    UNDELIVERED = "undelivered"
    STALE = "stale"  # its planned moment passed by more than the step's max_lateness
    EXITED = "exited"  # an exit event of its instance was logged before the send was decided


JOURNEY_NAME = SearchAttributeKey.for_keyword("JourneyName")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
#: Only upserted by revision-0 instances; the step is in the `status` query.
JOURNEY_STEP = SearchAttributeKey.for_keyword("JourneyStep")
#: Set by the router when it starts an instance (not by the workflow), so old histories replay.
JOURNEY_VERSION = SearchAttributeKey.for_keyword("JourneyVersion")
SEARCH_ATTRIBUTES = (JOURNEY_NAME, CUSTOMER_ID, ORDER_ID, JOURNEY_STEP, JOURNEY_VERSION)
