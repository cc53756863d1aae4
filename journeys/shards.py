"""A simulation split by customer across processes, each with its own time-skipping server,
worker and throwaway store, and the stores merged into one afterwards.

What makes the split exact: everything the engine keeps is a customer's (their record, events,
instances, ledger rows, caps and resources), or an order's, and an order is its customer's. So
customers play in shards of their own, a customer with every event of theirs; customers who share
an order (an event of another customer naming it) play in one shard together, since the order's
instances and history are one. A broadcast starts in every shard at the same moment, and each
shard's Broadcast workflow finds the members among its own customers: a segment is a condition on
one customer at a time (store/segments.py), so the shards' members together are the segment's.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import signal
import sqlite3
import traceback
from collections.abc import Awaitable, Callable, MutableSequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, TypeVar

from core.records import Customer, Event
from journeys.progress import Tally
from store.tables import Base

W = TypeVar("W")
R = TypeVar("R")

#: At most this many shards by default: each holds a Python worker and a test server (a few
#: hundred MB together), and beyond the cores more shards only share them.
MAX_SHARDS = 16
#: A shard's fixed cost (a process, a server, a store; about 5 s on a loaded 2-core machine) pays
#: off from about this many customers and events each.
WORK_PER_SHARD = 500


class ShardFailed(RuntimeError):
    """A shard's process raised (its traceback follows) or ended without a result."""


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_shards(work: int) -> int:
    """One shard a core, at most MAX_SHARDS, and none with less than WORK_PER_SHARD to do."""
    return max(1, min(available_cores(), MAX_SHARDS, work // WORK_PER_SHARD))


def shard_of(key: str, shards: int) -> int:
    """A stable shard for `key` (a hash of its bytes, the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % shards


def partition(customers: list[Customer], events: list[Event], shards: int) -> list[tuple[list[Customer], list[Event]]]:
    """Customers and events by shard, each list in its given order. A customer goes by the least
    customer id among those sharing an order with them (usually their own), and their events with
    them."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(node: tuple[str, str]) -> tuple[str, str]:
        root = node
        while parent.get(root, root) != root:
            root = parent[root]
        while node != root:  # point the path at the root, so the next find is short
            parent[node], node = root, parent[node]
        return root

    for event in events:
        if event.order_id is not None:
            # ("c", ...) sorts before ("o", ...): the root, the least of its group, is a customer.
            one, other = find(("c", event.customer_id)), find(("o", event.order_id))
            if one != other:
                parent[max(one, other)] = min(one, other)

    parts: list[tuple[list[Customer], list[Event]]] = [([], []) for _ in range(shards)]
    for customer in customers:
        parts[shard_of(find(("c", customer.customer_id))[1], shards)][0].append(customer)
    for event in events:
        parts[shard_of(find(("c", event.customer_id))[1], shards)][1].append(event)
    return parts


async def run_in_processes(
    play: Callable[[W, Tally], Awaitable[R]], works: list[W], progress: MutableSequence[float]
) -> list[R]:
    """`play(work, tally)` for each work in a process of its own (spawned: the parent's threads
    and Temporal runtime are not forked), all at once; their results in the order of `works`.
    `play` and the works must pickle (a module-level function). `progress` is a shared array
    of two slots per work, which each process's Tally writes. A shard that raises or dies stops
    the others and raises ShardFailed naming it."""
    context = multiprocessing.get_context("spawn")
    running: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        for index, work in enumerate(works):
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(
                target=_shard_main,
                args=(play, work, index, progress, writer),
                name=f"journeys-simulate-shard-{index + 1}",
                daemon=True,
            )
            process.start()
            writer.close()  # the child holds the only writer: its end reads as EOF here
            running.append((process, reader))
        results: dict[int, R] = {}
        while len(results) < len(works):
            open_readers = [reader for index, (_, reader) in enumerate(running) if index not in results]
            for reader in wait(open_readers, timeout=0):
                index = next(i for i, (_, r) in enumerate(running) if r is reader)
                results[index] = _result(index, len(works), *running[index])
            await asyncio.sleep(0.2)
        return [results[index] for index in range(len(works))]
    finally:
        _stop(running)


def _result(index: int, shards: int, process: multiprocessing.process.BaseProcess, reader: Connection) -> Any:
    name = f"shard {index + 1} of {shards}"
    try:
        status, value = reader.recv()
    except EOFError:
        process.join(timeout=10)
        raise ShardFailed(f"{name} ended without a result (exit code {process.exitcode})") from None
    if status == "error":
        raise ShardFailed(f"{name} failed:\n{value}")
    return value


def _stop(running: list[tuple[multiprocessing.process.BaseProcess, Connection]]) -> None:
    """Stop what still runs (after a failure elsewhere, or an interrupt): SIGTERM cancels a shard's
    simulation, which shuts its test server down; one still there after 20 s is killed."""
    for process, _ in running:
        if process.is_alive():
            process.terminate()
    for process, reader in running:
        process.join(timeout=20)
        if process.is_alive():
            process.kill()
            process.join()
        reader.close()


def _shard_main(
    play: Callable[[Any, Tally], Awaitable[Any]],
    work: Any,
    index: int,
    progress: MutableSequence[float],
    writer: Connection,
) -> None:
    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await play(work, Tally(progress, index))

    try:
        outcome = ("ok", asyncio.run(main()))
    except BaseException:  # noqa: BLE001 - every failure goes to the parent, which names the shard
        outcome = ("error", traceback.format_exc())
    try:
        writer.send(outcome)
    except OSError:
        pass  # the parent stopped listening: it stopped this shard, after a failure elsewhere
    finally:
        writer.close()


def merge_stores(into: Path, shards: list[Path]) -> None:
    """Copy every row of the shard stores into `into` (migrated, as they are). Every table's rows
    are a customer's, or keyed by one (a message's id is a uuid); a surrogate integer id is
    numbered again. A shard computes no effect report, so it has no journey goals to repeat. A
    clash raises."""
    connection = sqlite3.connect(into, isolation_level=None)
    try:
        for path in shards:
            connection.execute("ATTACH DATABASE ? AS shard", (str(path),))
            connection.execute("BEGIN")
            for table in Base.metadata.sorted_tables:
                # A surrogate id (an autoincrement integer, as a deferral's) is per store: the
                # merged store numbers the rows again, so two shards' row 1 do not clash.
                kept = [column for column in table.columns if column is not table.autoincrement_column]
                columns = ", ".join(f'"{column.name}"' for column in kept)
                name = f'"{table.name}"'
                connection.execute(f"INSERT INTO main.{name} ({columns}) SELECT {columns} FROM shard.{name}")
            connection.execute("COMMIT")
            connection.execute("DETACH DATABASE shard")
    finally:
        connection.close()
