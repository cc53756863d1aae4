"""SMS through Aliyun SMS (Dysmsapi 2017-05-25), with Aliyun's own SDK (`alibabacloud_dysmsapi20170525`).

Aliyun sends no free text: a message names a registered template code and signature and fills
the template's `${params}` (the ledger row's `provider_template` and `template_data =
{"sign_name", "params"}`, written by the renderer). The ledger id goes into `OutId`.

The SDK signs each request with Aliyun's V3 signature (ACS3-HMAC-SHA256, an `Authorization`
header over the method, query, headers and body hash). It is given explicit timeouts and no
retries of its own (no retry options; `autoretry` off): Temporal's retry policy decides, as for
Twilio. A business refusal comes back as HTTP 200 with `Code` != "OK" (the SDK returns it);
gateway errors come as HTTP 4xx/5xx (the SDK raises them). `ERROR_CODES` says what each code
means and whether another try can help.

A send whose answer was lost (a read timeout, a dropped connection) leaves the message in doubt:
its retry first asks `QuerySendDetails` for the number, each day since the earlier attempt, and
takes a message found there (our `OutId`, or for a batch the same text since the attempt) as
sent, so it never goes twice.

Batches: concurrent sends (activities run in threads) of one template code and signature that
arrive within `batch_seconds` go out as one `SendBatchSms` (up to `BATCH_LIMIT` numbers); each
caller gets its own result, the batch's `BizId` as its receipt. The first caller of a batch waits
for the others and makes the call; no thread of our own is started. A batch refused for a reason
that may concern one number (a bad number, a day limit) or failing in any way but a rate limit or
a connection error is sent again one message at a time, so each ledger row settles alone. A page
of messages handed over at once (`send_many`, for broadcasts) is batched the same way without
waiting: 100 numbers a call, each number once a call.

Logs: nothing here logs a number or a text, and no error message carries one (the SDK's
connection errors name the URL, whose query holds the number: only their kind is kept).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import requests
from alibabacloud_dysmsapi20170525 import models as sms_models
from alibabacloud_dysmsapi20170525.client import Client
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from alibabacloud_tea_openapi.models import Config
from darabonba.exceptions import UnretryableException
from darabonba.runtime import RuntimeOptions

from core.channel import (
    BulkResult,
    ChannelError,
    OutgoingMessage,
    PermanentChannelError,
    RetryableChannelError,
    SendReceipt,
)
from core.sms_registry import BATCH_LIMIT, settled_by_lookup

#: The SDK's core logs each request (its URL holds the number) and answer at DEBUG when DEBUG=sdk
#: is set in the environment. Logs must hold no contact data, so only its warnings pass.
logging.getLogger("darabonba-core").setLevel(logging.WARNING)
logger = logging.getLogger(__name__)

#: Aliyun keeps its dates (SendDate) in Beijing time.
CHINA = timezone(timedelta(hours=8))
#: QuerySendDetails answers for the last 30 days at most, 50 records a page.
LOOKUP_DAYS = 30
LOOKUP_PAGE = 50
LOOKUP_PAGES = 20  # per day: 1,000 messages to one number in a day is past any sane limit
#: How long after a lost answer a lookup that finds nothing still waits before sending again:
#: Aliyun lists a send in QuerySendDetails a little after taking it.
LOOKUP_GRACE = 60.0
#: How often a failed QuerySendDetails is tried at once before the send stays in doubt.
LOOKUP_TRIES = 3
#: A batch's OutId: this prefix and its first message's ledger id (a single send's is its own id).
BATCH_OUT_ID = "batch-"

#: A number's frequency limit (isv.BUSINESS_LIMIT_CONTROL: per minute, hour, day): try again in a minute.
BUSINESS_LIMIT_BACKOFF = 60.0
#: The API's own flow control (Throttling*), when Aliyun names no wait.
THROTTLING_BACKOFF = 2.0

#: The codes that mean "too many, too fast": retried after a wait, never failed.
RATE_LIMITS = {"isv.BUSINESS_LIMIT_CONTROL", "Throttling", "Throttling.User", "Throttling.Api", "Throttling.Concurrent"}

#: Aliyun's error codes for SendSms, SendBatchSms and QuerySendDetails: what each means, and
#: whether another try of the same message can succeed (True) or it is refused for good (False).
#: A code not listed is retried when it is `isp.*` (Aliyun's side) or came with HTTP 5xx, and
#: refused for good otherwise.
ERROR_CODES: dict[str, tuple[str, bool]] = {
    # Rate limits.
    "isv.BUSINESS_LIMIT_CONTROL": ("the number's sending frequency limit (per minute, hour or day) is reached", True),
    "Throttling": ("Aliyun's API flow control", True),
    "Throttling.User": ("the account's API flow control", True),
    "Throttling.Api": ("the API's flow control", True),
    "Throttling.Concurrent": ("too many concurrent requests", True),
    # Aliyun's side.
    "isp.SYSTEM_ERROR": ("a system error at Aliyun", True),
    "isp.GATEWAY_ERROR": ("a gateway error at Aliyun", True),
    "isp.UNKNOWN": ("an unknown error at Aliyun", True),
    "InternalError": ("an internal error at Aliyun", True),
    "ServiceUnavailable": ("Aliyun is unavailable for now", True),
    "SignatureNonceUsed": ("a request nonce was reused (a new one is drawn on the next try)", True),
    # The number.
    "isv.MOBILE_NUMBER_ILLEGAL": ("the number is not a valid mobile number", False),
    "isv.MOBILE_COUNT_OVER_LIMIT": ("too many numbers in one request", False),
    "isv.DAY_LIMIT_CONTROL": ("the account's daily sending limit is reached", False),
    "isv.DOMESTIC_NUMBER_NOT_SUPPORTED": ("the signature cannot send to mainland numbers", False),
    "isv.NOT_SUPPORTED_COUNTRY": ("the destination country is not supported", False),
    # The template, the signature, the parameters.
    "isv.SMS_TEMPLATE_ILLEGAL": ("the template code is not registered, not approved, or blocked", False),
    "isv.SMS_SIGNATURE_ILLEGAL": ("the signature is not registered, not approved, or blocked", False),
    "isv.SMS_SIGN_ILLEGAL": ("the signature may not be used", False),
    "isv.SIGN_NAME_ILLEGAL": ("the signature is not allowed", False),
    "isv.SMS_SIGNATURE_SCENE_ILLEGAL": ("the signature's scene does not fit the template's kind", False),
    "isv.BLACK_KEY_CONTROL_LIMIT": ("a parameter holds a blacklisted keyword", False),
    "isv.TEMPLATE_MISSING_PARAMETERS": ("a parameter the template declares is missing", False),
    "isv.TEMPLATE_PARAMS_ILLEGAL": ("a parameter holds words Aliyun refuses", False),
    "isv.INVALID_JSON_PARAM": ("the parameters are not a JSON object of strings", False),
    "isv.INVALID_PARAMETERS": ("a request parameter is invalid", False),
    "isv.PARAM_LENGTH_LIMIT": ("a parameter is too long", False),
    "isv.PARAM_NOT_SUPPORT_URL": ("a parameter holds a URL (URLs belong in the registered text)", False),
    "isv.EXTEND_CODE_ERROR": ("the extension code is not valid", False),
    "isv.CUSTOMER_REFUSED": ("the recipient refused messages from this signature", False),
    # The account and its credentials.
    "isv.AMOUNT_NOT_ENOUGH": ("the account's balance is insufficient", False),
    "isv.OUT_OF_SERVICE": ("the account is suspended (no balance)", False),
    "isv.PRODUCT_UN_SUBSCRIPT": ("SMS is not activated for the account", False),
    "isv.PRODUCT_UNSUBSCRIBE": ("SMS is not activated for the account", False),
    "isv.ACCOUNT_NOT_EXISTS": ("the account does not exist", False),
    "isv.ACCOUNT_ABNORMAL": ("the account is abnormal", False),
    "isv.DENY_IP_RANGE": ("the calling IP's region is denied", False),
    "isp.RAM_PERMISSION_DENY": ("the RAM user may not send SMS", False),
    "InvalidAccessKeyId.NotFound": ("the AccessKey ID is not known to Aliyun", False),
    "InvalidAccessKeyId.Inactive": ("the AccessKey is disabled", False),
    "SignatureDoesNotMatch": ("the request signature does not match: check ALIBABA_CLOUD_ACCESS_KEY_SECRET", False),
    "IncompleteSignature": ("the request signature is incomplete", False),
    "InvalidTimeStamp.Expired": ("the request's time is off by more than 15 minutes: check the clock", False),
    "Forbidden.RAM": ("the RAM user is not authorised", False),
    "Forbidden.NoPermission": ("the RAM user is not authorised", False),
}


def aliyun_number(address: str) -> str:
    """The number as Aliyun takes it: a mainland number without +86, others with their country code."""
    digits = address.removeprefix("+")
    return digits[2:] if address.startswith("+86") else digits


def refusal(code: str, message: str | None, status: int = 200, retry_after: float | None = None) -> ChannelError:
    """The ChannelError for an Aliyun error code (with its HTTP status and Aliyun's message)."""
    meaning, retryable = ERROR_CODES.get(code, (None, code.startswith("isp.") or status >= 500))
    said = f" ({message[:200]})" if message else ""
    text = f"Aliyun {code}: {meaning or 'refused'}{said}"
    if code in RATE_LIMITS or code.startswith("Throttling"):
        backoff = BUSINESS_LIMIT_BACKOFF if code == "isv.BUSINESS_LIMIT_CONTROL" else THROTTLING_BACKOFF
        return RetryableChannelError(text, code=code, retry_after=float(retry_after or backoff))
    if retryable:
        # A 5xx or a system error (isp.*) may come after Aliyun took the message: in doubt, so the
        # retry looks it up first. A business refusal (HTTP 200, isv.*) sent nothing.
        return RetryableChannelError(text, code=code, in_doubt=status >= 500 or code.startswith("isp."))
    return PermanentChannelError(text, code=code)


def _network_error(err: UnretryableException) -> RetryableChannelError:
    """A request that got no answer. Only the kind of failure is kept (the SDK's text names the
    URL, whose query holds the number). Never connected: nothing was sent; else: in doubt."""
    inner = getattr(err, "inner_exception", None)
    cause = getattr(inner, "__context__", None) or inner
    if isinstance(cause, requests.ConnectTimeout):
        return RetryableChannelError("cannot reach Aliyun (connect timeout)", code="connection")
    if isinstance(cause, requests.Timeout):
        return RetryableChannelError("Aliyun did not answer in time; outcome unknown", code="timeout", in_doubt=True)
    if isinstance(cause, requests.ConnectionError):
        refused = "NewConnectionError" in repr(cause) or "Connection refused" in str(cause)
        if refused:
            return RetryableChannelError("cannot reach Aliyun (connection refused)", code="connection")
        return RetryableChannelError("Aliyun's connection failed; outcome unknown", code="connection", in_doubt=True)
    kind = type(cause).__name__ if cause is not None else "unknown"
    return RetryableChannelError(
        f"Aliyun's answer was not understood ({kind}); outcome unknown", code="connection", in_doubt=True
    )


def _copy(err: ChannelError) -> ChannelError:
    """The same error for another caller (an exception object is raised in one thread only)."""
    return type(err)(str(err), code=err.code, retry_after=err.retry_after, in_doubt=err.in_doubt)


@dataclass
class _Waiting:
    """One caller's message in a batch, and what became of it."""

    message: OutgoingMessage
    number: str
    params: dict[str, str]
    done: threading.Event = field(default_factory=threading.Event)
    outcome: SendReceipt | ChannelError | None = None
    alone: bool = False  # send it by SendSms, on its own


@dataclass
class _Batch:
    entries: list[_Waiting] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)


