"""What the shop answers to an SMS reply (应答设置): `definitions/replies.yaml`.

Rules are tried in order; the first that matches a reply's text (trimmed; keywords compared
upper-case, trailing punctuation dropped) decides what happens:
- `unsubscribe`: the number gets no more marketing SMS; the `confirm` template answers once,
  at any hour (the confirmation is required by law);
- `answer`: the `template` answers once, within the shop's quiet hours;
- `webhook`: the reply goes to the shop's customer service (`url`), with the order it most likely
  concerns;
- `ignore`: nothing.
Without a matching rule, `otherwise` applies (a webhook or nothing). Without the file, the
built-in rule unsubscribes on TD, T and 退订 (and Twilio's STOP words) and confirms nothing.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ReplyAction = Literal["unsubscribe", "answer", "webhook", "ignore"]

#: Twilio's own opt-out and opt-in words (its default Advanced Opt-Out keywords, compared as the
#: reply rules compare keywords): Twilio blocks or unblocks the sender on them and confirms itself
#: (triggers/webhooks.py); through Aliyun, the built-in rule below unsubscribes on them too.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "STOP ALL", "OPTOUT", "REVOKE"})
START_WORDS = frozenset({"START", "UNSTOP"})
#: The practice's unsubscribe words (回T退订): marketing SMS stop.
PRACTICE_UNSUBSCRIBE_WORDS = ("TD", "T", "退订", "退订回T")
#: The unsubscribe words of the practice and of Twilio's STOP handling: the built-in rule's.
UNSUBSCRIBE_WORDS = PRACTICE_UNSUBSCRIBE_WORDS + tuple(sorted(STOP_WORDS))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplyRule(_Strict):
    keywords: list[str] = Field(default_factory=list, description="Whole replies that match (TD, 退订, 1).")
    pattern: str | None = Field(default=None, description="A regular expression searched in the reply.")
    action: ReplyAction
    template: str | None = Field(default=None, description="`answer`: the template sent back.")
    confirm: str | None = Field(default=None, description="`unsubscribe`: the confirmation template.")
    url: str | None = Field(default=None, description="`webhook`: where the reply is posted.")

    @model_validator(mode="after")
    def _complete(self) -> ReplyRule:
        if not self.keywords and self.pattern is None:
            raise ValueError("a rule needs keywords or a pattern")
        if self.action == "answer" and not self.template:
            raise ValueError("an `answer` rule needs a template")
        if self.action == "webhook" and not self.url:
            raise ValueError("a `webhook` rule needs a url")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {err}") from err
        return self


class Otherwise(_Strict):
    action: Literal["webhook", "ignore"] = "ignore"
    url: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Otherwise:
        if self.action == "webhook" and not self.url:
            raise ValueError("a `webhook` fallback needs a url")
        return self


class ReplyRules(_Strict):
    rules: list[ReplyRule] = Field(default_factory=list)
    otherwise: Otherwise = Field(default_factory=Otherwise)


#: Without replies.yaml: unsubscribe on the practice's and Twilio's words, confirm nothing.
DEFAULT_REPLIES = ReplyRules(rules=[ReplyRule(keywords=list(UNSUBSCRIBE_WORDS), action="unsubscribe")])
