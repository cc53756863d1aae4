"""`journeys tier`: a customer's member tier (show), an operator's override (set), and the monthly
report (distribution and migration matrix). They work on the store directly, as `journeys
customer` does, with the definitions' loyalty.yaml; activities/tiers.py does the work, the same
as the API's `/customers/{id}/tier` and `/tiers/report`."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, NoReturn

import typer

tier_app = typer.Typer(
    help="Member tiers (VIP体系): show a customer's tier, set it by hand, the monthly report.",
    no_args_is_help=True,
)


def _opened():
    """The settings, the definitions (exit 1 on their problems) and the store's opener."""
    from journeys.cli import _opened_store, _running_definitions, _settings

    settings = _settings()
    return settings, _running_definitions(settings), _opened_store(settings)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@tier_app.command("show")
def tier_show(
    customer_id: Annotated[str, typer.Argument(help="The customer")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """The customer's tier, its card, the window's measures now and the change log (newest first)."""
    from activities import tiers
    from store import queries

    _, definitions, opened = _opened()
    with opened as store, store.transaction() as session:
        try:
            view = tiers.show(session, definitions, customer_id, datetime.now(UTC))
        except tiers.NoTiers as err:
            _fail(str(err))
        if view.tier is None and not view.changes and not queries.known_customer(session, customer_id):
            _fail(f"no customer {customer_id!r}", 1)
    if as_json:
        typer.echo(view.model_dump_json(indent=2, by_alias=True))
        return
    held = f"{view.tier} {view.title}" if view.tier else "no tier"
    typer.echo(f"customer {view.customer_id}  {held}" + ("  (set by an operator)" if view.overridden else ""))
    if view.tier:
        typer.echo(f"  card       since {_when(view.since)}, until {_when(view.until)}")
    typer.echo(f"  window     {view.measures.describe()}; qualifies for {view.qualifies or 'no tier'}")
    typer.echo("  changes" + ("" if view.changes else "    none"))
    for change in view.changes:
        typer.echo(
            f"    {_when(change.at)}  {change.direction:<8} {change.from_tier or '-'} -> {change.to_tier or '-'}  "
            f"by {change.by}: {change.reason}"
        )


def _until(text: str | None) -> date | datetime | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text) if len(text) <= 10 else datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (2027-06-30) or a time with its zone") from None


@tier_app.command("set")
def tier_set(
    customer_id: Annotated[str, typer.Argument(help="The customer")],
    tier: Annotated[str, typer.Argument(help="A configured tier's name, or `none` to remove the tier")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the change log)")],
    until: Annotated[
        str | None,
        typer.Option(help="When the card ends: a date (the start of that day in loyalty.yaml's zone); default a year"),
    ] = None,
    by: Annotated[str, typer.Option(help="Who sets it, for the change log")] = "cli",
) -> None:
    """Set a customer's tier by hand (an override: purchases may still raise it, nothing lowers it
    before its end), writing member.tier_changed when the tier changes."""
    from activities import tiers
    from activities.engine_events import write_engine_events
    from store import queries
    from store import tiers as tier_store

    ends = _until(until)
    _, definitions, opened = _opened()
    now = datetime.now(UTC)
    with opened as store, store.transaction() as session:
        if tier_store.current(session, customer_id) is None and not queries.known_customer(session, customer_id):
            _fail(f"no customer {customer_id!r}", 1)
        try:
            changed = tiers.override(
                session, definitions, customer_id, None if tier == "none" else tier,
                reason=reason, by=by, until=ends, now=now,
            )  # fmt: skip
        except (tiers.NoTiers, tiers.OverrideRefused) as err:
            _fail(str(err))
        write_engine_events(session, [changed] if changed else [], definitions, now)
        view = tiers.show(session, definitions, customer_id, now)
    held = f"{view.tier} until {_when(view.until)}" if view.tier else "no tier"
    moved = f" ({changed.data['direction']}: member.tier_changed written)" if changed else ""
    typer.echo(f"customer {customer_id}: {held}{moved}")


@tier_app.command("report")
def tier_report(
    month: Annotated[str | None, typer.Option(help="YYYY-MM; default the current month")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """The tier distribution at the month's end (now, for the current month) and the month's
    migration matrix: from -> to counts, 正向 (upward) and 负向 (downward) totals."""
    from zoneinfo import ZoneInfo

    from activities import tiers

    _, definitions, opened = _opened()
    now = datetime.now(UTC)
    month = month or now.astimezone(ZoneInfo(definitions.loyalty.zone)).strftime("%Y-%m")
    with opened as store, store.transaction() as session:
        try:
            report = tiers.report(session, definitions, month, now)
        except (tiers.NoTiers, ValueError) as err:
            _fail(str(err))
    if as_json:
        typer.echo(report.model_dump_json(indent=2, by_alias=True))
        return
    typer.echo(f"tiers {report.month} ({report.zone})")
    shown = report.at_end or report.now
    assert shown is not None
    label = "at the month's end" if report.at_end else f"now ({_when(shown.at)})"
    typer.echo(f"  {label}: " + ", ".join(f"{name} {count}" for name, count in shown.counts.items()))
    typer.echo(f"  正向 (upward) {report.upward}, 负向 (downward) {report.downward}, renewed {report.renewed}")
    for move in report.matrix:
        typer.echo(f"    {move.from_tier or '-':<10} -> {move.to_tier or '-':<10} {move.count}")
