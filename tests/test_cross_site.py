"""A page of another site may not change anything in a local engine (no API keys: the API trusts
every caller on loopback). Browsers send a "simple" cross-site POST without a preflight, so the
API refuses what such a request looks like: a body that is not JSON (415, whatever the keys), and
with no keys an Origin or Sec-Fetch-Site of another site on any request that changes something
(403). curl and order systems send neither header and are not affected; reads never are; the
provider webhooks (signed, server to server) are not either."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from starlette.requests import Request

from tests.fake_provider import AUTH_TOKEN, twilio_signed
from tests.test_access import ROUTES
from tests.test_api import GOOD, client_for, logged
from triggers.api import create_app
from triggers.http import cross_site_refusal, json_refusal, origin_of
from triggers.webhooks import WebhookConfig

OWN = "http://journeys"  # client_for's base URL: the request's own origin
EVIL = "https://evil.example"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def app(store):
    return create_app(store, ui_origins=["http://127.0.0.1:8233"])


async def test_a_text_plain_or_form_body_on_post_events_is_415_and_nothing_is_logged(app, store):
    body = json.dumps(GOOD)
    async with client_for(app) as api:
        answers = [
            await api.post("/events", content=body, headers={"Content-Type": content_type})
            for content_type in (
                "text/plain",
                "text/plain;charset=UTF-8",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/xml",
            )
        ]
        form = await api.post("/events", data={"event": body})  # what an HTML form sends
    for answer in [*answers, form]:
        assert answer.status_code == 415, answer.text
        assert "takes JSON" in answer.json()["detail"]
    assert "text/plain" in answers[0].json()["detail"]
    assert logged(store) == []


async def test_json_with_parameters_and_a_body_without_content_type_are_taken(app, store):
    async with client_for(app) as api:
        charset = await api.post(
            "/events", content=json.dumps(GOOD), headers={"Content-Type": "application/json; charset=utf-8"}
        )
        bare = await api.post("/events", content=json.dumps({**GOOD, "event_id": "evt-2"}))  # no Content-Type
        suffixed = await api.post(
            "/events", content=json.dumps({**GOOD, "event_id": "evt-3"}), headers={"Content-Type": "application/x+json"}
        )
    assert bare.request.headers.get("content-type") is None
    assert (charset.status_code, bare.status_code, suffixed.status_code) == (202, 202, 202)
    assert [row.event_id for row in logged(store)] == ["evt-1", "evt-2", "evt-3"]


async def test_a_cross_site_origin_is_refused_with_no_keys_and_nothing_is_logged(app, store):
    async with client_for(app) as api:
        evil = await api.post("/events", json=GOOD, headers={"Origin": EVIL})
        null = await api.post("/events", json=GOOD, headers={"Origin": "null"})
        other_port = await api.post("/events", json=GOOD, headers={"Origin": "http://journeys:3000"})
        other_scheme = await api.post("/events", json=GOOD, headers={"Origin": "https://journeys"})
        fetch_site = await api.post("/events", json=GOOD, headers={"Sec-Fetch-Site": "cross-site"})
        same_site = await api.post("/events", json=GOOD, headers={"Sec-Fetch-Site": "same-site"})
        simple = await api.post(  # the attack as a browser sends it: text/plain, no preflight
            "/events", content=json.dumps(GOOD), headers={"Origin": EVIL, "Content-Type": "text/plain"}
        )
    for answer in (evil, null, other_port, other_scheme, fetch_site, same_site, simple):
        assert answer.status_code == 403, answer.text
        assert answer.json()["detail"].startswith("cross-site request refused: ")
    assert f"Origin {EVIL} is not this API's own origin ({OWN})" in evil.json()["detail"]
    assert "Sec-Fetch-Site is cross-site" in fetch_site.json()["detail"]
    assert logged(store) == []


async def test_the_api_own_origin_curl_and_a_configured_ui_origin_are_taken(app, store):
    async with client_for(app) as api:
        same_origin = await api.post("/events", json=GOOD, headers={"Origin": OWN, "Sec-Fetch-Site": "same-origin"})
        default_port = await api.post("/events", json={**GOOD, "event_id": "evt-2"}, headers={"Origin": OWN + ":80"})
        typed = await api.post("/events", json={**GOOD, "event_id": "evt-3"}, headers={"Sec-Fetch-Site": "none"})
        curl = await api.post("/events", json={**GOOD, "event_id": "evt-4"})
        ui = await api.post("/events", json={**GOOD, "event_id": "evt-5"}, headers={"Origin": "http://127.0.0.1:8233"})
    assert [a.status_code for a in (same_origin, default_port, typed, curl, ui)] == [202] * 5
    assert len(logged(store)) == 5


async def test_every_route_that_changes_something_refuses_another_site(app, store):
    """Not only the console's actions: sending events, replaying, broadcasts, the codec, erasure."""
    async with client_for(app) as api:
        for _permission, method, path, body in ROUTES:
            refused = await api.request(method, path, json=body, headers={"Origin": EVIL})
            if method == "GET":
                assert refused.status_code != 403, (path, refused.text)  # reads are never refused
            else:
                assert refused.status_code == 403, (path, refused.text)
                assert "cross-site request refused" in refused.json()["detail"]
                fetched = await api.request(method, path, json=body, headers={"Sec-Fetch-Site": "cross-site"})
                assert fetched.status_code == 403, (path, fetched.text)
    assert logged(store) == []