class AliyunSmsChannel:
    name = "sms"
    provider = "aliyun"
    settles_doubt = "lookup"
    reconcile_seconds = 0.0

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: str,
        *,
        region: str = "cn-hangzhou",
        endpoint: str = "dysmsapi.aliyuncs.com",
        protocol: str = "https",
        timeout: float = 10.0,
        batch_seconds: float = 0.05,
        lookup_grace: float = LOOKUP_GRACE,
    ):
        millis = max(1, int(timeout * 1000))
        config = Config(
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            region_id=region,
            endpoint=endpoint,
            protocol=protocol,
            read_timeout=millis,
            connect_timeout=millis,
        )
        self.client = Client(config)
        # No retries by the SDK (no retry options: one attempt), whatever its defaults become.
        self.runtime = RuntimeOptions(autoretry=False, max_attempts=0, read_timeout=millis, connect_timeout=millis)
        self.timeout = timeout
        self.batch_seconds = batch_seconds
        self.lookup_grace = lookup_grace
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], _Batch] = {}

    # ------------------------------------------------------------------------------ sending

    def send(self, message: OutgoingMessage) -> SendReceipt:
        code, sign_name, params = self._template(message)
        number = aliyun_number(message.to)
        if message.earlier_attempt_at is not None:
            earlier = self._find_earlier(message, number)
            if earlier is not None:
                return SendReceipt(provider_id=earlier)
            waited = (datetime.now(UTC) - _aware(message.earlier_attempt_at)).total_seconds()
            if waited < self.lookup_grace:  # Aliyun lists a send a little after it takes it
                raise RetryableChannelError(
                    f"Aliyun does not list the earlier attempt yet ({waited:.0f} of {self.lookup_grace:.0f} s); "
                    "looking again before sending; outcome unknown",
                    code="lookup",
                    in_doubt=True,
                    retry_after=max(1.0, self.lookup_grace - waited),
                )
            return self._send_one(message, number, code, sign_name, params)  # a retry goes alone
        if self.batch_seconds <= 0:
            return self._send_one(message, number, code, sign_name, params)
        return self._send_batched(_Waiting(message, number, params), code, sign_name)

    @staticmethod
    def _template(message: OutgoingMessage) -> tuple[str, str, dict[str, str]]:
        data = message.template_data or {}
        if not message.provider_template or not data.get("sign_name"):
            raise PermanentChannelError(
                f"message {message.message_id} (template step {message.step!r} of {message.journey!r}) has no "
                "Aliyun template code and signature: Aliyun sends only registered templates, give the "
                "template an aliyun_sms section",
                code="no_template",
            )
        params = {str(name): str(value) for name, value in (data.get("params") or {}).items()}
        return message.provider_template, str(data["sign_name"]), params

    def _call(self, method, request):
        """One SDK call; the response body, or a ChannelError for any refusal or lost answer."""
        try:
            body = method(request, self.runtime).body
        except AlibabaCloudException as err:
            raise refusal(str(err.code), err.message, err.status_code or 0, err.retry_after) from None
        except UnretryableException as err:
            raise _network_error(err) from None
        if body.code != "OK":
            raise refusal(str(body.code), body.message)
        return body

    def _send_one(self, message: OutgoingMessage, number: str, code: str, sign_name: str, params) -> SendReceipt:
        request = sms_models.SendSmsRequest(
            phone_numbers=number,
            sign_name=sign_name,
            template_code=code,
            template_param=json.dumps(params, ensure_ascii=False),
            out_id=message.message_id,
        )
        body = self._call(self.client.send_sms_with_options, request)
        return SendReceipt(provider_id=body.biz_id or f"aliyun:{message.message_id}")

    # ------------------------------------------------------------------------------ batches

    def _send_batched(self, entry: _Waiting, code: str, sign_name: str) -> SendReceipt:
        key = (code, sign_name)
        with self._lock:
            batch = self._open.get(key)
            # One number once a batch (its receipts are told apart by number): a second goes alone.
            entry.alone = batch is not None and any(other.number == entry.number for other in batch.entries)
            leader = batch is None
            if leader:
                batch = self._open[key] = _Batch()
            if not entry.alone:
                batch.entries.append(entry)
            if len(batch.entries) >= BATCH_LIMIT:  # full: it goes now, the next send opens another
                del self._open[key]
                batch.full.set()
        if entry.alone:
            return self._send_one(entry.message, entry.number, code, sign_name, entry.params)
        if leader:
            batch.full.wait(self.batch_seconds)
            with self._lock:
                if self._open.get(key) is batch:
                    del self._open[key]  # closed: from here on nobody joins it
            self._dispatch(batch.entries, code, sign_name)
        elif not entry.done.wait(self.batch_seconds + 2 * self.timeout + 5):
            raise RetryableChannelError(
                "the batch this message joined did not finish in time; outcome unknown", code="batch", in_doubt=True
            )
        if entry.alone:
            return self._send_one(entry.message, entry.number, code, sign_name, entry.params)
        if isinstance(entry.outcome, ChannelError):
            raise entry.outcome
        return entry.outcome

    def _dispatch(self, entries: list[_Waiting], code: str, sign_name: str) -> None:
        """Send a closed batch and give each caller its outcome (always, even on a surprise)."""
        try:
            if len(entries) == 1:
                entries[0].alone = True
                return
            request = sms_models.SendBatchSmsRequest(
                phone_number_json=json.dumps([e.number for e in entries]),
                sign_name_json=json.dumps([sign_name] * len(entries), ensure_ascii=False),
                template_code=code,
                template_param_json=json.dumps([e.params for e in entries], ensure_ascii=False),
                out_id=f"{BATCH_OUT_ID}{entries[0].message.message_id}",
            )
            try:
                body = self._call(self.client.send_batch_sms_with_options, request)
            except ChannelError as err:
                whole = (
                    err.in_doubt
                    or err.code in RATE_LIMITS
                    or str(err.code).startswith("Throttling")
                    or err.code in ("connection", "timeout")
                )
                for entry in entries:  # a rate limit or a lost answer holds for all; else each alone
                    entry.outcome, entry.alone = (_copy(err), False) if whole else (None, True)
                return
            for entry in entries:
                entry.outcome = SendReceipt(provider_id=body.biz_id or request.out_id)
        finally:
            for entry in entries:
                if entry.outcome is None and not entry.alone:
                    entry.outcome = RetryableChannelError(
                        "the batch failed unexpectedly; outcome unknown", code="batch", in_doubt=True
                    )
                entry.done.set()

    def send_many(self, messages: list[OutgoingMessage]) -> list[BulkResult]:
        """A page of messages, by SendBatchSms at once (no batch window to wait for): messages of
        one template code and signature go in batches of up to `BATCH_LIMIT` numbers, each number
        once a batch (its receipts are told apart by number: a repeated number goes in another
        batch). Each message gets what the batched `send` gives it: the batch's `BizId`; the
        batch's error where a rate limit or a lost answer holds for all; else, where the batch was
        refused, its own `SendSms`. A batch of one is a `SendSms`. A message in doubt is settled
        by `send` alone (its earlier attempt looked up first). One result per message, in order."""
        results: list[BulkResult | None] = [None] * len(messages)
        batches: dict[tuple[str, str], list[list[tuple[int, _Waiting]]]] = {}
        numbers: dict[tuple[str, str], list[set[str]]] = {}  # the numbers in each of those batches
        for index, message in enumerate(messages):
            if message.earlier_attempt_at is not None:
                continue  # settled by `send`, below
            try:
                code, sign_name, params = self._template(message)
            except ChannelError as err:
                results[index] = err
                continue
            entry = _Waiting(message, aliyun_number(message.to), params)
            key = (code, sign_name)
            key_batches, key_numbers = batches.setdefault(key, []), numbers.setdefault(key, [])
            for batch, taken in zip(key_batches, key_numbers, strict=True):  # the first with room, without the number
                if len(batch) < BATCH_LIMIT and entry.number not in taken:
                    batch.append((index, entry))
                    taken.add(entry.number)
                    break
            else:
                key_batches.append([(index, entry)])
                key_numbers.append({entry.number})
        for (code, sign_name), key_batches in batches.items():
            for batch in key_batches:
                entries = [entry for _, entry in batch]
                try:
                    self._dispatch(entries, code, sign_name)
                except Exception as err:  # a surprise: each entry has its outcome (in doubt), the page goes on
                    logger.error("an Aliyun batch failed unexpectedly (%s)", type(err).__name__)
                for index, entry in batch:
                    if entry.alone:
                        results[index] = _result(
                            self._send_one, entry.message, entry.number, code, sign_name, entry.params
                        )
                    else:
                        results[index] = entry.outcome
        for index, message in enumerate(messages):
            if results[index] is None:
                results[index] = _result(self.send, message)
        return results

    # ------------------------------------------------------------------------------ doubt

    def _query(self, request) -> Any:
        """One page of QuerySendDetails. A read changes nothing at Aliyun, so a failed one is tried
        again at once, up to LOOKUP_TRIES, before the send stays in doubt for Temporal's next retry
        (whose backoff grows with every attempt a failed read would spend)."""
        for tries in range(1, LOOKUP_TRIES + 1):
            try:
                return self._call(self.client.query_send_details_with_options, request)
            except ChannelError as err:
                if tries == LOOKUP_TRIES:
                    raise RetryableChannelError(
                        f"cannot check Aliyun for an earlier attempt ({err}); outcome unknown",
                        code="lookup",
                        in_doubt=True,
                        retry_after=err.retry_after,
                    ) from None
                time.sleep(min(err.retry_after or 0.2, 2.0))
        raise AssertionError("unreachable")

    def _find_earlier(self, message: OutgoingMessage, number: str) -> str | None:
        """The receipt of this message if an earlier attempt reached Aliyun after all: a record
        of the number since the attempt with our OutId (a single send) or, sent in a batch (whose
        OutId is the batch's), with the same template and text."""
        since = _aware(message.earlier_attempt_at) - timedelta(minutes=1)
        day, today = since.astimezone(CHINA).date(), datetime.now(CHINA).date()
        day = max(day, today - timedelta(days=LOOKUP_DAYS - 1))
        while day <= today:
            for page in range(1, LOOKUP_PAGES + 1):
                request = sms_models.QuerySendDetailsRequest(
                    phone_number=number, send_date=day.strftime("%Y%m%d"), page_size=LOOKUP_PAGE, current_page=page
                )
                body = self._query(request)
                details = body.sms_send_detail_dtos.sms_send_detail_dto if body.sms_send_detail_dtos else None
                for detail in details or []:
                    if detail.out_id == message.message_id:
                        return settled_by_lookup(detail.out_id)
                    if (
                        (detail.out_id or "").startswith(BATCH_OUT_ID)  # another message's own OutId is not ours
                        and detail.template_code == message.provider_template
                        and detail.content == message.body
                        and _sent_at(detail.send_date) >= since
                    ):
                        return settled_by_lookup(detail.out_id or message.message_id)
                if not details or page * LOOKUP_PAGE >= int(body.total_count or 0):
                    break
            day += timedelta(days=1)
        return None


def _result(send, *args) -> BulkResult:
    """What `send(*args)` gives, its ChannelError included, for one message of a page."""
    try:
        return send(*args)
    except ChannelError as err:
        return err


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _sent_at(send_date: str | None) -> datetime:
    """Aliyun's SendDate (`2026-12-04 18:30:00`, Beijing time) as an aware time."""
    try:
        return datetime.strptime(send_date or "", "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA)
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # no date: the page is of the right day, count it
