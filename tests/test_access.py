"""API keys and roles: each endpoint that reads or changes customer data needs a key whose role
allows it. An order system's key sends events and redeems points, nothing else; a read-only key cannot erase or
decrypt; a key of last release's format keeps full access."""

from __future__ import annotations

import pytest

from core.access import PERMISSIONS, ApiKeyError, Permission, Role, parse_api_keys
from core.encryption import EncryptionCodec, parse_keys
from tests.test_api import GOOD, client_for
from triggers.api import create_app

KEYS = ["shop:ingest:k-ingest", "support:read:k-read", "oncall:operator:k-operator", "dpo:admin:k-admin", "k-legacy"]
TOKEN = {
    Role.INGEST: "k-ingest",
    Role.READ: "k-read",
    Role.OPERATOR: "k-operator",
    Role.ADMIN: "k-admin",
}

#: Every route behind a key, what it needs, and a request for it.
ROUTES = [
    (Permission.SEND_EVENTS, "POST", "/events", GOOD),
    (Permission.READ_EVENTS, "GET", "/events/failed", None),
    (Permission.REPLAY_EVENTS, "POST", "/events/replay", {"event_ids": ["nothing"]}),
    (Permission.READ_HISTORY, "GET", "/customers/c1/history", None),
    (Permission.READ_HISTORY, "GET", "/orders/o1/history", None),
    (Permission.READ_JOURNEYS, "GET", "/journeys", None),
    (Permission.READ_PROFILE, "GET", "/customers/c1", None),
    (Permission.READ_PROFILE, "GET", "/customers/c1/replies", None),
    (Permission.READ_SEGMENTS, "GET", "/segments", None),
    (Permission.READ_SEGMENTS, "GET", "/segments/lapsing/members", None),
    (Permission.READ_SEGMENTS, "GET", "/lifecycle/report?month=2026-03", None),
    (Permission.READ_SEGMENTS, "GET", "/broadcasts/x/dry-run", None),
    (Permission.READ_SEGMENTS, "GET", "/broadcasts/x/runs", None),
    (Permission.RUN_BROADCASTS, "POST", "/broadcasts/x/start", None),
    (Permission.RUN_BROADCASTS, "POST", "/broadcasts/x/cancel", None),
    (Permission.DECODE_PAYLOADS, "POST", "/codec/decode", {"payloads": []}),
    (Permission.DECODE_PAYLOADS, "POST", "/codec/encode", {"payloads": []}),
    (Permission.ERASE, "DELETE", "/customers/c1", None),
    (Permission.SEND_EVENTS, "POST", "/products", {"sku": "cream-30", "title": "面霜", "category": "skincare"}),
    (Permission.READ_JOURNEYS, "GET", "/products/cream-30", None),
    (Permission.READ_PROFILE, "GET", "/customers/c1/points", None),
    (Permission.READ_PROFILE, "GET", "/points/overview", None),
    (Permission.REDEEM_POINTS, "POST", "/points/redeem", {"customer_id": "c1", "points": 1, "request_id": "r1"}),
    (
        Permission.MANAGE_LOYALTY,
        "POST",
        "/points/adjust",
        {"customer_id": "c1", "points": 5, "reason": "x", "request_id": "a1"},
    ),
    (Permission.READ_PROFILE, "GET", "/customers/c1/tier", None),
    (Permission.MANAGE_LOYALTY, "POST", "/customers/c1/tier", {"tier": "vip", "reason": "补偿"}),
    (Permission.READ_PROFILE, "GET", "/tiers/report", None),
    (Permission.READ_JOURNEYS, "GET", "/reports/sms", None),
]


@pytest.fixture
def app(store):
    codec = EncryptionCodec(parse_keys("k1=" + "A" * 43 + "="))
    return create_app(store, api_keys=KEYS, codec=codec)


