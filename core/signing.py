"""The HMAC signatures Journeys makes: on webhook-channel requests (receivers check them with
`verify_signature`) and on the unsubscribe links in marketing email (only we can make one)."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Journeys-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, *, now: float | None = None, tolerance: int = 300) -> bool:
    """For receivers: does `header` sign `body` with `secret`, within `tolerance` seconds?"""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    stamp = parts.get("t", "")
    if not stamp.isdigit() or abs((now if now is not None else time.time()) - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, int(stamp)), f"t={stamp},v1={parts.get('v1', '')}")


def unsubscribe_token(secret: str, message_id: str) -> str:
    """The token of a one-click unsubscribe link for one message."""
    return hmac.new(secret.encode(), f"unsubscribe:{message_id}".encode(), hashlib.sha256).hexdigest()[:32]
