"""The web console at `/ui/`, served by the API process: journeys with their effect, a chart per
day, a funnel per step, the holdout's uplift and a diagram of their steps with step previews;
customers and orders with their timeline and profile; segments, broadcasts and the dead letters.

The pages are one static application (`static/`, Chart.js vendored under `static/vendor/`: no
CDN, it works offline) that reads the API's own JSON endpoints, so the console shows exactly what
the API answers and needs no second implementation of anything.

Authorisation is the API's (triggers/api/deps.py `allowed`): with no keys configured the API
listens on loopback only and the console needs no login; with keys, `/ui/login` takes a key and
sets a session cookie (HttpOnly, SameSite=Strict, Secure under HTTPS; core.access signs it with
the key's secret) that the API accepts for what a console may do: read, start or cancel a
broadcast, replay dead letters. Those actions need the session's CSRF token in a header, which
the page carries in a meta tag.
"""

from __future__ import annotations

import functools
import html
import time
from pathlib import Path
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from core.access import SESSION_COOKIE, csrf_token, find_key, key_of_session, session_token
from triggers.api.deps import context

STATIC = Path(__file__).resolve().parent / "static"
#: How long a console login lasts.
SESSION_SECONDS = 12 * 3600

router = APIRouter(include_in_schema=False)


@functools.cache
def _template(name: str) -> str:
    """A page's HTML, read once per process."""
    return (STATIC / name).read_text(encoding="utf-8")


def _page(request: Request, csrf: str, who: str) -> HTMLResponse:
    shell = _template("index.html")
    shell = shell.replace("{{csrf}}", html.escape(csrf)).replace("{{who}}", html.escape(who))
    api = context(request)
    shell = (
        shell.replace("{{temporal_ui}}", html.escape(api.ui_url))
        .replace("{{currency}}", html.escape(api.prices.currency))
        .replace("{{shop_timezone}}", html.escape(api.shop_timezone))  # the page shows times in it, labelled
    )
    return HTMLResponse(shell, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})


def _login_page(message: str = "", status: int = 200) -> HTMLResponse:
    page = _template("login.html").replace("{{message}}", html.escape(message))
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/login")
async def login_form(request: Request) -> Response:
    if not context(request).keys:
        return RedirectResponse("/ui/", status_code=303)
    return _login_page()


@router.post("/ui/login")
async def login(request: Request) -> Response:
    """Check the key, then set the session cookie."""
    keys = context(request).keys
    if not keys:
        return RedirectResponse("/ui/", status_code=303)
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    secret = (form.get("key") or [""])[0].strip()
    key = find_key(keys, secret.encode()) if secret else None
    if key is None:
        return _login_page("That key is not known. 密钥无效。", status=401)
    response = RedirectResponse("/ui/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_token(key, int(time.time()) + SESSION_SECONDS),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/ui/logout")
async def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/ui/static/{name:path}")
async def static(name: str) -> Response:
    path = (STATIC / name).resolve()
    if STATIC not in path.parents or not path.is_file() or path.name.endswith(".html"):
        return Response("not found", status_code=404)
    media = {".js": "text/javascript", ".css": "text/css", ".md": "text/plain"}.get(
        path.suffix, "application/octet-stream"
    )
    return Response(path.read_bytes(), media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/ui/{page:path}")
async def console(page: str, request: Request) -> Response:
    """Every console page is the one application; it reads the path."""
    api = context(request)
    if not api.keys:
        return _page(request, csrf_token(api.console_secret, "local"), "local")
    cookie = request.cookies.get(SESSION_COOKIE, "")
    key = key_of_session(api.keys, cookie, time.time()) if cookie else None
    if key is None:
        return RedirectResponse(f"/ui/login?next={quote('/ui/' + page)}", status_code=303)
    return _page(request, csrf_token(key.secret, cookie), f"{key.name} ({key.role.value})")
