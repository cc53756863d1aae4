"""A channel's send rate is one budget in the database (store/rates.py), on SQLite and PostgreSQL:
whoever takes from it, in threads or in separate processes, one message or a page at a time, never
gets more than the rate over the time gone by plus one second's burst, and what they got is what
the bucket lost. Fractional rates, a clock that goes back and waiting on an injected clock too."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from store.db import Store
from store.rates import acquire, burst, take
from store.tables import Base, ChannelRateRow

#: An epoch time to start injected clocks at (2026-11-06), so the floats are the size of real ones.
T0 = 1_794_000_000.0

#: Doubles near T0 are exact to about 0.24 µs, and store/rates.py grants a microsecond's worth early.
SLACK = 1e-5


def about(seconds: float):
    return pytest.approx(seconds, abs=SLACK)


def take_now(store: Store, channel: str, wanted: int, rate: float, now: float) -> tuple[int, float]:
    with store.transaction() as session:
        return take(session, channel, wanted, rate, now)


def bucket(store: Store, channel: str) -> tuple[float, float]:
    with store.transaction() as session:
        row = session.execute(select(ChannelRateRow.tokens, ChannelRateRow.at).where(ChannelRateRow.channel == channel))
        return tuple(row.one())


class FakeTime:
    """A clock only `sleep` moves, for `acquire`: simulated seconds, no real waiting."""

    def __init__(self, start: float = T0):
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_table_is_as_the_model_says(store):
    """The migration makes `channel_rates` as ChannelRateRow describes it (alembic finds nothing to change)."""
    assert {"channel", "tokens", "at"} == {c["name"] for c in inspect(store.engine).get_columns("channel_rates")}
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = [d for d in compare_metadata(context, Base.metadata) if "channel_rates" in repr(d)]
    assert differences == []


def test_a_fresh_bucket_is_full_and_then_refills_at_the_rate(store):
    assert take_now(store, "sms", 100, 5, T0) == (5, about(0.2))
    assert take_now(store, "sms", 1, 5, T0 + 0.1) == (0, about(0.1))
    assert take_now(store, "sms", 3, 5, T0 + 0.2) == (1, about(0.2))
    assert take_now(store, "sms", 3, 5, T0 + 0.8) == (3, 0.0)
    # An hour idle fills the bucket to one second's burst, not to an hour's worth.
    assert take_now(store, "sms", 100, 5, T0 + 3600) == (5, about(0.2))
    # Other channels have buckets of their own.
    assert take_now(store, "email", 100, 50, T0 + 3600) == (50, about(0.02))


def test_grants_never_exceed_the_rate_over_any_span_plus_the_burst(store):
    """Takes of random sizes at random moments: over every span of them, what was granted is at most
    rate * span + burst; and the wait a refusal names is when the next token comes, not sooner."""
    rate, chance = 7.0, random.Random(29)
    now, takes = T0, []
    for _ in range(150):
        now += chance.choice([0.0, 0.01, 0.05, 0.13, 0.4, 1.7])
        granted, wait = take_now(store, "sms", chance.randint(1, 12), rate, now)
        takes.append((now, granted))
        if wait and chance.random() < 0.3:
            # Just before the promised moment there is still nothing; at it there is one.
            assert take_now(store, "sms", 1, rate, now + wait - 0.001)[0] == 0
            assert take_now(store, "sms", 1, rate, now + wait)[0] == 1
            takes += [(now + wait - 0.001, 0), (now + wait, 1)]
            now += wait
    for i, (start, _) in enumerate(takes):
        total = 0
        for end, granted in takes[i:]:
            total += granted
            assert total <= rate * (end - start) + burst(rate) + rate * SLACK, (start, end, total)
    assert sum(g for _, g in takes) >= rate * (now - T0) * 0.5  # the budget is used, not only refused


def test_a_fractional_rate_sends_one_message_every_two_seconds(store):
    assert take_now(store, "sms", 3, 0.5, T0) == (1, about(2.0))
    assert take_now(store, "sms", 3, 0.5, T0 + 1) == (0, about(1.0))
    assert take_now(store, "sms", 3, 0.5, T0 + 2) == (1, about(2.0))
    granted = sum(take_now(store, "sms", 1, 0.5, T0 + 2 + step / 10)[0] for step in range(1, 201))
    assert granted == 10  # 20 s more at one every 2 s


def test_a_clock_going_back_makes_no_tokens_and_does_not_fail(store):
    """Worker A's clock is 10 s ahead of worker B's: B's takes count as no time gone by."""
    assert take_now(store, "sms", 5, 5, T0 + 10) == (5, 0.0)  # A, emptying it
    assert take_now(store, "sms", 5, 5, T0) == (0, about(10.2))  # B: due when its clock reaches A's
    assert take_now(store, "sms", 5, 5, T0 + 9) == (0, about(1.2))
    assert bucket(store, "sms") == (0.0, T0 + 10)  # nothing made, the refill time not moved back
    assert take_now(store, "sms", 5, 5, T0 + 10.4) == (2, about(0.2))


