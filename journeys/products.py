"""Products from a CSV file into the catalogue: `journeys products import FILE.csv`, and
`import_products_file` for any other command that wants it.

The file is UTF-8 (with or without a BOM) or GBK/GB18030 (what Excel on a Chinese Windows saves),
told apart by whether it reads as UTF-8 (a file that starts with a UTF-8 BOM is UTF-8: a byte
that is not is reported by its line). Its header names the columns, in English or as a shop's
export names them (`HEADERS`): sku (商家编码), title (商品名称), category (类目), price (价格),
tags (标签), cycle_days (回购周期); sku, title and category are required. Numbers may be written
with full-width digits (`３０`, `１２９．００`), a price with ¥/￥ or 元, days with 天. Tags are
separated by `|`, `;`, `、` or a comma.

A bad line is skipped and listed as `FILE:LINE: column: problem`; the good lines are written in one
transaction, so either all of them are in the catalogue or (an error of the database) none.
Importing the same file again changes nothing (store.products.save_products is idempotent).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from core.products import Product, parse_cycle_days, parse_price, plain_text
from store.db import Store
from store.products import Saved, save_products

#: Column names a file may use for each field (compared after NFKC and lower-casing).
HEADERS: dict[str, tuple[str, ...]] = {
    "sku": ("sku", "商家编码", "商品编码", "货号"),
    "title": ("title", "商品名称", "宝贝标题", "名称", "标题"),
    "category": ("category", "类目", "分类", "品类"),
    "price": ("price", "价格", "售价", "单价"),
    "tags": ("tags", "标签"),
    "cycle_days": ("cycle_days", "回购周期", "消耗周期", "使用周期"),
}
REQUIRED = ("sku", "title", "category")
_TAG_SEPARATORS = re.compile(r"[|;；、,，]")


class ImportFileError(ValueError):
    """The file as a whole cannot be read (no header, a required column missing, not text)."""


@dataclass
class ProductsImport:
    """What an import found and did."""

    lines: int = 0
    products: list[Product] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    saved: Saved | None = None


def decode(raw: bytes, name: str) -> str:
    """The file's text: UTF-8 (a BOM dropped), else GB18030 (a superset of GBK)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 by its BOM: one bad cell, not a GBK file
            line = raw.count(b"\n", 0, err.start) + 1
            raise ImportFileError(
                f"{name}:{line}: not UTF-8 text (byte {err.start}), though the file starts with a UTF-8 BOM: "
                "save the whole file as UTF-8"
            ) from None
    try:
        return raw.decode("gb18030")
    except UnicodeDecodeError as err:
        raise ImportFileError(f"{name}: neither UTF-8 nor GBK text (byte {err.start})") from None


def _columns(header: list[str], name: str) -> dict[str, int]:
    names = {alias.lower(): wanted for wanted, aliases in HEADERS.items() for alias in aliases}
    found: dict[str, int] = {}
    for index, cell in enumerate(header):
        wanted = names.get(plain_text(cell).lower())
        if wanted is not None and wanted not in found:
            found[wanted] = index
    missing = [column for column in REQUIRED if column not in found]
    if missing:
        raise ImportFileError(
            f"{name}:1: the header has no {', '.join(missing)} column (it has: {', '.join(header) or 'nothing'}; "
            f"accepted names: " + "; ".join(f"{k}: {'/'.join(v)}" for k, v in HEADERS.items() if k in missing) + ")"
        )
    return found


def csv_rows(reader, name: str, problems: list[str]) -> Iterator[tuple[int, list[str]]]:
    """The rows after the header of a `csv.reader`, each with the line it starts on; blank lines
    skipped, a row the reader cannot read listed in `problems` as `NAME:LINE: problem` and skipped."""
    line = reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            problems.append(f"{name}:{start}: {err}")
            line = reader.line_num
            continue
        line = reader.line_num
        if any(cell.strip() for cell in row):
            yield start, row


def read_products(text: str, name: str) -> ProductsImport:
    """Products from CSV text, each bad line listed as `NAME:LINE: column: problem` and skipped."""
    found = ProductsImport()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError(f"{name}: the file is empty (a header line is needed)") from None
    except csv.Error as err:
        raise ImportFileError(f"{name}:1: {err}") from None
    columns = _columns(header, name)
    seen: dict[str, int] = {}
    for start, row in csv_rows(reader, name, found.problems):
        found.lines += 1

        def cell(column: str, row: list[str] = row) -> str:
            index = columns.get(column)
            return row[index] if index is not None and index < len(row) else ""

        try:
            price = parse_price(cell("price"))
        except ValueError as err:
            found.problems.append(f"{name}:{start}: price: {err}")
            continue
        try:
            cycle_days = parse_cycle_days(cell("cycle_days"))
        except ValueError as err:
            found.problems.append(f"{name}:{start}: cycle_days: {err}")
            continue
        tags = [tag for tag in _TAG_SEPARATORS.split(plain_text(cell("tags"))) if tag.strip()]
        try:
            product = Product(
                sku=cell("sku"),  # read by core.products.normalise_sku, as everywhere
                title=cell("title").strip(),
                category=cell("category").strip(),
                price=price,
                tags=tags,
                cycle_days=cycle_days,
            )
        except ValidationError as err:
            for problem in err.errors(include_input=False):
                where = ".".join(str(p) for p in problem["loc"]) or "line"
                found.problems.append(f"{name}:{start}: {where}: {problem['msg']}")
            continue
        if product.sku in seen:
            found.problems.append(
                f"{name}:{start}: sku: {product.sku!r} again (first on line {seen[product.sku]}); this line is skipped"
            )
            continue
        seen[product.sku] = start
        found.products.append(product)
    return found


def import_products_file(
    store: Store, path: Path, *, dry_run: bool = False, now: datetime | None = None
) -> ProductsImport:
    """Read `path` and save its good lines in one transaction (none with `dry_run`)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ImportFileError(f"{path}: {err.strerror or err}") from None
    found = read_products(decode(raw, str(path)), str(path))
    if found.products and not dry_run:
        at = now or datetime.now(UTC)
        with store.transaction() as session:
            found.saved = save_products(session, found.products, at)
    return found
