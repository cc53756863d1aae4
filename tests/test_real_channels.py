"""The real channels end to end, as a shop connects them: `journeys up` with the Twilio and
SendGrid variables pointed at a local fake provider. An order's reminder goes out through the
Twilio SDK, Twilio's signed status callbacks move it to delivered, the customer's STOP reply
blocks the next SMS (the next order's reminder goes by email through the SendGrid SDK), SendGrid's
signed event marks that delivered, and `journeys history` shows each step."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import httpx

from tests.fake_provider import AUTH_TOKEN, FakeProvider
from tests.helpers import daytime_zone, free_port
from tests.test_up import run, start_up, stop_up, until_printed


def wait_for(check, seconds: float = 90):  # a send through a just-started `journeys up` on a loaded machine
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_reminders_through_twilio_and_sendgrid_with_callbacks_and_stop(tmp_path):
    port, ui_port, api_port = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    with FakeProvider() as provider:
        env = {
            **os.environ,
            "JOURNEYS_API_URL": api,
            "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
            "JOURNEYS_PUBLIC_URL": api,
            "JOURNEYS_SHOP_NAME": "小店",
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM": "+15005550006",
            "TWILIO_API_BASE_URL": provider.url,
            "SENDGRID_API_KEY": "SG.fake",
            "SENDGRID_FROM": "shop@example.com",
            "SENDGRID_API_HOST": provider.url,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": provider.signer.public_key,
        }
        process, output = start_up(tmp_path, port, ui_port, api_port, env)
        try:
            assert "sms: twilio, email: sendgrid" in output, output
            assert f"Webhooks      {api}/webhooks/twilio/status" in output

            now = datetime.now(UTC).replace(microsecond=0)
            person = {"name": "王芳", "phone": "138 0000 0001", "email": "WangFang@Example.com"}
            person["timezone"] = daytime_zone(now)

            def order(n: int, order_id: str) -> dict:
                # Created 20 minutes ago: the first reminder (15 minutes in) is due at once.
                return {
                    "event_id": f"created-{order_id}", "type": "order.created", "customer_id": "c1",
                    "order_id": order_id, "occurred_at": (now - timedelta(minutes=20, seconds=-n)).isoformat(),
                    "data": {"amount": 99},
                }  # fmt: skip

            created = {
                "event_id": "customer-c1", "type": "customer.created", "customer_id": "c1",
                "occurred_at": (now - timedelta(hours=1)).isoformat(), "data": person,
            }  # fmt: skip
            assert httpx.post(f"{api}/events", json=[created, order(0, "o1")]).status_code == 202

            [sms] = wait_for(lambda: provider.sms)
            assert sms["to"] == "+8613800000001"  # the national number, in E.164
            assert sms["body"].startswith("【小店】") and "o1" in sms["body"]
            assert sms["status_callback"].startswith(f"{api}/webhooks/twilio/status?message_id=")
            for status in ("sent", "delivered"):
                assert provider.status_callback(sms, status).status_code == 200

            stop = provider.inbound_sms(f"{api}/webhooks/twilio/inbound", "+8613800000001", "STOP")
            assert stop.status_code == 200

            assert httpx.post(f"{api}/events", json=order(1, "o2")).status_code == 202
            [mail] = wait_for(lambda: provider.mail)
            assert mail["personalizations"][0]["to"] == [{"email": "wangfang@example.com"}]
            assert len(provider.sms) == 1  # STOP: the second reminder did not go by SMS
            message_id = mail["custom_args"]["message_id"]
            delivered = {"event": "delivered", "email": "wangfang@example.com", "sg_event_id": "sg-1",
                         "timestamp": int(time.time()), "message_id": message_id}  # fmt: skip
            assert provider.sendgrid_events(f"{api}/webhooks/sendgrid/events", [delivered]).status_code == 200

            printed = until_printed(
                tmp_path, env, ["history", "--customer", "c1"], "email to wangfang@example.com  delivered"
            )
            assert "payment_reminder/first_reminder  sms to +8613800000001  delivered at" in printed
            assert "payment_reminder/first_reminder  email to wangfang@example.com  delivered at" in printed
            assert "1 segment" in printed
            forged = httpx.post(f"{api}/webhooks/twilio/inbound", data={"From": "+8613800000001", "Body": "START"})
            assert forged.status_code == 403
            assert run(tmp_path, env, "history", "--order", "o2").returncode == 0
        finally:
            rest = stop_up(process)
    # The engine's own log (API, dispatcher, worker, SDKs) holds no contact data nor message text.
    log = output + rest
    assert "worker polling" in log
    for secret in (
        "8613800000001",
        "13800000001",
        "138 0000 0001",
        "wangfang@example.com",
        "WangFang@Example.com",
        "王芳",
    ):
        assert secret not in log, f"{secret!r} appears in the log:\n{log}"