async def test_erasure_from_another_site_is_refused_before_temporal_is_asked(app):
    async with client_for(app) as api:
        refused = await api.delete("/customers/c1", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
        own = await api.delete("/customers/c1", headers={"Origin": OWN})
    assert refused.status_code == 403 and "cross-site request refused" in refused.json()["detail"]
    assert own.status_code == 503  # no Temporal here: past the check, the route ran


async def test_reads_with_a_foreign_origin_still_work(app, store):
    async with client_for(app) as api:
        await api.post("/events", json=GOOD)
        failed = await api.get("/events/failed", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
        health = await api.get("/healthz", headers={"Origin": EVIL})
    assert failed.status_code == 200 and failed.json() == []
    assert health.status_code == 200


async def test_the_console_csrf_check_still_applies_to_its_own_origin(app):
    """Same-origin console requests pass the cross-site rule and still need the page's CSRF token."""
    async with client_for(app) as api:
        page = await api.get("/ui/")
        token = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        browser = {"Origin": OWN, "Sec-Fetch-Site": "same-origin"}
        without = await api.post("/events/replay", json={"event_ids": []}, headers=browser)
        with_token = await api.post(
            "/events/replay", json={"event_ids": []}, headers={**browser, "X-CSRF-Token": token}
        )
        cross = await api.post(
            "/events/replay", json={"event_ids": []}, headers={"Origin": EVIL, "X-CSRF-Token": token}
        )
    assert without.status_code == 403 and "X-CSRF-Token" in without.json()["detail"]
    assert with_token.status_code == 200, with_token.text
    assert cross.status_code == 403 and "cross-site request refused" in cross.json()["detail"]


async def test_with_api_keys_the_key_judges_a_cross_origin_request(store):
    """With keys configured a page cannot hold the key (and the console's cookie is SameSite=Strict
    with CSRF tokens), so the Origin is not judged; a body that is not JSON still gets a 415."""
    app = create_app(store, api_keys=["shop:ingest:k-ingest"])
    key = {"Authorization": "Bearer k-ingest"}
    async with client_for(app) as api:
        keyed = await api.post("/events", json=GOOD, headers={**key, "Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
        keyless = await api.post("/events", json={**GOOD, "event_id": "evt-2"}, headers={"Origin": EVIL})
        plain = await api.post("/events", content=json.dumps(GOOD), headers={**key, "Content-Type": "text/plain"})
        plain_keyless = await api.post("/events", content=json.dumps(GOOD), headers={"Content-Type": "text/plain"})
    assert keyed.status_code == 202, keyed.text
    assert keyless.status_code == 401  # the key is judged first, as before
    assert plain.status_code == 415 and plain_keyless.status_code == 401
    assert [row.event_id for row in logged(store)] == ["evt-1"]


async def test_provider_webhooks_are_not_judged_by_origin_or_content_type(store):
    """Twilio posts a form (no Origin, server to server); its signature is what is checked."""
    public = "https://journeys.example.com"
    app = create_app(store, webhooks=WebhookConfig(public_url=public, twilio_auth_token=AUTH_TOKEN))
    form = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+8613800000001", "From": "+15005550006"}
    async with client_for(app) as api:
        signed = twilio_signed(public + "/webhooks/twilio/status", form)
        answer = await api.post("/webhooks/twilio/status", content=urlencode(form), headers=signed)
        foreign = await api.post("/webhooks/twilio/status", content=urlencode(form), headers={**signed, "Origin": EVIL})
    assert signed["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert answer.status_code == 200, answer.text
    assert foreign.status_code == 200, foreign.text


def _request(method: str, headers: dict[str, str], url: str = "http://127.0.0.1:8000/events") -> Request:
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    raw = [(b"host", host.encode())] + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "method": method, "scheme": scheme, "path": "/" + path, "query_string": b"",
             "headers": raw, "server": None}  # fmt: skip
    return Request(scope)


@pytest.mark.parametrize(
    ("method", "headers", "refused"),
    [
        ("POST", {}, False),
        ("POST", {"Origin": "http://127.0.0.1:8000"}, False),
        ("POST", {"Origin": "HTTP://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}, False),
        ("POST", {"Origin": "http://localhost:8000"}, True),
        ("POST", {"Origin": "http://127.0.0.1:8233"}, False),  # the configured UI origin
        ("PUT", {"Origin": EVIL}, True),
        ("PATCH", {"Sec-Fetch-Site": "cross-site"}, True),
        ("DELETE", {"Sec-Fetch-Site": "same-site"}, True),
        ("POST", {"Sec-Fetch-Site": "none"}, False),
        ("GET", {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}, False),
        ("HEAD", {"Origin": EVIL}, False),
        ("POST", {"Origin": "http://127.0.0.1:notaport"}, True),
    ],
)
def test_the_cross_site_rule(method, headers, refused):
    reason = cross_site_refusal(_request(method, headers), ["http://127.0.0.1:8233"])
    assert (reason is not None) == refused, reason


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Content-Length": "2"}, False),
        ({"Content-Length": "2", "Content-Type": "application/json"}, False),
        ({"Content-Length": "2", "Content-Type": "Application/JSON; charset=utf-8"}, False),
        ({"Content-Length": "2", "Content-Type": "application/problem+json"}, False),
        ({"Content-Length": "2", "Content-Type": "text/plain"}, True),
        ({"Content-Length": "2", "Content-Type": "text/json"}, True),
        ({"Transfer-Encoding": "chunked", "Content-Type": "multipart/form-data; boundary=x"}, True),
        ({"Content-Length": "0", "Content-Type": "text/plain"}, False),  # no body: nothing to read
        ({"Content-Type": "text/plain"}, False),
    ],
)
def test_the_json_rule(headers, refused):
    reason = json_refusal(_request("POST", headers))
    assert (reason is not None) == refused, reason


def test_origins_are_compared_by_scheme_host_and_port():
    assert origin_of("http://127.0.0.1") == ("http", "127.0.0.1", 80)
    assert origin_of("https://Example.COM") == origin_of("https://example.com:443")
    assert origin_of("http://[::1]:8000") == ("http", "::1", 8000)
    assert origin_of("null") is None and origin_of("file://x") is None and origin_of("http://h:99999") is None
