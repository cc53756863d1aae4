"""`journeys points show|adjust|overview` and `journeys import points FILE.csv` (积分导入): the CLI
works on the store directly, as `journeys products` and `journeys import orders` do, through the
same operations as the API (activities/points.py).

**An import** is history (a backfill): its entries are of kind `import` and write no points.earned
event. The file is CSV with a header: `customer_id` and `points` (a whole number, positive or
negative, full-width digits allowed), and optionally `reason`, `at` (when they count; default:
the import's time), `expires_at` (default: by loyalty.yaml's expiry from `at`; never without it)
and `id`. Times are `2026-11-11 20:05:00` or ISO 8601; without an offset they are in loyalty.yaml's
zone. It is UTF-8 (with or without a BOM) or GBK, read as `journeys products import` reads its files.
A row's source is `import:<id>`, or `import:<the file's sha256, 16 hex digits>:<line>` without an
id, so importing the same file again adds nothing. A bad row is skipped and listed as
`FILE:LINE: column: problem`; the good ones are written in one transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from activities.points import write_imported
from core.loyalty import Loyalty
from core.records import EARLIEST, LATEST, id_problem
from journeys.products import ImportFileError, csv_rows, decode
from rules.points import MAX_ENTRY_POINTS, lot_expiry
from store.db import Store
from store.points import NewEntry

COLUMNS = ("customer_id", "points", "reason", "at", "expires_at", "id")
REQUIRED = ("customer_id", "points")


@dataclass
class PointsImport:
    """What an import found and did."""

    lines: int = 0
    entries: list[NewEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    written: int = 0


class _Problem(Exception):
    def __init__(self, column: str, problem: str):
        super().__init__(problem)
        self.column, self.problem = column, problem


def _plain(cell: str) -> str:
    return unicodedata.normalize("NFKC", cell).strip()


def _points(text: str) -> int:
    plain = _plain(text).replace("＋", "+")
    digits = plain.lstrip("+-")
    if not digits.isascii() or not digits.isdigit() or len(digits) > 10:
        raise _Problem("points", f"{text!r} is not a whole number of points")
    value = int(plain)
    if value == 0 or abs(value) > MAX_ENTRY_POINTS:
        raise _Problem("points", f"{text!r}: points must not be 0, and at most {MAX_ENTRY_POINTS:,} either way")
    return value


def _time(text: str, column: str, zone: str) -> datetime:
    plain = _plain(text)
    try:
        moment = datetime.fromisoformat(plain)
    except ValueError:
        raise _Problem(column, f"{text!r} is not a time like 2026-11-11 20:05:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    if not EARLIEST <= moment < LATEST:
        raise _Problem(column, f"{text!r} is outside {EARLIEST.year} to {LATEST.year - 1}")
    return moment


def read_points(text: str, name: str, digest: str, loyalty: Loyalty, now: datetime) -> PointsImport:
    """Entries from CSV text, each bad line listed as `NAME:LINE: column: problem` and skipped."""
    found = PointsImport()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [_plain(cell).lower() for cell in next(reader)]
    except StopIteration:
        raise ImportFileError(f"{name}: the file is empty (a header line is needed)") from None
    except csv.Error as err:
        raise ImportFileError(f"{name}:1: {err}") from None
    columns = {column: header.index(column) for column in COLUMNS if column in header}
    missing = [column for column in REQUIRED if column not in columns]
    if missing:
        raise ImportFileError(
            f"{name}:1: the header has no {', '.join(missing)} column (it has: {', '.join(header) or 'nothing'}; "
            f"columns: {', '.join(COLUMNS)})"
        )
    expiry = loyalty.points.expiry if loyalty.points else None
    seen: dict[tuple[str, str], int] = {}
    for start, row in csv_rows(reader, name, found.problems):
        found.lines += 1

        def cell(column: str, row: list[str] = row) -> str:
            index = columns.get(column)
            return row[index].strip() if index is not None and index < len(row) else ""

        try:
            customer_id = _plain(cell("customer_id"))
            if problem := id_problem(customer_id):
                raise _Problem("customer_id", problem)
            points = _points(cell("points"))
            at = _time(cell("at"), "at", loyalty.zone) if cell("at") else now
            if cell("expires_at"):
                expires_at = _time(cell("expires_at"), "expires_at", loyalty.zone)
            else:
                expires_at = lot_expiry(at, expiry, loyalty.zone) if expiry and points > 0 else None
            row_id = _plain(cell("id"))
            if row_id and (problem := id_problem(row_id)):
                raise _Problem("id", problem)
        except _Problem as bad:
            found.problems.append(f"{name}:{start}: {bad.column}: {bad.problem}")
            continue
        source = f"import:{row_id}" if row_id else f"import:{digest}:{start}"
        if (customer_id, source) in seen:
            found.problems.append(f"{name}:{start}: id: {row_id!r} again (first on line {seen[(customer_id, source)]})")
            continue
        seen[(customer_id, source)] = start
        found.entries.append(
            NewEntry(
                customer_id=customer_id,
                kind="import",
                points=points,
                reason=cell("reason") or f"imported from {Path(name).name}",
                source=source,
                at=at,
                expires_at=expires_at if points > 0 else None,
            )
        )
    return found


def import_points_file(
    store: Store, path: Path, loyalty: Loyalty, now: datetime, *, dry_run: bool = False
) -> PointsImport:
    """Read `path` and write its good rows in one transaction (none with `dry_run`)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ImportFileError(f"{path}: {err.strerror or err}") from None
    digest = hashlib.sha256(raw).hexdigest()[:16]
    found = read_points(decode(raw, str(path)), str(path), digest, loyalty, now)
    if found.entries and not dry_run:
        with store.transaction() as session:
            found.written = len(write_imported(session, found.entries, now, loyalty.zone))
    return found
