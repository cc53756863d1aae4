"""`GET /l/{code}`: a tracked short link (短链) in a message, followed from the customer's phone.

No API key: like the providers' webhooks, it is called by someone outside (the customer), and
what protects it is the code itself, random and unguessable (store/clicks.py). A live code
answers 302 to its URL and records the click in one transaction: a `LinkClickRow` (each request
one row: a second click is a second row), the message moved to `clicked`, and a `message.clicked`
engine event in the event log at the link's first click (its id names the link: a refresh, a
second tap or a chat app's previewer fetching it again counts as a click but starts or steers no
journey a second time), so journeys can start or steer on it; then the dispatcher is woken, as
after `POST /events`.

An unknown, expired or malformed code is a 404 with a small page, nothing recorded. A `HEAD`
(the link previewers of chat apps and mail scanners) gets the redirect without being counted.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from activities.engine_events import write_engine_events
from core.loyalty import engine_event
from store.clicks import Click, live_link, record_click
from triggers.api.deps import ApiContext, Context

log = logging.getLogger("journeys.links")

router = APIRouter(tags=["short links"])

_GONE = '<!doctype html><meta charset="utf-8"><meta name="robots" content="noindex"><title>{title}</title><p>{text}</p>'

#: Answers no cache or referrer keeps: each click must reach us, and the code not leak onwards.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def _not_found() -> HTMLResponse:
    page = _GONE.format(
        title="Link not found", text=html.escape("This link does not work (any more). 链接无效或已过期。")
    )
    return HTMLResponse(page, status_code=404, headers=_HEADERS)


def _clicked_event(click: Click, at: datetime):
    """The click as the engine's `message.clicked` event (core/message_events.py), its id made of
    the link's code: the first click of a link is the event; later clicks find it written."""
    data = {
        "message_id": click.message_id,
        "journey": click.journey,
        "step": click.step,
        "variant": click.variant,
        "channel": click.channel,
        "url": click.url,
        "code": click.code,
    }
    return engine_event("message.clicked", click.customer_id, click.code, at, data)


def _follow(api: ApiContext, code: str, user_agent: str | None, count: bool):
    """The link's URL (None: no live link), having recorded the click when `count`; and whether
    an event was logged for the dispatcher."""

    def work(session: Session) -> tuple[str | None, bool]:
        now = datetime.now(UTC)
        link = live_link(session, code, now)
        if link is None:
            return None, False
        if not count:
            return link.url, False
        click = record_click(session, link, now, user_agent)
        if click is None:  # the message is gone: the link goes with it
            return None, False
        written = write_engine_events(session, [_clicked_event(click, now)], api.definitions, now)
        return link.url, bool(written) and "message.clicked" in api.definitions.routed_events

    return work


_RESPONSES = {
    404: {"description": "No such link, or it has expired: a small HTML page, nothing recorded."},
}


async def _answer(api: ApiContext, code: str, request: Request, *, count: bool) -> Response:
    url, routed = await api.store.run(_follow(api, code, request.headers.get("user-agent"), count))
    if url is None:
        return _not_found()
    if routed and api.on_accepted is not None:
        api.on_accepted()
    return RedirectResponse(url, status_code=302, headers=_HEADERS)


@router.get(
    "/l/{code:path}",
    response_class=RedirectResponse,
    status_code=302,
    responses={302: {"description": "To the link's URL; the click is recorded."}, **_RESPONSES},
    summary="Follow a tracked short link in a message (短链)",
)
async def follow(code: str, request: Request, api: Context) -> Response:
    return await _answer(api, code, request, count=True)


@router.head(
    "/l/{code:path}",
    response_class=RedirectResponse,
    status_code=302,
    responses={302: {"description": "To the link's URL; nothing is recorded (a link preview)."}, **_RESPONSES},
    summary="A link previewer's look at a short link: redirected, not counted",
)
async def preview(code: str, request: Request, api: Context) -> Response:
    return await _answer(api, code, request, count=False)
