"""A local stand-in for Aliyun SMS (Dysmsapi 2017-05-25) as its own SDK calls it, so the real
`alibabacloud_dysmsapi20170525` client can be tested here.

The SDK (tea-openapi's `do_request`) POSTs to `/` with the action in `x-acs-action` and signs every
request with the V3 signature, `ACS3-HMAC-SHA256`: a canonical request of the method, the path,
the sorted RFC 3986-encoded query, the signed headers (lower-cased, sorted) and the body's SHA-256
(`x-acs-content-sha256`), hashed and HMAC-ed with the AccessKey secret into the `Authorization`
header. The fake recomputes it from the request as it arrived, as Aliyun does, and refuses what
does not match with Aliyun's own answers: `SignatureDoesNotMatch` (400), an unknown key
`InvalidAccessKeyId.NotFound` (404), a replayed nonce `SignatureNonceUsed`, a stale
`x-acs-date` `InvalidTimeStamp.Expired`.

Business refusals come as Aliyun sends them: HTTP 200 with `{"Code": "isv....", "Message",
"RequestId"}` (the SDK returns that body; the caller must check `Code`); gateway and server errors
with HTTP 4xx/5xx and the same shape (the SDK raises them).

What it took is in `accepted` (one entry per number: template code, sign name, params, OutId,
BizId, the text the phone shows), and QuerySendDetails answers from it. Each number can be scripted
(`script`: the next answers, in order; `refuse`: a code for every request naming it), and seeded
random faults (`AliyunFaults`) cover requests nobody scripted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlparse

from core.sms_registry import aliyun_text, declared_parameters

ACCESS_KEY_ID = "LTAI5tFakeAccessKeyId"
ACCESS_KEY_SECRET = "fake-aliyun-access-key-secret"
CHINA = timezone(timedelta(hours=8))  # Aliyun's SendDate and dates are Beijing time
MOBILE = "1[3-9][0-9]{9}"


@dataclass
class AliyunAnswer:
    """What the fake does with one request naming a number: `code` an Aliyun error code (HTTP
    `status`, 200 for business errors); `delay` answers late after taking the message (the caller
    times out, the send happened); `lost` waits `delay` and takes nothing (the request never got
    through)."""

    code: str | None = None
    status: int = 200
    delay: float = 0.0
    lost: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class AliyunFaults:
    """Random faults for every request nobody scripted: at `rate`, an equal share of HTTP 500, 503,
    API throttling (`Throttling.User`), `isp.SYSTEM_ERROR`, and an answer `slow` seconds late
    after taking the message. Seeded, so a run can be repeated."""

    rate: float
    slow: float
    seed: int = 11
    drawn: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def draw(self) -> AliyunAnswer:
        if self._random.random() >= self.rate:
            return AliyunAnswer()
        kind = self._random.choice(["500", "503", "throttling", "isp", "slow"])
        self.drawn[kind] = self.drawn.get(kind, 0) + 1
        return {
            "500": AliyunAnswer(code="InternalError", status=500),
            "503": AliyunAnswer(code="ServiceUnavailable", status=503),
            "throttling": AliyunAnswer(code="Throttling.User", status=400),
            "isp": AliyunAnswer(code="isp.SYSTEM_ERROR"),
            "slow": AliyunAnswer(delay=self.slow),
        }[kind]


#: Aliyun's messages for the codes the fake answers with.
MESSAGES = {
    "InternalError": "The request processing has failed due to some unknown error.",
    "ServiceUnavailable": "The request has failed due to a temporary failure of the server.",
    "Throttling.User": "Request was denied due to user flow control.",
    "isp.SYSTEM_ERROR": "系统异常",
    "isv.BUSINESS_LIMIT_CONTROL": "触发号码天级流控Permits:10",
    "isv.MOBILE_NUMBER_ILLEGAL": "非法手机号",
    "isv.SMS_TEMPLATE_ILLEGAL": "该账号下找不到对应模板",
    "isv.SMS_SIGNATURE_ILLEGAL": "该账号下找不到对应签名",
    "isv.TEMPLATE_MISSING_PARAMETERS": "模板变量缺少对应参数值",
    "isv.INVALID_JSON_PARAM": "JSON参数不合法，只接受字符串值",
    "isv.MOBILE_COUNT_OVER_LIMIT": "手机号码数量超过限制",
    "SignatureDoesNotMatch": "Specified signature does not match our calculation.",
    "InvalidAccessKeyId.NotFound": "Specified access key is not found.",
    "SignatureNonceUsed": "Specified signature nonce was used already.",
    "InvalidTimeStamp.Expired": "Specified time stamp or date value is expired.",
    "IncompleteSignature": "The request signature does not conform to Aliyun standards.",
}


def canonical_query(query: list[tuple[str, str]]) -> str:
    """The V3 canonical query: keys sorted, keys and values percent-encoded (RFC 3986, `~` kept)."""
    return "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(query))


def acs3_signature(secret: str, method: str, path: str, query, headers: dict[str, str], signed: list[str]) -> str:
    """The ACS3-HMAC-SHA256 signature of a request, computed from what arrived."""
    canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed)
    payload_hash = headers["x-acs-content-sha256"]
    canonical = f"{method}\n{path}\n{canonical_query(query)}\n{canonical_headers}\n{';'.join(signed)}\n{payload_hash}"
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (a timeout test) is expected; anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeAliyun:
    """Dysmsapi on 127.0.0.1. `templates`: the registered texts by template code (the text the
    phone shows is computed from them; an unknown code is `isv.SMS_TEMPLATE_ILLEGAL`), None: any
    code is taken; `signatures`: the registered signatures, None: any."""

    def __init__(
        self,
        templates: dict[str, str] | None = None,
        signatures: list[str] | None = None,
        *,
        access_key_id: str = ACCESS_KEY_ID,
        access_key_secret: str = ACCESS_KEY_SECRET,
    ):
        self.keys = {access_key_id: access_key_secret}
        self.templates = templates
        self.signatures = signatures
        self.accepted: list[dict] = []  # one entry per number Aliyun took
        self.calls: list[dict] = []  # every signed request: action, numbers, answer code
        self.refused_signatures: list[str] = []  # why each unauthenticated request was refused
        self.script: dict[str, list[AliyunAnswer]] = {}  # number → its next answers, in order
        self.refuse: dict[str, str] = {}  # number → a code every request naming it gets
        self.lookup_script: list[AliyunAnswer] = []  # the next QuerySendDetails answers, in order
        self.faults: AliyunFaults | None = None
        self._nonces: set[str] = set()
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        """What ALIYUN_SMS_ENDPOINT names (with ALIYUN_SMS_PROTOCOL=http)."""
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAliyun:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ----------------------------------------------------------------------------- what it took

    def out_ids(self) -> list[str]:
        with self._lock:
            return [entry["out_id"] for entry in self.accepted]

    def taken(self, action: str | None = None) -> list[dict]:
        with self._lock:
            return [entry for entry in self.accepted if action is None or entry["action"] == action]

    def actions(self, name: str) -> list[dict]:
        """The requests of one action that Aliyun answered OK."""
        with self._lock:
            return [call for call in self.calls if call["action"] == name and call["code"] == "OK"]

    def content(self, sign_name: str, template_code: str, params: dict[str, str]) -> str:
        text = (self.templates or {}).get(template_code)
        if text is None:
            text = template_code + "".join(f" {name}={value}" for name, value in params.items())
        return aliyun_text(sign_name, text, params)

    def _answer_for(self, numbers: list[str]) -> AliyunAnswer:
        with self._lock:
            for number in numbers:
                if number in self.refuse:
                    return AliyunAnswer(code=self.refuse[number])
            for number in numbers:
                queue = self.script.get(number)
                if queue:
                    return queue.pop(0)
            return self.faults.draw() if self.faults else AliyunAnswer()

    # ----------------------------------------------------------------------------- the server

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: str, message: str | None = None, headers=None) -> None:
                body = {"Code": code, "Message": message or MESSAGES.get(code, code), "RequestId": _request_id()}
                self._reply(status, body, headers)

            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                url = urlparse(self.path)
                query = parse_qsl(url.query, keep_blank_values=True)
                refused = self._authenticate(url.path, query, raw)
                if refused is not None:
                    with fake._lock:
                        fake.refused_signatures.append(refused[1])
                    self._error(*refused)
                    return
                params = dict(query)
                if raw and "x-www-form-urlencoded" in (self.headers.get("content-type") or ""):
                    params |= dict(parse_qsl(raw.decode(), keep_blank_values=True))
                action = self.headers.get("x-acs-action")
                handler = {
                    "SendSms": self._send_sms,
                    "SendBatchSms": self._send_batch_sms,
                    "QuerySendDetails": self._query_send_details,
                }.get(action)
                if self.headers.get("x-acs-version") != "2017-05-25" or handler is None:
                    self._error(404, "InvalidAction.NotFound", f"Specified api {action} is not found.")
                    return
                handler(params)

            def _authenticate(self, path: str, query, raw: bytes) -> tuple[int, str, str] | None:
                """Aliyun's check of a V3-signed request; the refusal (status, code, message) or None."""
                authorization = self.headers.get("Authorization") or ""
                algorithm, _, rest = authorization.partition(" ")
                parts = dict(part.split("=", 1) for part in rest.split(",") if "=" in part)
                if algorithm != "ACS3-HMAC-SHA256" or not {"Credential", "SignedHeaders", "Signature"} <= set(parts):
                    return 400, "IncompleteSignature", MESSAGES["IncompleteSignature"]
                secret = fake.keys.get(parts["Credential"])
                if secret is None:
                    return 404, "InvalidAccessKeyId.NotFound", MESSAGES["InvalidAccessKeyId.NotFound"]
                signed = parts["SignedHeaders"].split(";")
                headers = {name.lower(): value for name, value in self.headers.items()}
                required = {"host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256", "x-acs-action"}
                unsigned = [name for name in headers if name.startswith("x-acs-") or name == "content-type"]
                if not required <= set(signed) or not set(unsigned) <= set(signed) or signed != sorted(signed):
                    return 400, "IncompleteSignature", MESSAGES["IncompleteSignature"]
                if any(name not in headers for name in signed):
                    return 400, "IncompleteSignature", MESSAGES["IncompleteSignature"]
                if headers["x-acs-content-sha256"] != hashlib.sha256(raw).hexdigest():
                    return 400, "SignatureDoesNotMatch", "x-acs-content-sha256 is not the body's SHA-256."
                expected = acs3_signature(secret, self.command, path, query, headers, signed)
                if not hmac.compare_digest(expected, parts["Signature"]):
                    return 400, "SignatureDoesNotMatch", MESSAGES["SignatureDoesNotMatch"]
                try:
                    stamped = datetime.strptime(headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                except ValueError:
                    return 400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
                if abs((datetime.now(UTC) - stamped).total_seconds()) > 900:
                    return 400, "InvalidTimeStamp.Expired", MESSAGES["InvalidTimeStamp.Expired"]
                with fake._lock:
                    nonce = headers["x-acs-signature-nonce"]
                    if nonce in fake._nonces:
                        return 400, "SignatureNonceUsed", MESSAGES["SignatureNonceUsed"]
                    fake._nonces.add(nonce)
                return None

            def _refusal(self, action: str, numbers: list[str], answer: AliyunAnswer) -> bool:
                """Answer a scripted or drawn fault; True when it was one."""
                if answer.lost:
                    time.sleep(answer.delay)
                    self._record(action, numbers, "lost")
                    self._error(503, "ServiceUnavailable")
                    return True
                if answer.code is None:
                    return False
                self._record(action, numbers, answer.code)
                self._error(answer.status, answer.code, headers=answer.headers)
                return True

            def _record(self, action: str, numbers: list[str], code: str) -> None:
                with fake._lock:
                    fake.calls.append({"action": action, "numbers": numbers, "code": code})

            def _business(self, action: str, numbers: list[str], code: str) -> None:
                self._record(action, numbers, code)
                self._error(200, code)

            def _check(self, numbers: list[str], signs: list[str], code: str, params: list) -> str | None:
                """Aliyun's own checks of a send; the refusing code or None."""
                if fake.templates is not None and code not in fake.templates:
                    return "isv.SMS_TEMPLATE_ILLEGAL"
                if fake.signatures is not None and any(sign not in fake.signatures for sign in signs):
                    return "isv.SMS_SIGNATURE_ILLEGAL"
                if any(not re.fullmatch(MOBILE, str(number)) for number in numbers):
                    return "isv.MOBILE_NUMBER_ILLEGAL"
                declared = declared_parameters((fake.templates or {}).get(code, ""))
                for values in params:
                    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                        return "isv.INVALID_JSON_PARAM"
                    if any(name not in values for name in declared):
                        return "isv.TEMPLATE_MISSING_PARAMETERS"
                return None

            def _take(self, action: str, entries: list[tuple[str, str, dict]], code: str, out_id: str | None) -> str:
                biz_id = f"{random.randrange(10**17, 10**18)}^0"
                now = datetime.now(CHINA)
                with fake._lock:
                    for number, sign, params in entries:
                        fake.accepted.append(
                            {
                                "action": action,
                                "number": number,
                                "template_code": code,
                                "sign_name": sign,
                                "params": params,
                                "out_id": out_id,
                                "biz_id": biz_id,
                                "content": fake.content(sign, code, params),
                                "sent_at": now,
                            }
                        )
                    fake.calls.append({"action": action, "numbers": [e[0] for e in entries], "code": "OK"})
                return biz_id

            def _send_sms(self, params: dict) -> None:
                numbers = [n for n in params.get("PhoneNumbers", "").split(",") if n]
                answer = fake._answer_for(numbers)
                if self._refusal("SendSms", numbers, answer):
                    return
                if not numbers or not params.get("SignName") or not params.get("TemplateCode"):
                    self._business("SendSms", numbers, "isv.INVALID_PARAMETERS")
                    return
                if len(numbers) > 1000:
                    self._business("SendSms", numbers, "isv.MOBILE_COUNT_OVER_LIMIT")
                    return
                try:
                    values = json.loads(params.get("TemplateParam") or "{}")
                except ValueError:
                    self._business("SendSms", numbers, "isv.INVALID_JSON_PARAM")
                    return
                sign, code = params["SignName"], params["TemplateCode"]
                refused = self._check(numbers, [sign], code, [values])
                if refused:
                    self._business("SendSms", numbers, refused)
                    return
                entries = [(number, sign, values) for number in numbers]
                biz_id = self._take("SendSms", entries, code, params.get("OutId"))
                time.sleep(answer.delay)
                self._reply(200, {"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": _request_id()})

            def _send_batch_sms(self, params: dict) -> None:
                try:
                    numbers = json.loads(params.get("PhoneNumberJson") or "[]")
                    signs = json.loads(params.get("SignNameJson") or "[]")
                    values = json.loads(params.get("TemplateParamJson") or "[]")
                except ValueError:
                    self._business("SendBatchSms", [], "isv.INVALID_JSON_PARAM")
                    return
                answer = fake._answer_for([str(n) for n in numbers])
                if self._refusal("SendBatchSms", numbers, answer):
                    return
                code = params.get("TemplateCode")
                if not numbers or not code or len(signs) != len(numbers) or len(values) != len(numbers):
                    self._business("SendBatchSms", numbers, "isv.INVALID_PARAMETERS")
                    return
                if len(numbers) > 100:
                    self._business("SendBatchSms", numbers, "isv.MOBILE_COUNT_OVER_LIMIT")
                    return
                refused = self._check(numbers, signs, code, values)
                if refused:
                    self._business("SendBatchSms", numbers, refused)
                    return
                biz_id = self._take(
                    "SendBatchSms", list(zip(numbers, signs, values, strict=True)), code, params.get("OutId")
                )
                time.sleep(answer.delay)
                self._reply(200, {"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": _request_id()})

            def _query_send_details(self, params: dict) -> None:
                number = params.get("PhoneNumber", "")
                with fake._lock:
                    scripted = fake.lookup_script.pop(0) if fake.lookup_script else None
                answer = scripted or (fake.faults.draw() if fake.faults else AliyunAnswer())
                if answer.delay:  # a slow lookup: the answer comes late, nothing changes
                    answer = AliyunAnswer(delay=answer.delay, lost=True)
                if self._refusal("QuerySendDetails", [number], answer):
                    return
                try:
                    day = datetime.strptime(params.get("SendDate", ""), "%Y%m%d").date()
                    size, page = int(params.get("PageSize", "0")), int(params.get("CurrentPage", "0"))
                except ValueError:
                    self._business("QuerySendDetails", [number], "isv.INVALID_PARAMETERS")
                    return
                if not number or not 1 <= size <= 50 or page < 1:
                    self._business("QuerySendDetails", [number], "isv.INVALID_PARAMETERS")
                    return
                with fake._lock:
                    found = [e for e in fake.accepted if e["number"] == number and e["sent_at"].date() == day]
                shown = found[(page - 1) * size : page * size]
                details = [
                    {
                        "PhoneNum": e["number"],
                        "SendStatus": 3,
                        "ErrCode": "DELIVERED",
                        "TemplateCode": e["template_code"],
                        "Content": e["content"],
                        "SendDate": e["sent_at"].strftime("%Y-%m-%d %H:%M:%S"),
                        "ReceiveDate": e["sent_at"].strftime("%Y-%m-%d %H:%M:%S"),
                        **({"OutId": e["out_id"]} if e["out_id"] else {}),
                    }
                    for e in shown
                ]
                self._record("QuerySendDetails", [number], "OK")
                body = {
                    "Code": "OK",
                    "Message": "OK",
                    "RequestId": _request_id(),
                    "TotalCount": len(found),
                    "SmsSendDetailDTOs": {"SmsSendDetailDTO": details},
                }
                self._reply(200, body)

        return Handler


def _request_id() -> str:
    return str(uuid.uuid4()).upper()
