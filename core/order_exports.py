"""A platform's order export (淘宝 "下载订单报表", 京东 order export, or any CSV with a column map)
read into customers and order events: pure, no store, so the CLI, the API's import job and the
tests read a file the same way (store/imports.py writes what comes out; triggers/imports.py runs
the two together).

What a file becomes:

- **the encoding** is found, not asked: a UTF-8 (or UTF-16) byte-order mark says it; else the whole
  file is tried as UTF-8, and one that is not is read as GB18030 (which GBK and GB2312 are part
  of: Excel on a Chinese Windows saves CSV so). Bytes that are neither make their row a problem;
- **a cell** loses what spreadsheets were kept from mangling with: `="..."` around it, a leading
  apostrophe or tab, surrounding spaces. Ids, amounts, times, counts and phone numbers are read
  with full-width digits and punctuation made ASCII (NFKC: `１２９．００` is 129.00); titles and
  names are kept as written;
- **each row** (an item row, for a format with one row per item) becomes, for its order, the
  events its status and times say: `order.created` at the creation time (its amount, its items),
  `order.paid` at the payment time (the amount the buyer actually paid), then `order.shipped`,
  `order.confirmed`, `order.closed`/`order.cancelled` (closed before payment) or
  `order.refunded` (closed after payment), at their own column's time when the export has one,
  else at the latest time the row knows (the event's data says `time_estimated`). Event ids are
  `import:ORDER:TYPE`, so importing a file again adds nothing (the log refuses an id it holds);
- **the customer** is the buyer (`customer_id`), with the receiver's name and mobile number and,
  from a `province city ...` address, the traits `province` and `city`; the phone is stored as
  every customer's is (core.contacts `canonical_contacts`); a masked one (`138****8000`) is none;
- **a problem** is `file:line: column: problem` (`ImportProblem`); a row with one is skipped and
  listed, the rest of the file goes on. A problem with the file itself (no such column, no header)
  stops it before anything is read (`ExportError`).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple
from zoneinfo import ZoneInfo

from core.amounts import amount_number
from core.contacts import canonical_contacts
from core.records import DEFAULT_TIMEZONE, EARLIEST, LATEST, MAX_ID_BYTES, Customer, Event, id_problem

#: The fields a row is read into; a format names the columns that hold them.
FIELDS: dict[str, str] = {
    "order_id": "the order's id (required)",
    "customer_id": "the buyer's id, e.g. the Taobao member name (required)",
    "created_at": "when the order was created (required)",
    "paid_at": "when it was paid; empty: not paid",
    "shipped_at": "when it was shipped",
    "confirmed_at": "when the buyer confirmed receipt (the trade succeeded)",
    "closed_at": "when it was closed or cancelled",
    "status": "the order's status, in the platform's words or created/paid/shipped/delivered/confirmed/"
    "cancelled/closed/refunded",
    "amount": "what the buyer actually paid",
    "total": "the order's total before payment (default: amount)",
    "refund": "the amount refunded",
    "name": "the receiver's name",
    "phone": "the receiver's mobile number",
    "address": "the receiver's address, `province city district street`",
    "title": "the item's (or the items') title",
    "sku": "the merchant's code of the item (商家编码)",
    "qty": "how many pieces",
    "kinds": "how many kinds of item the order holds",
}
REQUIRED = ("order_id", "customer_id", "created_at")
#: Fields read after NFKC (full-width digits and punctuation made ASCII).
_NUMERIC = frozenset({"order_id", "created_at", "paid_at", "shipped_at", "confirmed_at", "closed_at", "amount",
                      "total", "refund", "phone", "qty", "kinds", "sku"})  # fmt: skip
_TIMES = ("created_at", "paid_at", "shipped_at", "confirmed_at", "closed_at")

#: Where an order has got to, as the engine's order events tell it (core/orders.py STAGE); `closed`
#: becomes `order.refunded` when the order was paid, `cancelled` likewise.
STAGES = ("created", "paid", "shipped", "delivered", "confirmed", "closed", "cancelled", "refunded")


def _status_key(text: str) -> str:
    """A status as compared: NFKC (full-width commas and brackets made ASCII), no spaces."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


