"""Generated order exports shaped like the real ones (淘宝 下载订单报表), with what they must give
once imported: each buyer's purchases, written down here from the generator's own choices, not
read back through the engine's code. `python -m tests.data.order_exports N FILE` writes one.

What a real export brings along, and so does this: the report's full column set, `="..."` around
order ids (Excel kept from turning them into 1.2E+18), an apostrophe before phone numbers, masked
phones (138****5678), full-width digits, commas inside quoted titles and addresses, exact duplicate
rows, and bad rows of every kind a shop meets (an amount in words, a time that is not one, no
buyer, an unknown status, an order id mangled by a spreadsheet, a stray comma).
"""

from __future__ import annotations

import csv
import random
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")

#: The columns of 淘宝's 订单报表 (卖家中心 → 已卖出的宝贝 → 批量导出), in its order.
TAOBAO_COLUMNS = [
    "订单编号", "买家会员名", "买家支付宝账号", "买家应付货款", "买家应付邮费", "买家支付积分", "总金额", "返点积分",
    "买家实际支付金额", "买家实际支付积分", "订单状态", "买家留言", "收货人姓名", "收货地址", "运送方式", "联系电话",
    "联系手机", "订单创建时间", "订单付款时间", "宝贝标题", "宝贝种类", "物流单号", "物流公司", "订单备注",
    "宝贝总数量", "店铺Id", "店铺名称", "订单关闭原因", "卖家服务费", "买家服务费", "发票抬头", "是否手机订单",
    "分阶段订单信息", "特权订金订单id", "是否上传合同照片", "是否上传小票", "是否代付", "定金排名", "修改后的sku",
    "修改后的收货地址", "异常信息", "天猫卡券抵扣", "集分宝抵扣", "是否是O2O交易", "退款金额", "预约门店",
    "确认收货时间", "商家编码",
]  # fmt: skip

PROVINCES = [
    ("浙江省", "杭州市"),
    ("广东省", "深圳市"),
    ("上海市", "上海市"),
    ("四川省", "成都市"),
    ("江苏省", "南京市"),
]
PRODUCTS = [
    ("FC-30", "玻尿酸保湿面霜,50ml 补水", 129),
    ("VC-90", "维生素C片 90粒 (3个月装)", 88),
    ("TEA-01", "明前龙井 250g", 300),
]
SURNAMES = "王李张刘陈杨黄赵周吴"
#: 订单状态 and how often each comes.
STATUSES = [
    ("交易成功", 60), ("卖家已发货，等待买家确认", 12), ("买家已付款，等待卖家发货", 8), ("等待买家付款", 6),
    ("交易关闭", 14),
]  # fmt: skip
BAD_KINDS = ("amount", "time", "buyer", "status", "mangled", "cells")


@dataclass
class Expected:
    """What importing the export must give."""

    #: Each buyer's purchases: (first payment, amount, refunded).
    purchases: dict[str, list[tuple[datetime, float, bool]]] = field(default_factory=dict)
    orders: int = 0
    bad_rows: int = 0
    duplicates: int = 0
    masked: int = 0
    #: Each order's status as the engine names it.
    statuses: dict[str, str] = field(default_factory=dict)
    #: Buyers and the phone their record must hold (E.164), where the export gives one unmasked.
    phones: dict[str, str] = field(default_factory=dict)
    #: The buyers of the good rows: the customers it makes.
    buyers: set[str] = field(default_factory=set)
    rows: int = 0


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in text)


def _time(moment: datetime, rng: random.Random) -> str:
    local = moment.astimezone(SHANGHAI)
    return local.strftime("%Y-%m-%d %H:%M:%S") if rng.random() < 0.8 else local.strftime("%Y/%m/%d %H:%M")


def taobao_export(
    rows: int, *, seed: int = 26, now: datetime, buyers: int | None = None
) -> tuple[list[list[str]], Expected]:
    """`rows` lines of a Taobao order report (bad rows and duplicates among them) of orders placed
    in the 400 days before `now`, and what importing them gives."""
    expected = Expected()
    return list(taobao_rows(rows, expected, seed=seed, now=now, buyers=buyers)), expected


