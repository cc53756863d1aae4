"""The end-to-end tests run on the real clock; they must pass at any hour. Their customers live
where it is midday now (tests.helpers.daytime_zone): checked here against the real quiet-hours
rule for every half hour of a day and the edges seen to fail (23:30 and 07:59 local elsewhere)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from activities.policy import QUIET_HOURS
from definitions.expressions import zone
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
