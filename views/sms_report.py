"""The SMS report (短信报表): per day (the shop's time zone), signature and template, what was
submitted, delivered, failed (by error code), replied to and clicked, and the billed parts with
what they cost. `journeys report sms` and `GET /reports/sms` return this model; the counting is
store/sms_report.py's, in SQL.

Cost is billed parts × the price of a part: `price_per_part` of definitions/sms.yaml when the
shop sets it (what its Aliyun contract charges), else JOURNEYS_SMS_PRICE, in JOURNEYS_CURRENCY.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from core.sms_registry import SmsRegistry
from store.db import Store
from store.sms_report import SmsCounts, sms_counts
from views.effect import Prices, period_of


class SmsFigures(BaseModel):
    submitted: int = Field(0, description="Messages that reached the provider (提交).")
    delivered: int = Field(0, description="Delivered by the carrier's receipt, or further (opened, clicked).")
    failed: int = Field(0, description="Failed or undelivered.")
    failed_by_code: dict[str, int] = Field(
        default_factory=dict,
        description="The provider's error code (isv.MOBILE_NUMBER_ILLEGAL, Twilio 30003) when it said no; "
        "else the engine's reason (template_error, in_doubt).",
    )
    replied: int = Field(0, description="Messages a customer's SMS reply was linked to (回复).")
    clicked: int = Field(0, description="Messages whose tracked short link was followed at least once (短链点击).")
    parts: int = Field(0, description="Billed parts of the submitted messages (计费条数).")
    cost: float = Field(0.0, description="parts × the price of a part.")
    delivery_rate: float | None = Field(None, description="delivered / submitted")
    click_rate: float | None = Field(None, description="clicked / delivered")

    def add(self, other: SmsFigures) -> None:
        for name in ("submitted", "delivered", "failed", "replied", "clicked", "parts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for code, n in other.failed_by_code.items():
            self.failed_by_code[code] = self.failed_by_code.get(code, 0) + n

    def finish(self, price: float) -> SmsFigures:
        self.cost = round(self.parts * price, 4)
        self.delivery_rate = round(self.delivered / self.submitted, 4) if self.submitted else None
        self.click_rate = round(self.clicked / self.delivered, 4) if self.delivered else None
        self.failed_by_code = dict(sorted(self.failed_by_code.items()))
        return self


class SmsLine(SmsFigures):
    day: str = Field(description="YYYY-MM-DD in the shop's time zone, by when the message was due.")
    signature: str = Field(description="The signature (签名): Aliyun's sign name, else the shop's name.")
    template: str = Field(description="Aliyun's template code (SMS_...), else the journey's template.")
    title: str | None = Field(None, description="The registered template's title (sms.yaml), if it has one.")


class SmsReport(BaseModel):
    start: datetime
    end: datetime
    timezone: str
    currency: str
    price_per_part: float
    lines: list[SmsLine] = Field(description="By day, then signature, then template.")
    totals: SmsFigures


def sms_period(since: str | None, until: str | None, timezone: str, now: datetime):
    """The report's period (views.effect.period_of: dates are whole days in the shop's time
    zone, `until` included; times are RFC 3339; default the last 30 days); ValueError naming
    `since` or `until`."""
    try:
        return period_of(since, until, timezone, now)
    except ValueError as err:
        message = re.sub(r"^from\b", "since", re.sub(r"^to\b", "until", str(err)))
        raise ValueError(message.replace(") must be before to (", ") must be before until (")) from None


def sms_report(
    store: Store, start: datetime, end: datetime, timezone: str, shop_name: str, registry: SmsRegistry, prices: Prices
) -> SmsReport:
    """The report for [start, end)."""
    price = registry.price_per_part if registry.price_per_part is not None else prices.sms
    with store.transaction() as session:
        found = sms_counts(session, start, end, timezone, shop_name)
    lines = [_line(key, counts, registry, price) for key, counts in sorted(found.items())]
    totals = SmsFigures()
    for line in lines:
        totals.add(line)
    return SmsReport(
        start=start,
        end=end,
        timezone=timezone,
        currency=prices.currency,
        price_per_part=price,
        lines=lines,
        totals=totals.finish(price),
    )


def _line(key: tuple[str, str, str], counts: SmsCounts, registry: SmsRegistry, price: float) -> SmsLine:
    day, signature, template = key
    registered = registry.templates.get(template)
    return SmsLine(
        day=day,
        signature=signature,
        template=template,
        title=registered.title if registered else None,
        submitted=counts.submitted,
        delivered=counts.delivered,
        failed=counts.failed,
        failed_by_code=counts.failed_by_code,
        replied=counts.replied,
        clicked=counts.clicked,
        parts=counts.parts,
    ).finish(price)


COLUMNS = (
    ("day", 10), ("signature", 14), ("template", 20), ("submitted", 9), ("delivered", 9), ("failed", 6),
    ("replied", 7), ("clicked", 7), ("parts", 6), ("cost", 10),
)  # fmt: skip


def _money(value: float) -> str:
    """Two decimals, rounded half up as a bill is (0.495 is 0.50, not the float's 0.49)."""
    return f"{Decimal(str(value)).quantize(Decimal('0.01'), ROUND_HALF_UP):,}"


def _width(text: str) -> int:
    """Columns a terminal gives `text`: a CJK character takes two."""
    return sum(2 if ord(ch) >= 0x1100 else 1 for ch in text)


def _cells(cells: list[str]) -> str:
    out = []
    for i, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True)):
        pad = " " * max(0, width - _width(cell))
        out.append(cell + pad if i < 3 else pad + cell)
    return " ".join(out).rstrip()


def report_lines(report: SmsReport) -> list[str]:
    """The report as a readable table (a row per day, signature and template; its failures by
    code under it), then the totals."""
    local = ZoneInfo(report.timezone)
    lines = [
        f"SMS {report.start.astimezone(local):%Y-%m-%d %H:%M} to {report.end.astimezone(local):%Y-%m-%d %H:%M} "
        f"({report.timezone}), {report.price_per_part:g} {report.currency} a part",
        _cells([name for name, _ in COLUMNS]),
    ]

    def row(day: str, signature: str, template: str, f: SmsFigures) -> None:
        cells = [day, signature or "-", template, *(str(n) for n in (f.submitted, f.delivered, f.failed))]
        lines.append(_cells([*cells, str(f.replied), str(f.clicked), str(f.parts), _money(f.cost)]))
        if f.failed_by_code:
            lines.append("  failed: " + ", ".join(f"{code} {n}" for code, n in f.failed_by_code.items()))

    for line in report.lines:
        row(line.day, line.signature, line.template, line)
    row("total", "", "", report.totals)
    return lines
