"""The end-to-end tests run on the real clock; they must pass at any hour. Their customers live
where it is midday now (tests.helpers.daytime_zone): checked here against the real quiet-hours
rule for every half hour of a day and the edges seen to fail (23:30 and 07:59 local elsewhere),
and the end-to-end tests are run again with the machine's clock reading those hours."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from definitions.expressions import zone
from rules.quiet_hours import QUIET_HOURS
from tests.helpers import daytime_zone

DAY = datetime(2026, 3, 8, tzinfo=UTC)  # a daylight-saving day somewhere, for good measure
MOMENTS = [DAY + timedelta(minutes=30 * n) for n in range(48)] + [
    datetime(2026, 11, 24, 23, 30, tzinfo=UTC),
    datetime(2026, 11, 24, 7, 59, tzinfo=UTC),
    datetime(2026, 6, 30, 22, 0, tzinfo=UTC),
]


@pytest.mark.parametrize("now", MOMENTS, ids=[m.strftime("%H:%M") for m in MOMENTS])
def test_test_customers_are_outside_quiet_hours_at_any_hour(now):
    tz = zone(daytime_zone(now))
    for later in (now, now + timedelta(minutes=30), now + timedelta(hours=8)):  # a long run stays clear
        assert QUIET_HOURS.deferral(later, tz) is None, (now, later.astimezone(tz))


#: The end-to-end tests that send on the real clock.
END_TO_END = ["tests/test_history.py", "tests/test_real_channels.py", "tests/test_up.py"]


def posix_zone_where_it_is(local: str, now: datetime) -> str:
    """A POSIX TZ value in which the machine's wall clock reads `local` (HH:MM) at `now`."""
    hours, minutes = map(int, local.split(":"))
    wanted = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    offset = round((wanted - now.replace(second=0, microsecond=0)).total_seconds() / 60)
    offset = (offset + 12 * 60) % (24 * 60) - 12 * 60  # within ±12 h
    sign = "-" if offset >= 0 else "+"  # POSIX counts west of Greenwich as positive
    return f"LOCAL{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


@pytest.mark.parametrize("local", ["23:30", "07:59"])
def test_the_end_to_end_tests_pass_as_if_it_were(local):
    """The end-to-end tests (the deployed stack, the real providers' SDKs) again, with the
    machine's clock reading 23:30 or 07:59 local: in the tests and in every process they start
    (pytest, `journeys up`, the API, the worker). Nothing may read the machine's local hour. The
    Temporal server's own clock cannot be moved (a Go binary reads the kernel's clock directly),
    which is why customers' zones come from daytime_zone, checked above for every half hour."""
    tz = posix_zone_where_it_is(local, datetime.now(UTC))
    env = {**os.environ, "TZ": tz, "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(time.strftime('%H:%M'))"], env=env, capture_output=True, text=True
    )
    shown = datetime.strptime(probe.stdout.strip(), "%H:%M")
    wanted = datetime.strptime(local, "%H:%M")
    assert abs((shown - wanted).total_seconds()) <= 120, (tz, probe.stdout)  # the clock really reads it
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *END_TO_END],
        env=env,
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, f"TZ={tz}:\n{run.stdout[-5000:]}\n{run.stderr[-2000:]}"