#: 淘宝's 订单状态 values (old and new wordings), 京东's, and the engine's own names.
TAOBAO_STATUSES = {
    "等待买家付款": "created",
    "买家已付款，等待卖家发货": "paid",
    "等待卖家发货，即：买家已付款": "paid",
    "卖家部分发货": "paid",
    "卖家已发货，等待买家确认": "shipped",
    "等待买家确认收货，即：卖家已发货": "shipped",
    "买家已签收": "delivered",
    "交易成功": "confirmed",
    "交易关闭": "closed",
    "付款以前，卖家或买家主动关闭交易": "closed",
    "交易被淘宝关闭": "closed",
}
JD_STATUSES = {
    "等待付款": "created",
    "等待付款确认": "created",
    "等待出库": "paid",
    "等待发货": "paid",
    "锁定": "paid",
    "暂停": "paid",
    "等待确认收货": "shipped",
    "已妥投": "delivered",
    "完成": "confirmed",
    "已完成": "confirmed",
    "已取消": "cancelled",
    "取消": "cancelled",
    "订单取消": "cancelled",
}
ENGINE_STATUSES = {stage: stage for stage in STAGES}


@dataclass(frozen=True)
class ExportFormat:
    """A platform's export: which columns hold which field (the first header found of each
    field's names), what its statuses mean, and whether it has a row per order or per item."""

    name: str
    columns: dict[str, tuple[str, ...]]
    statuses: dict[str, str]
    rows_per_item: bool = False
    #: `statuses` by their compared form (`_status_key`).
    statuses_by_key: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "statuses_by_key", {_status_key(k): v for k, v in self.statuses.items()})


FORMATS: dict[str, ExportFormat] = {
    # 淘宝/天猫 卖家中心 → 已卖出的宝贝 → 批量导出 → 下载订单报表: one row per order.
    "taobao": ExportFormat(
        name="taobao",
        columns={
            "order_id": ("订单编号",),
            "customer_id": ("买家会员名", "买家昵称"),
            "amount": ("买家实际支付金额",),
            "total": ("总金额", "买家应付货款"),
            "refund": ("退款金额",),
            "status": ("订单状态",),
            "created_at": ("订单创建时间",),
            "paid_at": ("订单付款时间",),
            "shipped_at": ("发货时间",),
            "confirmed_at": ("确认收货时间",),
            "closed_at": ("订单关闭时间",),
            "name": ("收货人姓名",),
            "phone": ("联系手机", "联系电话"),
            "address": ("收货地址",),
            "title": ("宝贝标题",),
            "sku": ("商家编码",),
            "kinds": ("宝贝种类",),
            "qty": ("宝贝总数量",),
        },
        statuses={**TAOBAO_STATUSES, **ENGINE_STATUSES},
    ),
    # 京东 商家后台 → 订单管理 → 订单导出: one row per item, the order's fields repeated.
    "jd": ExportFormat(
        name="jd",
        columns={
            "order_id": ("订单号",),
            "customer_id": ("下单帐号", "下单账号", "客户账号"),
            "amount": ("应付金额", "实付金额"),
            "total": ("订单金额",),
            "status": ("订单状态",),
            "created_at": ("下单时间",),
            "paid_at": ("付款确认时间", "支付时间"),
            "shipped_at": ("出库时间",),
            "confirmed_at": ("订单完成时间", "完成时间"),
            "closed_at": ("订单取消时间",),
            "name": ("客户姓名", "收货人"),
            "phone": ("联系电话", "收货人手机"),
            "address": ("客户地址", "收货地址"),
            "title": ("商品名称",),
            "sku": ("商家SKU", "货号", "商品ID"),
            "qty": ("订购数量", "商品数量"),
        },
        statuses={**JD_STATUSES, **ENGINE_STATUSES},
        rows_per_item=True,
    ),
    # Any CSV: columns named as the fields, or mapped with `--map column=field`.
    "generic": ExportFormat(
        name="generic",
        columns={name: (name,) for name in FIELDS},
        statuses={**ENGINE_STATUSES, **TAOBAO_STATUSES, **JD_STATUSES},
        rows_per_item=True,
    ),
}


class ImportProblem(NamedTuple):
    """A row skipped, and why: shown as `file:line: column: problem`."""

    line: int
    column: str
    problem: str

    def text(self, file: str) -> str:
        return f"{file}:{self.line}: {self.column}: {self.problem}"


class ExportError(ValueError):
    """The file cannot be read at all (no header, a required column missing, a bad --map): nothing
    was imported. Its message is `file:line: column: problem` too."""


@dataclass
class ParsedOrder:
    """One order of the file: its first line, its buyer, and its events."""

    line: int
    order_id: str
    customer: Customer
    events: list[Event]


