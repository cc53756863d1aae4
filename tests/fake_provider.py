"""A local stand-in for Twilio's Messages API and SendGrid's mail-send API, so the real SDKs can
be tested here. Each recipient can be scripted to answer with an error, a rate limit, or slowly.

It also plays the providers' side of the webhooks, signed exactly as they sign them: Twilio's
status callbacks and inbound SMS (X-Twilio-Signature, HMAC-SHA1 of the URL and sorted form with
the Auth Token), and SendGrid's Event Webhook (ECDSA P-256 over timestamp + body).
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

AUTH_TOKEN = "fake-twilio-auth-token"


@dataclass
class Answer:
    """What the provider does with one request: an HTTP status and, for errors, Twilio's code;
    `delay` answers late (after creating the message: the caller times out, the send happened);
    `lost` waits `delay` without creating anything (the request never reached the provider)."""

    status: int = 0
    code: int | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    lost: bool = False


@dataclass
class Faults:
    """Random faults for every request nobody scripted: at `rate`, an equal share of 500, 503, 429
    and an answer `slow` seconds late after accepting the message. Seeded, so a run can be repeated."""

    rate: float
    slow: float
    seed: int = 7
    drawn: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import random

        self._random = random.Random(self.seed)

    def draw(self) -> Answer:
        if self._random.random() >= self.rate:
            return Answer()
        kind = self._random.choice(["500", "503", "429", "slow"])
        self.drawn[kind] = self.drawn.get(kind, 0) + 1
        if kind == "slow":
            return Answer(delay=self.slow)
        code = int(kind)
        reset = {"Retry-After": "1", "X-RateLimit-Reset": str(int(time.time()) + 1)}
        return Answer(status=code, code=20429 if code == 429 else None, headers=reset)


def twilio_signed(url: str, form: dict[str, str], auth_token: str = AUTH_TOKEN) -> dict[str, str]:
    """The headers Twilio sends with a webhook to `url` carrying `form`."""
    return {
        "X-Twilio-Signature": RequestValidator(auth_token).compute_signature(url, form),
        "Content-Type": "application/x-www-form-urlencoded",
        "I-Twilio-Idempotency-Token": uuid.uuid4().hex,
    }


class SendGridSigner:
    """SendGrid's Event Webhook signing key: `public_key` is what its settings page shows."""

    def __init__(self):
        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "Content-Type": "application/json",
        }


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that gave up (a timeout test) is expected; anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeProvider:
    def __init__(self, auth_token: str = AUTH_TOKEN):
        self.auth_token = auth_token
        self.signer = SendGridSigner()
        self.sms: list[dict] = []  # messages Twilio accepted
        self.mail: list[dict] = []  # requests SendGrid accepted
        # One entry per recipient (personalization) SendGrid accepted: its address, its custom_args
        # (the request's and the personalization's own, merged as SendGrid merges them), the
        # request's X-Message-Id and the recipient's sg_message_id.
        self.mail_recipients: list[dict] = []
        self.mail_refused: list[dict] = []  # requests SendGrid refused: their status and recipients
        self.hooks: list[dict] = []  # webhook-channel requests accepted
        self.mail_log: list[dict] = []  # when each mail request arrived
        self.posts = 0
        self.sms_in_flight = 0  # Twilio requests being answered now
        self.sms_most_in_flight = 0  # the most Twilio requests that were being answered at once
        self.script: dict[str, list[Answer]] = {}  # recipient → the next answers, in order
        self.faults: Faults | None = None  # random faults for requests nobody scripted
        # Where SendGrid posts its signed Event Webhook: each accepted mail's `processed` event.
        self.sendgrid_events_url: str | None = None
        self.sendgrid_event_delay = 0.0  # SendGrid batches its events: they come seconds later
        self.event_posts: list[int] = []  # the status of each event post
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def status_callback(self, message: dict, status: str, error_code: str | None = None) -> httpx.Response:
        """Twilio reporting a message's status to the StatusCallback URL it was sent with."""
        form = {
            "AccountSid": "AC" + "0" * 32,
            "MessageSid": message["sid"],
            "SmsSid": message["sid"],
            "MessageStatus": status,
            "SmsStatus": status,
            "To": message["to"],
            "From": message["from"] or "+15005550006",
            "ApiVersion": "2010-04-01",
        }
        if error_code:
            form["ErrorCode"] = error_code
        return self.twilio_webhook(message["status_callback"], form)

    def twilio_webhook(self, url: str, form: dict[str, str], sign_url: str | None = None) -> httpx.Response:
        """POST a form to `url` signed as Twilio signs it (for `sign_url`, where the public URL differs)."""
        return httpx.post(url, content=urlencode(form), headers=twilio_signed(sign_url or url, form, self.auth_token))

    def inbound_sms(self, url: str, sender: str, body: str, **extra: str) -> httpx.Response:
        form = {"MessageSid": "SM" + uuid.uuid4().hex, "From": sender, "To": "+15005550006", "Body": body, **extra}
        return self.twilio_webhook(url, form)

    def sendgrid_events(self, url: str, events: list[dict]) -> httpx.Response:
        body = json.dumps(events).encode()
        return httpx.post(url, content=body, headers=self.signer.headers(body))

    def answer_for(self, *recipients: str) -> Answer:
        """The next scripted answer of the first of `recipients` that has one (a request to several
        recipients is answered as a whole), else a drawn fault or a plain acceptance."""
        with self._lock:
            for recipient in recipients:
                queue = self.script.get(recipient) or []
                if queue:
                    return queue.pop(0)
            return self.faults.draw() if self.faults else Answer()

    def mail_ids(self) -> list[str]:
        """The ledger id of every mail SendGrid took, once per acceptance (a duplicate shows twice)."""
        with self._lock:
            return [recipient["custom_args"]["message_id"] for recipient in self.mail_recipients]

    @staticmethod
    def recipients_of(body: dict, provider_id: str) -> list[dict]:
        """Each recipient of a mail-send request as SendGrid keeps it: its personalization's
        custom_args over the request's, and an sg_message_id of the request's X-Message-Id and a
        suffix of its own."""
        shared = body.get("custom_args", {})
        return [
            {
                "email": to["email"],
                "custom_args": shared | personalization.get("custom_args", {}),
                "headers": body.get("headers", {}) | personalization.get("headers", {}),
                "provider_id": provider_id,
                "sg_message_id": f"{provider_id}.filter0001.{number}.0",
            }
            for number, (personalization, to) in enumerate(
                ((p, to) for p in body["personalizations"] for to in p.get("to", [])), start=1
            )
        ]

    def _processed(self, recipients: list[dict]) -> None:
        """SendGrid's `processed` event for each recipient of a mail it took, posted signed to the
        event webhook in one batch, each with its custom_args at the top level as SendGrid sends them."""
        events = [
            {
                "event": "processed",
                "email": recipient["email"],
                "timestamp": int(time.time()),
                "sg_event_id": uuid.uuid4().hex,
                "sg_message_id": recipient["sg_message_id"],
                **recipient["custom_args"],
            }
            for recipient in recipients
        ]
        time.sleep(self.sendgrid_event_delay)
        for _ in range(20):  # SendGrid retries a failed post
            try:
                answer = self.sendgrid_events(self.sendgrid_events_url, events)
                self.event_posts.append(answer.status_code)
                if answer.status_code < 500:
                    return
            except httpx.HTTPError:
                self.event_posts.append(0)
            time.sleep(0.5)

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: dict | None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # Twilio: list messages
                query = parse_qs(urlparse(self.path).query)
                to = query.get("To", [None])[0]
                found = [m for m in provider.sms if to is None or m["to"] == to]
                self._reply(200, {"messages": found, "next_page_uri": None, "page": 0, "page_size": 50})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                with provider._lock:
                    provider.posts += 1
                if self.path.startswith("/2010-04-01/Accounts/"):
                    self._twilio(dict((k, v[0]) for k, v in parse_qs(raw).items()))
                elif self.path == "/v3/mail/send":
                    self._sendgrid(json.loads(raw))
                elif self.path == "/hook":
                    self._hook(raw)
                else:
                    self._reply(404, {"message": "not found"})

            def _hook(self, raw: str) -> None:
                """A push or chat bridge taking webhook-channel messages."""
                body = json.loads(raw)
                answer = provider.answer_for(body["to"])
                if answer.status >= 400:
                    self._reply(answer.status, {"error": f"fake {answer.status}"}, answer.headers)
                    return
                with provider._lock:
                    provider.hooks.append({"body": body, "raw": raw, "headers": dict(self.headers)})
                time.sleep(answer.delay)
                self._reply(200, {"id": "push-" + uuid.uuid4().hex[:8]})

            def _twilio(self, form: dict) -> None:
                with provider._lock:
                    provider.sms_in_flight += 1
                    provider.sms_most_in_flight = max(provider.sms_most_in_flight, provider.sms_in_flight)
                try:
                    self._twilio_create(form)
                finally:
                    with provider._lock:
                        provider.sms_in_flight -= 1

            def _twilio_create(self, form: dict) -> None:
                answer = provider.answer_for(form.get("To", ""))
                if answer.lost:
                    time.sleep(answer.delay)
                    self._reply(503, {"code": None, "message": "lost", "status": 503})
                    return
                if answer.status >= 400:
                    body = {"code": answer.code, "message": f"fake error {answer.code}", "status": answer.status}
                    self._reply(answer.status, body, answer.headers)
                    return
                now = datetime.now(UTC)
                message = {
                    "sid": "SM" + uuid.uuid4().hex,
                    "to": form.get("To"),
                    "from": form.get("From"),
                    "messaging_service_sid": form.get("MessagingServiceSid"),
                    "body": form.get("Body"),
                    "status": "queued",
                    "status_callback": form.get("StatusCallback"),
                    "date_created": format_datetime(now),
                    "date_sent": format_datetime(now),
                    "received": time.monotonic(),
                }
                with provider._lock:
                    provider.sms.append(message)
                time.sleep(answer.delay)
                self._reply(201, message)

            def _sendgrid(self, body: dict) -> None:
                personalizations = body.get("personalizations") or []
                emails = [to["email"] for p in personalizations for to in p.get("to", [])]
                answer = provider.answer_for(*emails)
                if answer.lost:
                    time.sleep(answer.delay)
                    self._reply(503, {"errors": [{"message": "lost"}]})
                    return
                if answer.status >= 400:
                    with provider._lock:
                        provider.mail_refused.append({"status": answer.status, "emails": emails})
                    self._reply(answer.status, {"errors": [{"message": f"fake {answer.status}"}]}, answer.headers)
                    return
                if not 1 <= len(personalizations) <= 1000:  # SendGrid's limit of a request
                    with provider._lock:
                        provider.mail_refused.append({"status": 400, "emails": emails})
                    error = {"message": "The personalizations field must have between 1 and 1000 items"}
                    self._reply(400, {"errors": [error | {"field": "personalizations"}]})
                    return
                provider_id = "sg-" + uuid.uuid4().hex[:16]
                recipients = provider.recipients_of(body, provider_id)
                with provider._lock:
                    provider.mail.append(body)
                    provider.mail_recipients.extend(recipients)
                    provider.mail_log.append({"received": time.monotonic()})
                if provider.sendgrid_events_url:
                    threading.Thread(target=provider._processed, args=(recipients,), daemon=True).start()
                time.sleep(answer.delay)
                self._reply(202, None, {"X-Message-Id": provider_id})

        return Handler
