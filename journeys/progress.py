"""Progress on stderr: a simulation's (the simulated date, events per second and the time left), and
an import's (`Meter`: rows per second and the time left).

Each shard counts what it has played into two slots of a shared array (`Tally`): how many of its
customers and events, and the simulated time it has reached. `Progress` reads every shard's slots
twice a second and redraws one line; it writes nothing but that line, to its own stream (stderr),
so the command's output stays parseable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableSequence
from datetime import UTC, datetime
from typing import TextIO


def slots(shards: int, begin: datetime) -> list[float]:
    """Two slots a shard, [played, simulated time as a POSIX timestamp], for a simulation in one
    process; shards in processes of their own share a multiprocessing array of the same layout."""
    return [0.0, begin.timestamp()] * shards


class Tally:
    """What one shard has played, written where `Progress` reads it."""

    def __init__(self, slots: MutableSequence[float], index: int):
        self.slots = slots
        self.index = index

    def played(self, at: datetime, count: int = 1) -> None:
        self.slots[2 * self.index] += count
        self.slots[2 * self.index + 1] = at.timestamp()


class Progress:
    """One line, redrawn in place: the simulated date (the slowest shard's), customers and events
    played of all, events per second since the start, and the time left at that pace."""

    def __init__(self, slots: MutableSequence[float], totals: list[int], stream: TextIO):
        self.slots = slots
        self.totals = totals
        self.stream = stream
        self.started = time.monotonic()
        self.width = 0

    def line(self) -> str:
        played = [int(self.slots[2 * i]) for i in range(len(self.totals))]
        done, total = sum(played), sum(self.totals)
        behind = [self.slots[2 * i + 1] for i, n in enumerate(played) if n < self.totals[i]]
        at = datetime.fromtimestamp(min(behind) if behind else max(self.slots[1::2]), UTC)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        if done >= total:
            left = "every event played, running the timers to the end"
        elif rate > 0:
            left = f"{_duration((total - done) / rate)} left"
        else:
            left = "starting"
        return (
            f"simulated {at:%Y-%m-%d %H:%M}Z  {done:,}/{total:,} customers and events  "
            f"{rate:,.0f}/s  {_duration(elapsed)} so far, {left}"
        )

    def draw(self) -> None:
        text = self.line()
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    async def follow(self, every: float = 0.5) -> None:
        """Redraw every `every` seconds until cancelled; then the last line stays, ended."""
        try:
            while True:
                self.draw()
                await asyncio.sleep(every)
        finally:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


class Meter:
    """One line, redrawn in place, for a run through a file (`journeys import`): rows so far, rows
    per second, how far through the file and the time left at that pace. Redrawn at most every
    `every` seconds, however often it is told."""

    def __init__(self, stream: TextIO, every: float = 0.5):
        self.stream = stream
        self.every = every
        self.started = time.monotonic()
        self.drawn = 0.0
        self.width = 0

    def line(self, rows: int, fraction: float) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        left = f"{_duration(elapsed * (1 - fraction) / fraction)} left" if fraction > 0 else "starting"
        rate = rows / elapsed
        return f"{rows:,} rows  {rate:,.0f} rows/s  {fraction:.0%} of the file  {_duration(elapsed)} so far, {left}"

    def update(self, rows: int, fraction: float) -> None:
        now = time.monotonic()
        if now - self.drawn < self.every and fraction < 1:
            return
        self.drawn = now
        text = self.line(rows, fraction)
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def close(self) -> None:
        if self.width:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
