"""How many parts (the segments carriers bill) an SMS body takes. Customer segments are elsewhere:
core/audience.py and store/segments.py.

A body entirely in the GSM 03.38 alphabet is sent GSM-7: 160 characters in one segment, else 153
per segment (the extension characters ^{}\\[~]|€ count twice). Anything else (Chinese, emoji) is
sent UCS-2: 70 UTF-16 units in one segment, else 67 per segment.
"""

from __future__ import annotations

from math import ceil

from pydantic import BaseModel

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

#: The longest body Twilio takes (it splits and joins up to 10 segments' worth).
MAX_SMS_CHARS = 1600


class SmsParts(BaseModel):
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int


def sms_segments(body: str) -> SmsParts:
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body):
        units = len(body) + sum(char in GSM7_EXTENSION for char in body)
        return SmsParts(encoding="GSM-7", units=units, count=1 if units <= 160 else ceil(units / 153))
    units = len(body.encode("utf-16-le")) // 2
    return SmsParts(encoding="UCS-2", units=units, count=1 if units <= 70 else ceil(units / 67))