def test_acquire_waits_the_simulated_time_the_rate_asks(store):
    fake = FakeTime()
    assert acquire(store, "sms", 7, 2, clock=fake.clock, sleep=fake.sleep) == 7
    assert fake.now - T0 == about(2.5)  # 2 at once, then one every 0.5 s
    # A page of 450 at 100 a second: 100 at once, 350 over 3.5 s, in a few transactions, not 350.
    fake = FakeTime(T0 + 100)
    assert acquire(store, "email", 450, 100, clock=fake.clock, sleep=fake.sleep) == 450
    assert fake.now - (T0 + 100) == about(3.5)
    assert len(fake.sleeps) <= 20
    # Single messages at 0.5 a second: the first at once, the next 2 s later.
    fake = FakeTime(T0 + 200)
    assert [acquire(store, "webhook", 1, 0.5, clock=fake.clock, sleep=fake.sleep) for _ in range(3)] == [1, 1, 1]
    assert fake.now - (T0 + 200) == about(4.0)


def test_acquire_gives_up_with_what_it_has_when_max_wait_runs_out(store):
    fake = FakeTime()
    assert acquire(store, "sms", 10, 1, clock=fake.clock, sleep=fake.sleep, max_wait=3) == 4
    assert fake.now - T0 == about(3.0)
    # Nothing left and the next token beyond the deadline: it returns at once, without sleeping.
    fake = FakeTime(T0 + 3.5)
    assert acquire(store, "sms", 1, 1, clock=fake.clock, sleep=fake.sleep, max_wait=0.2) == 0
    assert fake.sleeps == []


def test_threads_on_one_clock_spend_exactly_what_the_bucket_loses(store):
    """Four workers in threads taking pages and single messages on one shared injected clock (3
    simulated seconds): every token granted is one the bucket lost, none twice, none made up."""
    rate, lock, clock = 20.0, threading.Lock(), [T0]
    granted: list[list[int]] = [[] for _ in range(4)]
    assert take_now(store, "sms", 1, rate, T0)[0] == 1  # the bucket is made (full) at T0

    def work(index: int) -> None:
        chance = random.Random(index)
        while True:
            with lock:
                clock[0] += 0.01
                now = clock[0]
            if now > T0 + 3:
                return
            granted[index].append(take_now(store, "sms", chance.choice([1, 1, 3, 8]), rate, now)[0])

    run_threads(work, 4)
    total = 1 + sum(map(sum, granted))
    tokens, at = bucket(store, "sms")
    # The bucket started full at T0 and only ever refilled at the rate (it never filled up: the
    # workers always wanted more than it had).
    assert total == pytest.approx(burst(rate) + rate * (at - T0) - tokens, abs=1e-6)
    assert total <= burst(rate) + rate * 3 + rate * SLACK
    assert all(granted)


def test_threads_on_the_real_clock_keep_the_rate(store):
    """Four workers sending for about 2.5 real seconds through `acquire`, pages and single messages."""
    rate, seconds, channel = 12.0, 2.5, "sms"
    started = time.time()
    take_now(store, channel, int(burst(rate)), rate, started)  # the bucket exists and is empty from `started`
    totals = [0] * 4

    def work(index: int) -> None:
        totals[index] = send_for(store, channel, rate, started + seconds, random.Random(index))

    run_threads(work, 4)
    assert_kept(store, channel, rate, started, started, sum(totals))


def test_two_processes_and_their_threads_share_one_budget(pg_store):
    """Two worker processes, two threads each, against one PostgreSQL: the budget holds across them."""
    rate, seconds, channel = 15.0, 2.5, "sms"
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, its own connections
    ready, results = context.Barrier(3), context.Queue()
    workers = [
        context.Process(target=worker_process, args=(pg_store.url, channel, rate, seconds, ready, results, n))
        for n in range(2)
    ]
    emptied = time.time()
    take_now(pg_store, channel, int(burst(rate)), rate, emptied)  # made, and empty from `emptied`
    for worker in workers:
        worker.start()
    try:
        ready.wait(timeout=60)  # both have imported and connected: they start now
        started = time.time()
        totals = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert all(total > 0 for total in totals)
    assert_kept(pg_store, channel, rate, emptied, started, sum(totals))


def worker_process(url, channel, rate, seconds, ready, results, index) -> None:
    """One worker process: its own store, two threads sending for `seconds` after the start."""
    store = Store(url)
    try:
        with store.transaction() as session:
            session.execute(select(1))
        ready.wait(timeout=60)
        deadline = time.time() + seconds
        totals = [0, 0]

        def work(thread: int) -> None:
            totals[thread] = send_for(store, channel, rate, deadline, random.Random(index * 10 + thread))

        run_threads(work, 2)
        results.put(sum(totals))
    finally:
        store.dispose()


def send_for(store: Store, channel: str, rate: float, deadline: float, chance: random.Random) -> int:
    """A worker's sends until `deadline`: a page or a single message at a time, each waiting its turn."""
    total = 0
    while (left := deadline - time.time()) > 0:
        total += acquire(store, channel, chance.choice([1, 1, 2, 6]), rate, max_wait=left)
    return total


def assert_kept(store: Store, channel: str, rate: float, emptied: float, started: float, total: int) -> None:
    """The bucket was emptied at `emptied` and the workers started at `started` (the bucket may have
    refilled to one second's burst in between). By the bucket's own accounts, everything granted
    was refilled since `emptied` and not left in it; by the wall clock, at most the rate over the
    run plus what was waiting; and the workers used most of the budget."""
    ended = time.time()
    tokens, at = bucket(store, channel)
    assert emptied <= at <= ended
    assert total <= rate * (at - emptied) - tokens + rate * SLACK
    assert total <= rate * (ended - started) + (burst(rate) if started > emptied else 0) + rate * SLACK
    assert total >= rate * (ended - started) * 0.5, (total, ended - started)


def run_threads(work, count: int) -> None:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as err:  # surfaced below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