@dataclass
class ReadTally:
    """What reading has got through, for progress and the summary."""

    bytes_total: int = 0
    bytes_read: int = 0
    rows: int = 0
    orders: int = 0
    duplicates: int = 0
    masked_phones: int = 0
    encoding: str = ""


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """`--map column=field ...` as {field: column}; ExportError naming a pair that is not one."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, name = pair.rpartition("=")
        column, name = column.strip(), name.strip()
        if not sep or not column or not name:
            raise ExportError(f"--map {pair}: give it as COLUMN=FIELD, e.g. 会员名=customer_id")
        if name not in FIELDS:
            raise ExportError(f"--map {pair}: {name!r} is not a field; fields: {', '.join(FIELDS)}")
        mapping[name] = column
    return mapping


def detect_encoding(path: Path) -> str:
    """The file's encoding: by its byte-order mark, else UTF-8 when every byte of it reads as
    UTF-8, else GB18030 (GBK's superset)."""
    with path.open("rb") as raw:
        head = raw.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        raw.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := raw.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "gb18030"
    return "utf-8"


class _Counted(io.RawIOBase):
    """A binary file that counts the bytes read from it (the progress of a read)."""

    def __init__(self, raw: BinaryIO, tally: ReadTally):
        self.raw, self.tally = raw, tally

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.raw.readinto(buffer) or 0
        self.tally.bytes_read += count
        return count


_SPREADSHEET = re.compile(r'^="(.*)"$', re.S)
_MANGLED = re.compile(r"^\d(?:\.\d+)?E\+\d+$", re.I)
_TIME = re.compile(
    r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,6}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)
#: An amount as exports write it: digits with an optional decimal part, thousands separated by
#: commas or not, a ¥ before (full-width ￥ is ¥ after NFKC); anything else is no amount.
_AMOUNT = re.compile(r"^¥?\s*([0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?)$")


def clean(cell: str) -> str:
    """A cell without what spreadsheets were kept from mangling with: `="..."`, a leading
    apostrophe or tab, surrounding spaces."""
    text = cell.strip()
    if match := _SPREADSHEET.match(text):
        text = match.group(1).strip()
    return text.lstrip("'\t").strip()


class _RowProblem(Exception):
    def __init__(self, column: str, problem: str):
        super().__init__(problem)
        self.column, self.problem = column, problem


