"""What the API's routes share about reading requests, and the rules a request that changes
something must pass before any route reads it (`cross_site_refusal`, `json_refusal`; the API's
`allowed` dependency applies both, triggers/api/deps.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

#: Methods that only read; every other method (POST, PUT, PATCH, DELETE) changes something.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_DEFAULT_PORTS = {"http": 80, "https": 443}


async def read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None when it is over `limit` bytes (by its declared length or as it streams)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class BodyRefused(ValueError):
    """A body no route can read: over the size limit (`status` 413) or not JSON (422)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON; BodyRefused when it is over `limit` bytes or not JSON we can read."""
    body = await read_body(request, limit)
    if body is None:
        raise BodyRefused(f"the body is over {limit} bytes", 413)
    try:
        return json.loads(body)
    except RecursionError:
        raise BodyRefused("the body is not JSON we can read: it nests too deeply", 422) from None
    except ValueError as err:  # not JSON, not UTF-8, or an integer past Python's 4,300 digits
        raise BodyRefused(f"the body is not JSON: {err}", 422) from None


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL or Origin, the port filled in; None for anything
    else (`null`, another scheme, a malformed port)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def cross_site_refusal(request: Request, trusted_origins: Iterable[str] = ()) -> str | None:
    """Why a request that changes something came from another site's page, or None when it did
    not. For an API that trusts every caller (no API keys): a browser sends `Origin` (and
    `Sec-Fetch-Site`) on a page's POST, curl and order systems send neither. Refused: an `Origin`
    whose scheme, host and port differ from the request's own (its Host) and that is not one of
    `trusted_origins` (the Temporal Web UI's, for /codec); `Sec-Fetch-Site: cross-site` or
    `same-site` (another port or subdomain is another origin) without such a trusted Origin."""
    if request.method.upper() in SAFE_METHODS:
        return None
    origin = request.headers.get("origin")
    fetch_site = request.headers.get("sec-fetch-site", "").strip().lower()
    if origin is None and fetch_site not in ("cross-site", "same-site"):
        return None
    own = origin_of(str(request.url))
    if origin is not None:
        theirs = origin_of(origin)
        if theirs is not None and theirs in {origin_of(trusted) for trusted in trusted_origins}:
            return None
        if theirs is None or theirs != own:
            shown = origin if origin.isprintable() and len(origin) <= 200 else repr(origin[:200])
            return (
                f"cross-site request refused: Origin {shown} is not this API's own origin "
                f"({_shown(own)}) nor a configured UI origin; with no API keys configured, a page from another "
                "site may not change anything here (curl and order systems send no Origin and are not affected)"
            )
    if fetch_site in ("cross-site", "same-site"):
        return (
            f"cross-site request refused: Sec-Fetch-Site is {fetch_site}; with no API keys configured, a page "
            "from another site may not change anything here (curl and order systems are not affected)"
        )
    return None


def json_refusal(request: Request) -> str | None:
    """Why a request with a body is not JSON (for a 415), or None when it is. `application/json`
    (any parameters, e.g. `; charset=utf-8`) and `application/*+json` are JSON; so is a body with no
    Content-Type at all (a client that names none, as `curl -H 'Content-Type:'`): a browser page
    that sends one also sends an Origin, which `cross_site_refusal` judges. Everything a page can
    send without a CORS preflight (`text/plain`, `application/x-www-form-urlencoded`,
    `multipart/form-data`) is refused, and so is any other type."""
    if request.method.upper() in SAFE_METHODS or not _has_body(request):
        return None
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if not media or media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return None
    shown = media if media.isprintable() and len(media) <= 100 else "another type"
    return f"this endpoint takes JSON: send Content-Type: application/json (not {shown})"


#: What a file upload (`POST /imports`) may be sent as: types a page of another site cannot send
#: without asking first (a CORS preflight), unlike text/plain, forms and multipart.
FILE_TYPES = frozenset({"text/csv", "application/octet-stream", "application/vnd.ms-excel"})


def file_refusal(request: Request) -> str | None:
    """`json_refusal` for an endpoint that takes a file: why the body's type is refused, or None."""
    if request.method.upper() in SAFE_METHODS or not _has_body(request):
        return None
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not media or media in FILE_TYPES:
        return None
    shown = media if media.isprintable() and len(media) <= 100 else "another type"
    return f"this endpoint takes a file: send Content-Type: text/csv or application/octet-stream (not {shown})"


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in request.headers


def _shown(origin: tuple[str, str, int] | None) -> str:
    if origin is None:
        return "unknown"
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if _DEFAULT_PORTS[scheme] == port else f":{port}")
