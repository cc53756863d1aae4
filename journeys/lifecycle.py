"""`journeys lifecycle report --month YYYY-MM [--json]`: the lifecycle report (store/lifecycle.py)
as text or JSON, the same as `GET /lifecycle/report`."""

from __future__ import annotations

from datetime import datetime

from core.lifecycle import STAGES, TITLES, LifecycleTable
from store.db import Store
from store.lifecycle import LifecycleReport, report


def read_report(store: Store, month: str, zone: str, table: LifecycleTable, now: datetime) -> LifecycleReport:
    """The month's report; ValueError names a month that cannot be read."""
    with store.transaction() as session:
        return report(session, month, zone, table, now)


def report_json(found: LifecycleReport) -> str:
    return found.model_dump_json(indent=2, by_alias=True)


def _short(stage: str) -> str:
    return stage.replace("_", " ")


def report_lines(found: LifecycleReport) -> list[str]:
    """The report as a CRM team reads it: the stages, then the matrix (rows: the stage at the
    start; columns: at the end), then the moves."""
    lines = [
        f"客户生命周期 {found.month} ({found.zone}): {found.start.isoformat()} .. {found.end.isoformat()}",
        f"customers: {found.customers}",
        "",
        f"{'stage':<12} {'':<8} {'start':>7} {'end':>7}",
    ]
    for count in found.stages:
        lines.append(f"{count.stage:<12} {count.title:<8} {count.start:>7} {count.end:>7}")
    lines += ["", "from \\ to    " + " ".join(f"{_short(s)[:10]:>10}" for s in STAGES)]
    for source in STAGES:
        lines.append(f"{_short(source)[:12]:<12} " + " ".join(f"{found.matrix[source][s]:>10}" for s in STAGES))
    lines += [
        "",
        f"正向迁移 forward: {found.forward}   负向迁移 backward: {found.backward}   "
        f"sideways: {found.sideways}   unchanged: {found.unchanged}",
    ]
    for move in found.migrations:
        lines.append(
            f"  {move.source} ({TITLES[move.source]}) -> {move.to} ({TITLES[move.to]}): {move.count}  {move.direction}"
        )
    return lines