class ExportReader:
    """Reads one file of one format into `ParsedOrder`s and `ImportProblem`s, in file order.

    `mapping` ({field: column}) overrides or adds to the format's columns; `timezone` is where the
    file's times without an offset were written (the shop's); `default_region` reads phone numbers
    without a country code."""

    def __init__(
        self,
        path: Path,
        export: ExportFormat,
        mapping: dict[str, str] | None = None,
        *,
        timezone: str,
        default_region: str,
        name: str | None = None,
    ):
        self.path = path
        self.export = export
        self.mapping = mapping or {}
        self.zone = ZoneInfo(timezone)
        self.default_region = default_region
        self.name = name or path.name
        self.tally = ReadTally(bytes_total=path.stat().st_size)
        #: Each order read so far: its first line, and a hash of that row (a row-per-order
        #: format's exact repeat is a duplicate, counted but not listed).
        self._seen: dict[str, tuple[int, int]] = {}
        self._phones: dict[str, str | None] = {}  # a phone as written -> as stored
        self._stages: dict[str, str | None] = {}  # a status as written -> its stage

    def problem_text(self, problem: ImportProblem) -> str:
        return problem.text(self.name)

    def _columns(self, header: list[str]) -> dict[str, int]:
        """Where each field is in the row, by the header (stripped of spaces and marks)."""
        # Bytes the encoding could not read (lone surrogates) shown as "?": names are echoed.
        names = [clean(h).replace("\ufeff", "").encode("utf-8", "replace").decode() for h in header]
        where: dict[str, int] = {}
        for name, column in self.mapping.items():
            if column not in names:
                raise ExportError(
                    f"{self.name}:1: {column}: --map {column}={name} names no column of the file; "
                    f"its columns: {', '.join(n for n in names if n)}"
                )
            where[name] = names.index(column)
        for name, aliases in self.export.columns.items():
            if name in where:
                continue
            found = next((alias for alias in aliases if alias in names), None)
            if found is not None:
                where[name] = names.index(found)
        missing = [name for name in REQUIRED if name not in where]
        if missing:
            wanted = "; ".join(f"{name} ({' or '.join(self.export.columns.get(name, (name,)))})" for name in missing)
            raise ExportError(
                f"{self.name}:1: header: no column for {wanted} in the {self.export.name} format; "
                f"its columns: {', '.join(n for n in names if n)[:600]}. Map one with --map COLUMN=FIELD"
            )
        self._labels = {name: names[index] for name, index in where.items()}
        return where

    def check_header(self) -> None:
        """Read the header alone: ExportError when the file cannot be imported at all (before
        `POST /imports` answers, so a wrong format is said at once)."""
        with self.path.open("rb") as raw:
            self._header(csv.reader(self._text(raw)))

    def _text(self, raw: BinaryIO) -> io.TextIOWrapper:
        if not self.tally.encoding:
            self.tally.encoding = detect_encoding(self.path)
        counted = io.BufferedReader(_Counted(raw, self.tally), 1 << 20)
        return io.TextIOWrapper(counted, encoding=self.tally.encoding, errors="surrogateescape", newline="")

    def _header(self, rows) -> tuple[dict[str, int], int]:
        try:
            header = next(rows, None)
        except csv.Error as err:
            raise ExportError(f"{self.name}:1: header: not CSV: {err}") from None
        if header is None or not any(cell.strip() for cell in header):
            raise ExportError(f"{self.name}:1: header: the file is empty; the first line must name the columns")
        return self._columns(header), len(header)

    def read(self) -> Iterator[ParsedOrder | ImportProblem]:
        """The file's orders and problems in file order. A format with a row per item gives an
        order once its rows end (they must be together: a row of an order already given is a
        problem)."""
        with self.path.open("rb") as raw:
            self.tally.bytes_read = 0
            rows = csv.reader(self._text(raw))
            where, width = self._header(rows)
            pending: _Pending | None = None
            line = rows.line_num + 1
            while True:
                try:
                    row = next(rows, None)
                except csv.Error as err:
                    yield ImportProblem(line, "row", f"not CSV: {err}")
                    line = rows.line_num + 1
                    continue
                if row is None:
                    break
                start, line = line, rows.line_num + 1
                if not any(cell.strip() for cell in row):
                    continue
                self.tally.rows += 1
                try:
                    parsed = self._row(row, where, width, start)
                except _RowProblem as err:
                    yield ImportProblem(start, err.column, err.problem)
                    continue
                if pending is not None and pending.order_id == parsed["order_id"] and self.export.rows_per_item:
                    if not pending.add_item(parsed):
                        self.tally.duplicates += 1
                    continue
                if pending is not None:
                    yield from pending.finish(self)
                    pending = None
                fingerprint = hash(tuple(row))
                seen = self._seen.get(parsed["order_id"])
                if seen is not None:
                    first, first_row = seen
                    if not self.export.rows_per_item and fingerprint == first_row:
                        self.tally.duplicates += 1
                        continue  # the same row again: a duplicate, nothing to say
                    yield ImportProblem(
                        start, self._labels["order_id"],
                        f"order {parsed['order_id']} was already read at line {first}, and this line differs from it; "
                        + ("an order's item rows must be together" if self.export.rows_per_item else "the first kept"),
                    )  # fmt: skip
                    continue
                self._seen[parsed["order_id"]] = (start, fingerprint)
                pending = _Pending(start, parsed)
                if not self.export.rows_per_item:
                    yield from pending.finish(self)
                    pending = None
            if pending is not None:
                yield from pending.finish(self)

    # -----------------------------------------------------------------------------------------
    # One row

    def _row(self, row: list[str], where: dict[str, int], width: int, line: int) -> dict[str, Any]:
        if len(row) > width and any(cell.strip() for cell in row[width:]):
            raise _RowProblem("row", f"{len(row)} cells where the header has {width} (a comma not in quotes?)")
        raw: dict[str, str] = {}
        for name, index in where.items():
            cell = clean(row[index]) if index < len(row) else ""
            try:
                cell.encode("utf-8")  # the bytes the file's encoding could not read are lone surrogates
            except UnicodeEncodeError:
                raise _RowProblem(self._labels[name], f"bytes that are not {self.tally.encoding} text") from None
            if "\x00" in cell:  # neither database keeps a NUL in text
                raise _RowProblem(self._labels[name], "holds a NUL character")
            if name in _NUMERIC:
                cell = unicodedata.normalize("NFKC", cell).strip()
            raw[name] = cell
        for name in REQUIRED:
            if not raw.get(name):
                raise _RowProblem(self._labels[name], "empty; every row needs it")
        values: dict[str, Any] = {"order_id": self._id(raw, "order_id"), "customer_id": self._id(raw, "customer_id")}
        for name in _TIMES:
            values[name] = self._time(raw, name) if raw.get(name) else None
        for name in ("amount", "total", "refund"):
            values[name] = self._amount(raw, name) if raw.get(name) else None
        for name in ("qty", "kinds"):
            values[name] = self._count(raw, name) if raw.get(name) else None
        status = raw.get("status", "")
        if status:
            stage = self._stages.get(status)
            if stage is None:
                stage = self._stages[status] = self.export.statuses_by_key.get(_status_key(status))
            if stage is None:
                known = ", ".join(k for k in self.export.statuses if not k.isascii())
                raise _RowProblem(self._labels["status"], f"{status!r} is not a status of the {self.export.name} "
                                  f"format ({known}; or {', '.join(STAGES)})")  # fmt: skip
        else:
            stage = "paid" if values["paid_at"] else "created"
        if stage not in ("created", "closed", "cancelled") and values["paid_at"] is None:
            raise _RowProblem(
                self._labels.get("paid_at", "paid_at"),
                f"empty, but the status {status or stage!r} says the order was paid",
            )  # fmt: skip
        values["stage"] = stage
        for name in ("name", "phone", "address", "title", "sku"):
            values[name] = raw.get(name) or None
        return values

    def _id(self, raw: dict[str, str], name: str) -> str:
        value = raw[name]
        if name == "order_id" and _MANGLED.match(value):
            raise _RowProblem(self._labels[name], f"{value!r} was turned into a number by a spreadsheet; export the "
                              "file again and import it without opening it in Excel")  # fmt: skip
        if problem := id_problem(value):
            raise _RowProblem(self._labels[name], problem)
        return value

    def _time(self, raw: dict[str, str], name: str) -> datetime:
        text = raw[name]
        match = _TIME.match(text)
        if not match:
            raise _RowProblem(self._labels[name], f"{text!r} is not a time like 2026-11-11 20:05:00")
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        try:
            moment = datetime(
                int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                int((fraction or "0").ljust(6, "0")),
            )  # fmt: skip
            if offset:
                moment = datetime.fromisoformat(moment.isoformat() + ("+00:00" if offset == "Z" else offset))
            else:
                moment = moment.replace(tzinfo=self.zone)
        except ValueError as err:
            raise _RowProblem(self._labels[name], f"{text!r} is not a real time: {err}") from None
        if not EARLIEST <= moment < LATEST:
            raise _RowProblem(self._labels[name], f"{text!r} is outside {EARLIEST.year} to {LATEST.year}")
        return moment

    def _amount(self, raw: dict[str, str], name: str) -> int | float:
        text = raw[name]
        match = _AMOUNT.match(text)
        number = amount_number(match.group(1).replace(",", "")) if match else None
        if number is None:
            raise _RowProblem(self._labels[name], f"{text!r} is not an amount (digits with an optional decimal part)")
        return number

    def _count(self, raw: dict[str, str], name: str) -> int:
        text = raw[name]
        if not text.isascii() or not text.isdigit() or len(text) > 9:
            raise _RowProblem(self._labels[name], f"{text!r} is not a whole number")
        return int(text)

    # -----------------------------------------------------------------------------------------
    # One order

    def order_of(self, line: int, first: dict[str, Any], items: list[dict[str, Any]]) -> ParsedOrder:
        """The order's buyer and events from its first row (and its items' rows)."""
        order_id, customer_id = first["order_id"], first["customer_id"]
        stage = first["stage"]
        created, paid = first["created_at"], first["paid_at"]
        known = [t for t in (created, paid, first["shipped_at"], first["confirmed_at"]) if t is not None]
        latest = max(known)
        total = first["total"] if first["total"] is not None else first["amount"]
        item_list = [
            {k: v for k, v in (("title", item["title"]), ("sku", item["sku"]), ("qty", item["qty"])) if v is not None}
            for item in items
        ]
        created_data: dict[str, Any] = {"source": f"import:{self.export.name}"}
        if total is not None:
            created_data["amount"] = total
        if any(item_list):
            created_data["items"] = [item for item in item_list if item]
        if first["kinds"] is not None:
            created_data["item_kinds"] = first["kinds"]
        events = [self._event(order_id, customer_id, "order.created", created, created_data)]
        if paid is not None and stage != "created":
            data = {"amount": first["amount"]} if first["amount"] is not None else {}
            events.append(self._event(order_id, customer_id, "order.paid", paid, data))
        following: list[tuple[str, datetime | None]] = []
        # A shipment is written when it is the order's stage, or when the export says when it
        # was; one with no time, on its way to a later stage, would say nothing the status does not.
        if stage == "shipped" or (stage in ("delivered", "confirmed") and first["shipped_at"] is not None):
            following.append(("order.shipped", first["shipped_at"]))
        if stage in ("delivered", "confirmed"):
            following.append((f"order.{stage}", first["confirmed_at"] if stage == "confirmed" else None))
        if stage in ("closed", "cancelled", "refunded"):
            if paid is None:
                following.append((f"order.{'cancelled' if stage == 'cancelled' else 'closed'}", first["closed_at"]))
            else:
                following.append(("order.refunded", first["closed_at"]))
        for kind, at in following:
            data = {} if at is not None else {"time_estimated": True}
            if kind == "order.refunded":
                refund = first["refund"] if first["refund"] else first["amount"]
                if refund:
                    data["amount"] = refund
            moment = at or latest
            latest = max(latest, moment)
            events.append(self._event(order_id, customer_id, kind, moment, data))
        return ParsedOrder(line, order_id, self._customer(line, first), events)

    def _event(self, order_id: str, customer_id: str, kind: str, at: datetime, data: dict[str, Any]) -> Event:
        """An event built without pydantic's checks (a million rows make three million events):
        the reader has checked each part as `Event` would, the ids by `id_problem`, the times
        within EARLIEST and LATEST, the text for NUL and unreadable bytes, the amounts by
        `amount_number`; the time is made UTC here, as `Event` does."""
        return Event.model_construct(
            event_id=import_event_id(order_id, kind), type=kind, occurred_at=at.astimezone(UTC),
            customer_id=customer_id, order_id=order_id, data=data,
        )  # fmt: skip

    def _customer(self, line: int, first: dict[str, Any]) -> Customer:
        phone = first["phone"]
        if phone and "*" in phone:
            self.tally.masked_phones += 1
            phone = None
        traits: dict[str, str] = {}
        parts = (first["address"] or "").split()
        if len(parts) >= 2 and parts[0].endswith(("省", "市", "自治区", "特别行政区")):
            traits["province"], traits["city"] = parts[0], parts[1]
        for name, value, limit in (("name", first["name"], 200), ("phone", phone, 40)):
            if value and len(value) > limit:  # Customer's limits, checked here as it is built unchecked
                raise _RowProblem(self._labels[name], f"at most {limit} characters; this has {len(value)}")
        # Every field given: model_construct would look up each default factory's signature.
        customer = Customer.model_construct(
            customer_id=first["customer_id"], name=first["name"], phone=phone, email=None, birthday=None,
            timezone=DEFAULT_TIMEZONE, locale="zh-CN", region=None, tags=[], unsubscribed=[], blacklisted=False,
            traits=traits,
        )  # fmt: skip
        if not customer.phone:
            return customer
        # A buyer's number comes on each of their orders: read once (every buyer here has the
        # same locale, so the same region reads it).
        stored = self._phones.get(customer.phone)
        if stored is None:
            stored = self._phones[customer.phone] = canonical_contacts(customer, self.default_region).phone
        return customer.model_copy(update={"phone": stored})


