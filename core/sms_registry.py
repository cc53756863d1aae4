"""What a shop has registered with its domestic SMS gateway (Aliyun SMS, Dysmsapi): its
signatures (短信签名, 签名报备) and its templates (短信模板, 模板报备), each with the carrier-approved
text and the `${name}` parameters it declares. Kept in `definitions/sms.yaml`.

Aliyun sends only a registered template code with parameters under a registered signature, never
free text. The customer gets `【signature】` followed by the registered text with the parameters
in: `aliyun_text`. Aliyun bills by characters, not GSM/UCS-2 units: 70 characters (signature
included) in one part, else 67 a part (`aliyun_parts`).
"""

from __future__ import annotations

import re
from math import ceil
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: A template's kind as registered: 验证码, 短信通知, 推广短信 (marketing: it must carry the opt-out text).
TemplateKind = Literal["verification", "notification", "marketing"]

#: A parameter in a registered text: `${name}`.
PARAMETER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: Aliyun's billing: one part up to 70 characters, else 67 characters a part.
SINGLE_PART_CHARS = 70
MULTI_PART_CHARS = 67
#: The most numbers one SendBatchSms call takes.
BATCH_LIMIT = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegisteredTemplate(_Strict):
    """One template as the gateway approved it."""

    kind: TemplateKind = "notification"
    text: str = Field(min_length=1, description="The approved text, with `${name}` parameters.")
    title: str | None = Field(default=None, description="What the shop calls it (模板名称).")

    @property
    def parameters(self) -> tuple[str, ...]:
        return declared_parameters(self.text)


class SmsRegistry(_Strict):
    """`definitions/sms.yaml`: the shop's registered signatures and templates (by template code)."""

    signatures: list[str] = Field(default_factory=list, description="The signatures (签名) registered and approved.")
    opt_out: str = Field(
        default="回T退订", min_length=1, description="The 退订 text every marketing template must carry."
    )
    templates: dict[str, RegisteredTemplate] = Field(
        default_factory=dict, description="Registered templates by their code (SMS_123456789)."
    )
    #: What one billed part costs, in the shop's currency; None: JOURNEYS_SMS_PRICE.
    price_per_part: float | None = Field(default=None, ge=0)


#: No registry: a shop without `definitions/sms.yaml`.
NO_REGISTRY = SmsRegistry()


def declared_parameters(text: str) -> tuple[str, ...]:
    """The parameters a registered text declares, each once, in order."""
    return tuple(dict.fromkeys(PARAMETER.findall(text)))


def aliyun_text(sign_name: str, text: str, params: dict[str, str]) -> str:
    """What the customer's phone shows: `【signature】` and the text with its parameters in.
    A parameter not given stays as written (`journeys validate` refuses such a template)."""
    filled = PARAMETER.sub(lambda m: str(params.get(m.group(1), m.group(0))), text)
    return f"【{sign_name}】{filled}"


def aliyun_parts(text: str) -> int:
    """The parts Aliyun bills for `text` (the signature included)."""
    length = len(text)
    return 1 if length <= SINGLE_PART_CHARS else ceil(length / MULTI_PART_CHARS)


def settled_by_lookup(out_id: str) -> str:
    """The ledger's provider id of an Aliyun send settled by QuerySendDetails, which answers with
    the OutId but no BizId (channels/aliyun_sms.py); a later receipt's BizId replaces it."""
    return f"aliyun-out:{out_id}"[:120]
