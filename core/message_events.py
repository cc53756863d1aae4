"""The engine's events about messages, written into the event log exactly once each (with
core.loyalty.engine_event: the id is made of what it is about) and start or steer journeys like
any event; the API refuses them from outside:

- `sms.replied` (customer): a customer answered an SMS (回复记录). `text` (the reply, trimmed),
  `reply_id`, `action` (what the reply rules decided: unsubscribe, answer, webhook, ignore), and,
  when the reply could be linked to the message it answers, `message_id`, `journey`, `step` and
  `order_id`;
- `message.clicked` (customer): a tracked short link in a message was followed (短链点击), once
  per link (its first click; every click is counted in the reports):
  `message_id`, `journey`, `step`, `variant`, `channel`, `url`, `code`.
"""

from __future__ import annotations

_TEXT = {"type": "string"}
_OPTIONAL = {"type": ["string", "null"]}

#: Their title and the JSON Schema of their `data` (definitions/events.py declares them).
MESSAGE_EVENT_SCHEMAS: dict[str, tuple[str, dict]] = {
    "sms.replied": (
        "短信回复",
        {
            "type": "object",
            "required": ["text", "reply_id", "action"],
            "properties": {
                "text": _TEXT,
                "reply_id": _TEXT,
                "action": {"enum": ["unsubscribe", "answer", "webhook", "ignore"]},
                "message_id": _OPTIONAL,
                "journey": _OPTIONAL,
                "step": _OPTIONAL,
                "order_id": _OPTIONAL,
            },
        },
    ),
    "message.clicked": (
        "短链点击",
        {
            "type": "object",
            "required": ["message_id", "url", "code"],
            "properties": {
                "message_id": _TEXT,
                "journey": _TEXT,
                "step": _TEXT,
                "variant": _OPTIONAL,
                "channel": _OPTIONAL,
                "url": _TEXT,
                "code": _TEXT,
            },
        },
    ),
}
