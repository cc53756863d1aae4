"""Fuzz the real API process: N seeded random requests, and every 5xx or timeout reported.

    python -m bench.fuzz [--requests 10000] [--database sqlite|postgresql] [--seed 22] [--timeout 10]

It starts the engine as deployed (tests.stack: a Temporal dev server, one `journeys worker`,
`journeys api`, each a process of this checkout) over a throwaway database (a SQLite file, or a
schema of its own in JOURNEYS_TEST_DATABASE_URL's PostgreSQL, dropped afterwards). Then it sends
the requests from 8 clients at once, all to 127.0.0.1: events of every type with edge and random
values (times at year 1 and 9999, ids with emoji, bidi controls, NULs, quotes, past the limits),
truncated and random bodies, odd content types, and every route that takes an id or a name,
including DELETE /customers/{id}. A request is a failure if it answers 5xx (503 included: the
store and Temporal are up throughout) or takes longer than --timeout. It prints the counts by
status, each failure, and whether the API's log holds a traceback; it exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from bench.common import Schema
from core.records import EVENT_TYPES, MAX_ID_BYTES, MAX_ID_CHARS
from tests.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 8

ODD_IDS = [
    "c1", "o1", "😀", "\u202e", "o\u202e1", "\u2067x\u2069", "\u200f", "👩\u200d💻", "é", "汉字",
    "😀" * (MAX_ID_BYTES // 4), "😀" * (MAX_ID_BYTES // 4 + 1), "😀" * MAX_ID_CHARS, "x" * MAX_ID_CHARS,
    "x" * (MAX_ID_CHARS + 1), "", " ", "a\x00b", "o'1", 'o"1', "o\\1", "%", "../x", "a/b", "\ufeff", "\ud800",
]  # fmt: skip
ODD_TIMES = [
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00-14:00", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59+14:00",
    "1999-12-31T23:59:59Z", "2000-01-01T00:00:00Z", "2099-12-31T23:59:59.999999Z", "2100-01-01T00:00:00Z",
    "2026-02-30T10:00:00Z", "2026-13-45T99:99:99Z", "now", "", 0, -1, 1e20, None,
]  # fmt: skip
ODD_VALUES = [
    None, 0, -1, 10**30, 1.5, -0.0, True, "", " ", "\x00", "\u202e", "😀" * 50, "x" * 5000, [], {}, [[[]]],
    {"a": {"b": {}}}, "NaN", "1e400", "-99.999", "99.995", "+8613800000001", "13800000001", "a@b.c", "Mars/Phobos",
    "Asia/Shanghai", "fr", "zh-CN", "2026-02-30", "0001-01-01",
]  # fmt: skip
DATA_KEYS = [
    "amount", "currency", "items", "phone", "email", "name", "timezone", "locale", "birthday", "carrier",
    "tracking_no", "rating", "reason", "traits", "tags", "note", "",
]  # fmt: skip
CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "application/json; charset=latin-1", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", "", "*/*",
    "application/merge-patch+json",
]  # fmt: skip
JOURNEYS = ["payment_reminder", "review_request", "birthday_greeting", "nope", "😀", "\u202e", "x" * 300]
STEPS = ["first_reminder", "send", "nope", "😀", ""]
SEGMENTS = ["lapsing_valuable", "nope", "😀"]
BROADCASTS = ["spring_festival_care", "nope", "\u202e"]


class Fuzz:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.serial = 0

    def pick(self, values):
        return self.rng.choice(values)

    def an_id(self) -> str:
        return self.pick(ODD_IDS) if self.rng.random() < 0.7 else f"f{self.rng.randrange(500)}"

    def param(self) -> str:
        """An id for a query parameter (httpx encodes it as UTF-8: no lone surrogate)."""
        value = self.an_id()
        return value.encode("utf-8", "replace").decode()

    def event(self) -> dict:
        self.serial += 1
        rng = self.rng
        event = {
            "event_id": f"e{self.serial}" if rng.random() < 0.8 else self.an_id(),
            "type": self.pick([*EVENT_TYPES, "order.nope", ""]) if rng.random() < 0.95 else self.pick(ODD_VALUES),
            "occurred_at": "2026-02-01T10:00:00+08:00" if rng.random() < 0.5 else self.pick(ODD_TIMES),
            "customer_id": self.an_id(),
            "order_id": self.an_id() if rng.random() < 0.8 else None,
            "data": {self.pick(DATA_KEYS): self.pick(ODD_VALUES) for _ in range(rng.randint(0, 4))},
        }
        if rng.random() < 0.3:  # a time in the data too
            event["data"][self.pick(["at", "paid_at", "shipped_at", "birthday"])] = self.pick(ODD_TIMES)
        if rng.random() < 0.1:
            del event[self.pick(list(event))]
        if rng.random() < 0.05:
            event[self.pick(["extra", "", "😀"])] = self.pick(ODD_VALUES)
        return event

    def body(self) -> bytes:
        rng = self.rng
        choice = rng.random()
        if choice < 0.75:
            payload = self.event() if rng.random() < 0.7 else [self.event() for _ in range(rng.randint(0, 5))]
            return json.dumps(payload, allow_nan=True, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        if choice < 0.9:
            text = json.dumps(self.event()).encode()
            return text[: rng.randrange(len(text) + 1)]
        if choice < 0.95:
            return ('{"a":' * 3000 + "1" + "}" * 3000).encode()
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))

    def request(self) -> tuple[str, str, dict, bytes | None, dict]:
        """(method, path, query params, body, headers)"""
        rng = self.rng
        p = quote(self.an_id(), safe="", errors="surrogatepass")  # %ED%A0%80: not UTF-8
        choice = rng.random()
        if choice < 0.45:
            content_type = "application/json" if rng.random() < 0.8 else self.pick(CONTENT_TYPES)
            headers = {"content-type": content_type} if content_type else {}
            return "POST", "/events", {}, self.body(), headers
        name = quote(self.pick(JOURNEYS), safe="")
        routes = [
            ("GET", f"/customers/{p}/history", {}),
            ("GET", f"/orders/{p}/history", {}),
            ("GET", f"/customers/{p}", {}),
            ("DELETE", f"/customers/{p}", {}),
            ("GET", "/customers", {"q": self.param()}),
            ("GET", f"/journeys/{name}/preview", {"step": self.pick(STEPS), "customer": self.param()}),
            (
                "GET",
                f"/journeys/{name}/preview",
                {"step": self.pick(STEPS), "customer": self.param(), "order": self.param()},
            ),
            ("GET", "/journeys", {}),
            ("GET", f"/journeys/{name}/definition", {}),
            ("GET", f"/journeys/{name}/effect", {}),
            ("GET", "/effect", {}),
            ("GET", "/segments", {}),
            ("GET", f"/segments/{quote(self.pick(SEGMENTS), safe='')}", {}),
            ("GET", f"/segments/{quote(self.pick(SEGMENTS), safe='')}/members", {}),
            ("GET", "/events/failed", {}),
            ("GET", "/events/pending", {}),
            ("GET", "/broadcasts", {}),
            ("GET", f"/broadcasts/{quote(self.pick(BROADCASTS), safe='')}", {}),
            ("GET", f"/broadcasts/{quote(self.pick(BROADCASTS), safe='')}/dry-run", {}),
            ("GET", "/healthz", {}),
            ("GET", "/readyz", {}),
            ("GET", "/unsubscribe", {"token": self.param()}),
        ]
        method, path, params = self.pick(routes)
        if rng.random() < 0.05:  # a body and a content type where none is expected
            return method, path, params, self.body(), {"content-type": self.pick(CONTENT_TYPES) or "text/plain"}
        if rng.random() < 0.03:
            return "POST", "/events/replay", {}, self.body(), {"content-type": self.pick(CONTENT_TYPES)}
        return method, path, params, None, {}


async def fire(base: str, count: int, seed: int, timeout: float) -> dict:
    fuzz = Fuzz(random.Random(seed))
    requests = [fuzz.request() for _ in range(count)]
    statuses: collections.Counter = collections.Counter()
    failures: list[str] = []
    slowest = [0.0, ""]
    queue = iter(requests)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=timeout) as http:
            for method, path, params, content, headers in queue:  # one shared iterator: bounded
                began = time.monotonic()
                what = f"{method} {path} {params or ''} {(content or b'')[:120]!r} {headers}"
                try:
                    answer = await http.request(method, path, params=params, content=content, headers=headers)
                except httpx.TimeoutException:
                    statuses["timeout"] += 1
                    failures.append(f"timeout after {timeout:g} s: {what}")
                    continue
                except httpx.TransportError as err:  # the server dropped the connection: as bad as a 5xx
                    statuses["dropped"] += 1
                    failures.append(f"dropped ({type(err).__name__}): {what}")
                    continue
                took = time.monotonic() - began
                if took > slowest[0]:
                    slowest[:] = [took, f"{method} {path}"]
                statuses[answer.status_code] += 1
                if answer.status_code >= 500:
                    failures.append(f"{answer.status_code}: {what} -> {answer.text[:300]}")

    began = time.monotonic()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return {"statuses": statuses, "failures": failures, "seconds": time.monotonic() - began, "slowest": slowest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a request may take (default 10)")
    args = parser.parse_args(argv)

    directory = Path(tempfile.mkdtemp(prefix="journeys-fuzz-"))
    schema = Schema(prefix="journeys_fuzz") if args.database == "postgresql" else None
    url = schema.url if schema else f"sqlite:///{directory}/journeys.db"
    stack = Stack(directory, url, workers=1, extra_env={"PYTHONPATH": str(ROOT)})  # this checkout's code
    try:
        stack.start()
        print(f"fuzzing {stack.api} ({args.database}, logs in {directory}): {args.requests} requests, seed {args.seed}")
        found = asyncio.run(fire(stack.api, args.requests, args.seed, args.timeout))
    finally:
        stack.stop()
        if schema:
            schema.drop()
    log = stack.log("api").read_text(errors="replace")
    statuses = found["statuses"]
    fivexx = sum(n for status, n in statuses.items() if isinstance(status, int) and status >= 500)
    print(f"{sum(statuses.values())} requests in {found['seconds']:.0f} s, {CLIENTS} clients at once")
    print("statuses: " + ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items(), key=str)))
    took, slowest = found["slowest"]
    print(f"5xx: {fivexx}, timeouts: {statuses['timeout']}, dropped: {statuses['dropped']}")
    print(f"slowest answer: {took:.2f} s ({slowest})")
    print(f"tracebacks in the API log: {log.count('Traceback')}")
    for failure in found["failures"][:20]:
        print("  " + failure)
    return 1 if found["failures"] or "Traceback" in log else 0


if __name__ == "__main__":
    sys.exit(main())
