"""What batching buys an Aliyun SMS burst: N messages of one template handed to the adapter by as
many concurrent callers as the worker runs activities (JOURNEYS_WORKER_ACTIVITIES, 16), once one
SendSms each (`batch_seconds` 0) and once batched into SendBatchSms (the default 0.2 s window),
through Aliyun's own SDK against the local fake of its API (tests/fake_aliyun.py, which checks
every request's signature). Prints messages a second, API calls, and the batched/single ratios.

    .venv/bin/python -m bench.sms_batches --messages 2000 --callers 16
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

from channels.aliyun_sms import AliyunSmsChannel
from core.channel import OutgoingMessage
from core.sms_registry import aliyun_text
from tests.fake_aliyun import ACCESS_KEY_ID, ACCESS_KEY_SECRET, FakeAliyun

CODE, SIGN = "SMS_460000103", "示例商城"
TEXT = "亲爱的${name}，您的订单${order}已发货，${carrier}单号${tracking}，请留意查收。"


def message(n: int) -> OutgoingMessage:
    params = {"name": "王芳", "order": f"o{n}", "carrier": "顺丰", "tracking": f"SF{n:06d}"}
    return OutgoingMessage(
        message_id=f"bench-{n}",
        channel="sms",
        to=f"+86139{n:08d}",
        body=aliyun_text(SIGN, TEXT, params),
        journey="shipped_notice",
        step="notify",
        customer_id=f"c{n}",
        category="transactional",
        provider_template=CODE,
        template_data={"sign_name": SIGN, "params": params},
    )


def run(messages: int, callers: int, batch_seconds: float) -> tuple[float, int, int]:
    """Seconds for the burst, SendSms calls, SendBatchSms calls."""
    with FakeAliyun({CODE: TEXT}, [SIGN]) as fake:
        channel = AliyunSmsChannel(
            ACCESS_KEY_ID, ACCESS_KEY_SECRET, endpoint=fake.endpoint, protocol="http", batch_seconds=batch_seconds
        )
        burst = [message(n) for n in range(messages)]
        started = time.perf_counter()
        with ThreadPoolExecutor(callers) as pool:
            receipts = list(pool.map(channel.send, burst))
        seconds = time.perf_counter() - started
        assert len(receipts) == messages and len(fake.taken()) == messages, "a message was lost or sent twice"
        assert len({entry["number"] for entry in fake.taken()}) == messages
        return seconds, len(fake.actions("SendSms")), len(fake.actions("SendBatchSms"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=16, help="concurrent sends (the worker's activity slots)")
    parser.add_argument(
        "--window", type=float, default=0.2, help="the batch window (JOURNEYS_ALIYUN_SMS_BATCH_SECONDS)"
    )
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    single = run(args.messages, args.callers, 0.0)
    batched = run(args.messages, args.callers, args.window)
    runs = (("one SendSms each", single), (f"SendBatchSms, {args.window:g} s window", batched))
    for name, (seconds, sends, batches) in runs:
        print(
            f"{name:28} {args.messages / seconds:8,.0f} messages/s  {seconds:6.2f} s  "
            f"SendSms {sends:5}  SendBatchSms {batches:4}"
        )
    print(
        f"batched/single: {single[0] / batched[0]:.1f}x the messages a second, "
        f"{(batched[1] + batched[2]) / (single[1] + single[2]):.3f}x the API calls"
    )


if __name__ == "__main__":
    main()