class _Pending:
    """An order being read: its first row, and its item rows so far."""

    def __init__(self, line: int, first: dict[str, Any]):
        self.line, self.first, self.items = line, first, [first]
        self.order_id = first["order_id"]
        self.keys = {(first["sku"], first["title"], first["qty"])}

    def add_item(self, row: dict[str, Any]) -> bool:
        """Another item row of the order; False for a row already read (a duplicate)."""
        key = (row["sku"], row["title"], row["qty"])
        if key in self.keys:
            return False
        self.keys.add(key)
        self.items.append(row)
        return True

    def finish(self, reader: ExportReader) -> Iterator[ParsedOrder | ImportProblem]:
        try:
            order = reader.order_of(self.line, self.first, self.items)
        except _RowProblem as err:
            yield ImportProblem(self.line, err.column, err.problem)
            return
        reader.tally.orders += 1
        yield order


def import_event_id(order_id: str, kind: str) -> str:
    """The id of an imported order's event: `import:ORDER:TYPE` (by a hash of the order's id when
    that would be too long), the same on every import of the same order."""
    event_id = f"import:{order_id}:{kind}"
    if len(event_id) <= 200 and len(event_id.encode()) <= MAX_ID_BYTES:
        return event_id
    return f"import:sha1-{hashlib.sha1(order_id.encode()).hexdigest()}:{kind}"
