"""Each channel's send rate, kept exact across workers: a token bucket per channel in the database
(`channel_rates`), which every worker and both send paths (one message at a time, and a page of
messages from one activity) draw from. Temporal's per-task-queue activity rate limit counts
activities, so it stops counting messages once a broadcast sends a page from one activity; the
bucket counts messages, whoever sends them.

The bucket refills at `rate` tokens a second and holds at most one second's worth (max(1, rate)),
so after an idle spell a channel sends at most one second's burst at once. A token is one message.
The row is read and written under its lock (SELECT ... FOR UPDATE on PostgreSQL; SQLite's
transactions already hold the write lock, store/db.py), so two workers never spend the same token.

Times are the caller's epoch seconds. Workers' clocks differ a little, and a worker may read its
clock before waiting for the lock: a `now` before the bucket's last refill counts as no time gone
by (it makes no tokens) and the refill time never moves back."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store.db import Store
from store.portable import upsert_insert
from store.tables import ChannelRateRow

#: Slack when counting whole tokens, in seconds of refill: an epoch time in a double is exact to
#: about 0.24 µs, so a take at the very moment a token is due may compute 0.9999998 of it. A
#: microsecond's worth is granted early; the bucket keeps the debt (it may hold a hair below zero).
_SLACK_SECONDS = 1e-6

#: How long `acquire` sleeps at most to gather several tokens for a page in one transaction (it
#: always sleeps at least until the next token is due): longer means fewer transactions, shorter
#: means a page shares the budget more evenly with single sends on other workers.
GATHER_SECONDS = 0.25


def burst(rate: float) -> float:
    """How many tokens a bucket holds at most: one second's worth, and at least one message (a
    channel slower than one a second still sends whole messages)."""
    return max(1.0, rate)


def take(session: Session, channel: str, wanted: int, rate: float, now: float) -> tuple[int, float]:
    """Take up to `wanted` tokens from `channel`'s bucket (refilled at `rate` a second, holding at most
    max(1, rate) tokens = one second's burst), in the caller's transaction, the row locked (FOR UPDATE on
    PostgreSQL; SQLite serialises writers): (how many were granted, seconds until the next token is due
    when fewer than wanted were granted, else 0).

    The lock is held until the caller's transaction ends: keep it short. A bucket used for the first
    time starts full. A `now` before the last refill (another worker's clock ahead, or this one read
    before the lock was had) adds nothing, and the wait then counts from that later refill."""
    if rate <= 0 or not math.isfinite(rate):
        raise ValueError(f"a rate limit is a positive number of messages a second, not {rate}")
    if wanted < 0:
        raise ValueError(f"cannot take {wanted} tokens")
    if wanted == 0:
        return 0, 0.0
    full = burst(rate)
    table = ChannelRateRow.__table__
    locked = select(table.c.tokens, table.c.at).where(table.c.channel == channel).with_for_update()
    row = session.execute(locked).first()
    if row is None:
        # First use: insert-if-absent (two workers' first takes may meet here), then lock the one row.
        session.execute(
            upsert_insert(session, table)
            .values(channel=channel, tokens=full, at=now)
            .on_conflict_do_nothing(index_elements=[table.c.channel])
        )
        row = session.execute(locked).one()
    tokens, at = row
    elapsed = max(0.0, now - at)
    tokens = min(full, tokens + elapsed * rate)
    at = max(at, now)
    granted = max(0, min(wanted, math.floor(tokens + rate * _SLACK_SECONDS)))
    tokens -= granted
    session.execute(update(table).where(table.c.channel == channel).values(tokens=tokens, at=at))
    if granted == wanted:
        return granted, 0.0
    # The next whole token is due `(1 - tokens) / rate` after the refill time, which may be after `now`.
    return granted, (at - now) + max(0.0, 1.0 - tokens) / rate


def acquire(
    store: Store,
    channel: str,
    wanted: int,
    rate: float,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    max_wait: float | None = None,
) -> int:
    """Block until `wanted` tokens are taken, in as many short transactions as it takes, sleeping between
    them; returns the number taken (== wanted, or fewer if max_wait ran out).

    Each transaction only takes what the bucket holds; the sleeps between them hold no lock. While
    more than one token is still wanted it sleeps a little past the next token (at most
    GATHER_SECONDS, never past what the bucket can hold) so a page is taken in a few transactions,
    not one per message; once another worker takes what it waited to gather, it wakes when each
    token is due like everyone else (no queue: a waiter's share is whatever races it wins). With
    `max_wait`, it returns what it has as soon as the next token would come after the deadline:
    tokens taken are spent (the caller sends that many, or wastes them)."""
    if wanted <= 0:
        return 0
    started = clock()
    taken, expected, contended = 0, 0, False
    while True:
        with store.transaction() as session:
            granted, wait = take(session, channel, wanted - taken, rate, clock())
        taken += granted
        if taken >= wanted:
            return taken
        # Someone else took what this one waited to gather: from now on it wakes when the next token
        # is due, like a single send, or it would lose every race to those that do.
        contended = contended or granted < expected
        gather = 0.0 if contended else (min(wanted - taken, math.floor(burst(rate))) - 1) / rate
        pause = min(wait + gather, max(wait, GATHER_SECONDS))
        if max_wait is not None:
            left = started + max_wait - clock()
            if wait > left:
                return taken
            pause = min(pause, left)
        expected = 1 + math.floor(round((pause - wait) * rate, 6))
        sleep(pause)
