"""What an SMS reply means under the shop's reply rules (应答设置, `definitions/replies.yaml`,
core/replies.py): pure, from the text alone. The intake (triggers/reply_intake.py) classifies each
reply with it as it is logged; the answering side reads the same decision again from the text.

How a reply is compared, so that what a customer types on any phone matches:
- keywords: the whole reply, NFKC-normalised (full-width ｔｄ and ＴＤ are td and TD), trimmed,
  upper-cased, with trailing punctuation and spaces dropped (`TD。`, `退订！`, `t.` match);
- patterns: searched (not matched from the start) in the NFKC-normalised, trimmed text, case as
  typed (a pattern may say `(?i)`);
- the first rule that matches wins; with none, `otherwise` (a webhook or nothing).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from core.replies import ReplyAction, ReplyRule, ReplyRules

#: What a keyword comparison drops from the end of a reply (after NFKC, which makes ！ and ．
#: ASCII): the ideographic full stop and exclamation mark, ASCII ones, and spaces.
TRAILING = "。！!. \t\r\n\u3000"


def normalised(text: str) -> str:
    """The reply as keywords are compared: NFKC, trimmed, upper-cased, trailing punctuation dropped."""
    return unicodedata.normalize("NFKC", text).strip().rstrip(TRAILING).upper()


@lru_cache(maxsize=256)
def _pattern(source: str) -> re.Pattern[str]:
    return re.compile(source)


def matches(rule: ReplyRule, text: str) -> bool:
    """Whether `rule` matches `text`: one of its keywords as the whole reply, or its pattern found in it."""
    word = normalised(text)
    if word and any(normalised(keyword) == word for keyword in rule.keywords):
        return True
    return rule.pattern is not None and _pattern(rule.pattern).search(unicodedata.normalize("NFKC", text).strip())


def match(rules: ReplyRules, text: str) -> ReplyRule | None:
    """The first rule that matches `text`, or None: then `rules.otherwise` applies."""
    return next((rule for rule in rules.rules if matches(rule, text)), None)


@dataclass(frozen=True)
class Decision:
    """What a reply gets: the action, the rule that decided it (None: `otherwise`), and where the
    webhook goes for a `webhook` action (the rule's url, or `otherwise`'s)."""

    action: ReplyAction
    rule: ReplyRule | None
    url: str | None = None

    @property
    def needs_answer(self) -> bool:
        """Whether anything is left to do after the reply is logged (and the suppression added): a
        confirmation to send, an answer template, or a webhook to post. The intake hands those on."""
        if self.action == "unsubscribe":
            return bool(self.rule is not None and self.rule.confirm)
        return self.action in ("answer", "webhook")


def decide(rules: ReplyRules, text: str) -> Decision:
    """The action for `text`: the first matching rule's, else `otherwise`'s."""
    rule = match(rules, text)
    if rule is not None:
        return Decision(rule.action, rule, rule.url if rule.action == "webhook" else None)
    otherwise = rules.otherwise
    return Decision(otherwise.action, None, otherwise.url if otherwise.action == "webhook" else None)