async def test_every_route_answers_each_role_by_the_table(app):
    """No Temporal is configured here, so a route a key may use answers 503 where it needs
    Temporal; one it may not use answers 403 before anything is asked."""
    async with client_for(app) as api:
        for permission, method, path, body in ROUTES:
            missing = await api.request(method, path, json=body)
            assert missing.status_code == 401, (path, missing.text)
            for role, token in TOKEN.items():
                answer = await api.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
                if permission in PERMISSIONS[role]:
                    assert answer.status_code not in (401, 403), (role, path, answer.text)
                else:
                    assert answer.status_code == 403, (role, path, answer.text)
                    assert permission.value in answer.json()["detail"]
                    assert token not in answer.text


async def test_a_read_only_key_cannot_erase_and_says_which_role_can(app):
    async with client_for(app) as api:
        answer = await api.delete("/customers/c1", headers={"Authorization": "Bearer k-read"})
        assert answer.status_code == 403
        assert answer.json()["detail"] == (
            "this API key (support, role read) may not erase customers; that needs the role admin or above"
        )
        # The order system's key sends events, and that is all.
        sent = await api.post("/events", json=GOOD, headers={"Authorization": "Bearer k-ingest"})
        assert sent.status_code == 202
        history = await api.get("/customers/c1/history", headers={"Authorization": "Bearer k-ingest"})
        assert history.status_code == 403 and "may not read histories" in history.json()["detail"]


async def test_a_key_in_last_releases_format_keeps_full_access(app):
    async with client_for(app) as api:
        for permission, method, path, body in ROUTES:
            answer = await api.request(method, path, json=body, headers={"Authorization": "Bearer k-legacy"})
            assert answer.status_code not in (401, 403), (permission, answer.text)


async def test_health_checks_webhooks_and_short_links_need_no_key(app):
    async with client_for(app) as api:
        assert (await api.get("/healthz")).status_code == 200
        # A customer's phone follows a short link with no key: an unknown code is the link's 404 page.
        link = await api.get("/l/unknownCode12345")
        assert link.status_code == 404 and "链接无效或已过期" in link.text
        unsigned = await api.post("/webhooks/sendgrid/events", json=[])  # providers sign instead
        assert unsigned.status_code == 403 and unsigned.json()["detail"] == "SendGrid signature missing or invalid"
        # Aliyun signs nothing: its push URL's token is the check (none configured here: refused).
        aliyun = await api.post("/webhooks/aliyun/guess/report", json=[])
        assert aliyun.status_code == 403 and aliyun.json()["msg"] == "push token missing or wrong"


def test_the_key_list_is_checked_and_errors_never_show_a_secret():
    keys = parse_api_keys([" shop:ingest:a ", "b", "", "read:c"])
    assert [(key.name, key.role) for key in keys] == [
        ("shop", Role.INGEST),
        ("key 2 (admin)", Role.ADMIN),
        ("key 4 (read)", Role.READ),
    ]
    for entries, message in [
        (["x:root:secret-1"], "entry 1 has the unknown role 'root'; roles are ingest, read, operator, publish, admin"),
        (["a", "read:"], "entry 2 has an empty secret"),
        (["a:b:c:secret-1"], "entry 1 is not [NAME:]ROLE:SECRET"),
        (["read:secret-1", "admin:secret-1"], "entry 2 repeats the secret of an earlier entry"),
    ]:
        with pytest.raises(ApiKeyError) as raised:
            parse_api_keys(entries)
        assert message in str(raised.value) and "secret-1" not in str(raised.value)


def test_each_role_allows_what_the_one_before_it_does():
    roles = list(Role)
    for lower, higher in zip(roles, roles[1:], strict=False):
        assert PERMISSIONS[lower] < PERMISSIONS[higher]
    assert set(PERMISSIONS[Role.ADMIN]) == set(Permission)
    assert Permission.ERASE not in PERMISSIONS[Role.OPERATOR]
    assert Permission.DECODE_PAYLOADS not in PERMISSIONS[Role.READ]


async def test_another_scheme_than_bearer_is_unauthorised(app):
    async with client_for(app) as api:
        answer = await api.post("/events", json=GOOD, headers={"Authorization": "Basic k-admin"})
        assert answer.status_code == 401
