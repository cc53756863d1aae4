"""Durations as journeys write them: `15m`, `2h`, `3d`, `1d12h`, `-2h` (w, d, h, m, s), read into
a timedelta and written back to the minute. The journey schema's `Duration` fields hold this form."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import Field

_DURATION = re.compile(r"^(-)?((?:\d+[wdhms])+)$")
_PART = re.compile(r"(\d+)([wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}

#: A field holding a duration as written (the journey schema's and the contact policy's).
Duration = Annotated[
    str,
    Field(
        pattern=r"^-?(\d+[wdhms])+$",
        description="A duration such as 15m, 2h, 3d, 1d12h or -2h (w, d, h, m, s).",
        examples=["15m", "3d", "-2h"],
    ),
]


def parse_duration(text: str) -> timedelta:
    """`'1d12h'` → `timedelta(days=1, hours=12)`; a leading `-` makes it negative."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 15m, 2h, 3d or -2h")
    total = timedelta(**{_UNITS[unit]: int(n) for n, unit in _PART.findall(match.group(2))})
    return -total if match.group(1) else total


def format_duration(length: timedelta) -> str:
    """A duration as a journey writes one, to the minute (the reverse of parse_duration for
    whole minutes): `45m`, `2h5m`, `40d3h`; `0m` for less than a minute."""
    if length < timedelta(0):
        return "-" + format_duration(-length)
    minutes = int(length.total_seconds()) // 60
    days, hours, minutes = minutes // 1440, minutes % 1440 // 60, minutes % 60
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return "".join(parts) or "0m"