def taobao_rows(
    rows: int, expected: Expected, *, seed: int = 26, now: datetime, buyers: int | None = None
) -> Iterator[list[str]]:
    """`taobao_export`'s lines one at a time (a million of them need not be held), `expected`
    filled in as they go."""
    rng = random.Random(seed)
    buyers = buyers or max(1, rows // 4)
    recent: deque[list[str]] = deque(maxlen=1000)  # good rows lately, which duplicates repeat
    written = 0
    phones = {f"买家{i:06d}": f"13{rng.randrange(5, 10)}{rng.randrange(10**8):08d}" for i in range(buyers)}
    order_number = 3_000_000_000_000_000_000 + seed * 10**12
    statuses = [s for s, w in STATUSES for _ in range(w)]
    while written < rows:
        written += 1
        expected.rows = written
        roll = rng.random()
        if recent and roll < 0.01:  # the same row again
            yield list(rng.choice(recent))
            expected.duplicates += 1
            continue
        order_number += rng.randrange(1, 1000)
        buyer = f"买家{rng.randrange(buyers):06d}"
        created = now - timedelta(days=rng.uniform(0, 400), seconds=rng.randrange(86400))
        created = created.replace(microsecond=0, second=0)
        status = rng.choice(statuses)
        paid = created + timedelta(minutes=rng.randrange(1, 90)) if status != "等待买家付款" else None
        if status == "交易关闭" and rng.random() < 0.5:
            paid = None  # closed before payment
        sku, title, price = rng.choice(PRODUCTS)
        qty = rng.randrange(1, 4)
        amount = price * qty - rng.choice((0, 0, 10))
        confirmed = paid + timedelta(days=rng.randrange(3, 12)) if status == "交易成功" and paid else None
        province, city = rng.choice(PROVINCES)
        phone = phones[buyer]
        shown_phone = f"'{phone}" if rng.random() < 0.7 else f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}"
        masked = rng.random() < 0.05
        if masked:
            shown_phone = f"{phone[:3]}****{phone[7:]}"
        order_id = str(order_number)
        shown_id = f'="{order_id}"' if rng.random() < 0.5 else order_id
        shown_amount = f"{amount:.2f}"
        if rng.random() < 0.05:
            shown_id, shown_amount = _fullwidth(order_id), _fullwidth(shown_amount)
        row = dict.fromkeys(TAOBAO_COLUMNS, "")
        row.update({
            "订单编号": shown_id, "买家会员名": buyer, "买家支付宝账号": "**", "买家应付货款": f"{price * qty:.2f}",
            "买家应付邮费": "0.00", "总金额": f"{price * qty:.2f}", "买家实际支付金额": shown_amount if paid else "0.00",
            "订单状态": status, "收货人姓名": SURNAMES[int(buyer[-1])] + "先生", "收货地址": f"{province} {city} 西湖区 文三路{rng.randrange(1, 999)}号, 3幢",
            "运送方式": "快递", "联系手机": shown_phone, "订单创建时间": _time(created, rng),
            "订单付款时间": _time(paid, rng) if paid else "", "宝贝标题": title, "宝贝种类": "1",
            "宝贝总数量": _fullwidth(str(qty)) if rng.random() < 0.05 else str(qty), "店铺名称": "小店",
            "确认收货时间": _time(confirmed, rng) if confirmed else "", "商家编码": sku,
            "退款金额": shown_amount if status == "交易关闭" and paid else "0.00", "是否手机订单": "手机订单",
        })  # fmt: skip
        if rng.random() < 0.012:  # a bad row: skipped, and listed
            kind = rng.choice(BAD_KINDS)
            if kind == "amount":
                row["买家实际支付金额"] = "一百元" if paid else row["买家实际支付金额"]
                row["买家应付货款"] = row["总金额"] = "12元"
            elif kind == "time":
                row["订单创建时间"] = "昨天下午"
            elif kind == "buyer":
                row["买家会员名"] = ""
            elif kind == "status":
                row["订单状态"] = "退款中(买家申请)"
            elif kind == "mangled":
                row["订单编号"] = "3.00000E+18"
            yield [row[c] for c in TAOBAO_COLUMNS] + (["多出来的", "格子"] if kind == "cells" else [])
            expected.bad_rows += 1
            continue
        line = [row[c] for c in TAOBAO_COLUMNS]
        recent.append(line)
        yield line
        expected.orders += 1
        expected.buyers.add(buyer)
        expected.masked += masked
        if not masked:
            expected.phones[buyer] = f"+86{phone}"  # a buyer has one number, however it is written
        expected.statuses[order_id] = {
            "交易成功": "confirmed", "卖家已发货，等待买家确认": "shipped", "买家已付款，等待卖家发货": "paid",
            "等待买家付款": "created", "交易关闭": "refunded" if paid else "closed",
        }[status]  # fmt: skip
        if paid is not None:
            expected.purchases.setdefault(buyer, []).append((paid, float(amount), status == "交易关闭"))


def write_csv(path: Path, lines: Iterable[list[str]], *, encoding: str = "utf-8-sig") -> Path:
    """The report as a file: Taobao writes UTF-8 with a BOM; saved again by Excel on a Chinese
    Windows it becomes GBK (`encoding="gbk"`)."""
    with path.open("w", encoding=encoding, newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(TAOBAO_COLUMNS)
        writer.writerows(lines)
    return path


if __name__ == "__main__":
    count, out = int(sys.argv[1]), Path(sys.argv[2])
    write_csv(out, taobao_rows(count, Expected(), now=datetime.now(SHANGHAI)))
    print(f"wrote {count:,} rows to {out}")
