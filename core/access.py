"""Who may do what through the API: API keys, their roles and what each role allows.

`JOURNEYS_API_KEYS` is a comma-separated list of keys, each written `[NAME:]ROLE:SECRET` or just
`SECRET` (a key of last release's format, which keeps the `admin` role it had). The name is what
records (an erasure's `requested_by`) say; without one, a key is named by its position and role.

| role       | may                                                                     |
|------------|-------------------------------------------------------------------------|
| `ingest`   | send events (the order systems' key)                                    |
| `read`     | also read histories, profiles, journeys, segments and the dead letters  |
| `operator` | also decrypt payloads (the codec endpoint), replay dead letters, start  |
|            | and cancel broadcasts, write drafts of definitions and dry-run them     |
| `publish`  | also approve (publish) or reject a draft (活动审核)                      |
| `admin`    | also erase customers                                                    |

A role allows everything the roles above it allow. Secrets never appear in messages or records.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum


class Permission(StrEnum):
    SEND_EVENTS = "send events"
    READ_EVENTS = "read the dead letters"
    READ_HISTORY = "read histories"
    READ_PROFILE = "read customer profiles"
    READ_JOURNEYS = "read journeys"
    READ_SEGMENTS = "read segments, broadcasts and their members"
    REPLAY_EVENTS = "replay dead letters"
    RUN_BROADCASTS = "start or cancel broadcasts"
    DECODE_PAYLOADS = "decrypt payloads"
    ERASE = "erase customers"
    REDEEM_POINTS = "redeem points"
    MANAGE_LOYALTY = "adjust points and set member tiers"
    WRITE_DRAFTS = "write, check and dry-run drafts of definitions"
    PUBLISH = "approve, publish or reject drafts of definitions"


class Role(StrEnum):
    INGEST = "ingest"
    READ = "read"
    OPERATOR = "operator"
    PUBLISH = "publish"
    ADMIN = "admin"


_INGEST = frozenset({Permission.SEND_EVENTS, Permission.REDEEM_POINTS})
_READ = _INGEST | {
    Permission.READ_EVENTS,
    Permission.READ_HISTORY,
    Permission.READ_PROFILE,
    Permission.READ_JOURNEYS,
    Permission.READ_SEGMENTS,
}
_OPERATOR = _READ | {
    Permission.REPLAY_EVENTS,
    Permission.DECODE_PAYLOADS,
    Permission.RUN_BROADCASTS,
    Permission.MANAGE_LOYALTY,
    Permission.WRITE_DRAFTS,
}
_PUBLISH = _OPERATOR | {Permission.PUBLISH}

#: The one table of what each role may do.
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.INGEST: _INGEST,
    Role.READ: _READ,
    Role.OPERATOR: _OPERATOR,
    Role.PUBLISH: _PUBLISH,
    Role.ADMIN: _PUBLISH | {Permission.ERASE},
}


def least_role(permission: Permission) -> Role:
    """The first role (in the order above) allowed `permission`, for messages."""
    return next(role for role in Role if permission in PERMISSIONS[role])


class ApiKeyError(ValueError):
    """A malformed JOURNEYS_API_KEYS entry; the message names the entry by position, never its secret."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: Role
    secret: bytes

    def allows(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]

    def matches(self, token: bytes) -> bool:
        return hmac.compare_digest(token, self.secret)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.secret).hexdigest()[:12]


def parse_api_keys(entries: list[str]) -> list[ApiKey]:
    """The keys of JOURNEYS_API_KEYS entries; ApiKeyError for an unknown role, an empty secret
    or two keys with one secret."""
    keys: list[ApiKey] = []
    roles = ", ".join(role.value for role in Role)
    for position, entry in enumerate((entry.strip() for entry in entries), start=1):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) == 1:
            name, role, secret = "", Role.ADMIN.value, parts[0]
        elif len(parts) == 2:
            name, (role, secret) = "", parts
        elif len(parts) == 3:
            name, role, secret = parts
        else:
            raise ApiKeyError(f"JOURNEYS_API_KEYS entry {position} is not [NAME:]ROLE:SECRET (too many ':')")
        if role not in Role.__members__.values():
            raise ApiKeyError(f"JOURNEYS_API_KEYS entry {position} has the unknown role {role!r}; roles are {roles}")
        if not secret:
            raise ApiKeyError(f"JOURNEYS_API_KEYS entry {position} has an empty secret")
        if any(key.secret == secret.encode() for key in keys):
            raise ApiKeyError(f"JOURNEYS_API_KEYS entry {position} repeats the secret of an earlier entry")
        keys.append(ApiKey(name=name or f"key {position} ({role})", role=Role(role), secret=secret.encode()))
    return keys


def find_key(keys: list[ApiKey], token: bytes) -> ApiKey | None:
    """The key whose secret is `token`, compared with every key in constant time."""
    found = None
    for key in keys:
        if key.matches(token):
            found = key
    return found


# ---------------------------------------------------------------------------------------------
# The console's sessions (made at its login, triggers/console/__init__.py; checked on each
# request, triggers/api/deps.py): a login with a key sets a cookie that stands for that key until
# it expires, signed with the key's own secret (so rotating a key ends its sessions, and every API
# process behind a balancer accepts it); each session has a CSRF token that the console's write
# actions must send back in a header.

#: What a console session may do: read, and the console's three actions. Never send events or
#: erase customers (those stay with API clients holding the key itself).
CONSOLE_PERMISSIONS = frozenset(
    {
        Permission.READ_EVENTS,
        Permission.READ_HISTORY,
        Permission.READ_PROFILE,
        Permission.READ_JOURNEYS,
        Permission.READ_SEGMENTS,
        Permission.REPLAY_EVENTS,
        Permission.RUN_BROADCASTS,
        Permission.WRITE_DRAFTS,
        Permission.PUBLISH,
    }
)
SESSION_COOKIE = "journeys_session"
CSRF_HEADER = "X-CSRF-Token"


def _sign(secret: bytes, *parts: str) -> str:
    return hmac.new(secret, "|".join(parts).encode(), hashlib.sha256).hexdigest()


def session_token(key: ApiKey, expires: int) -> str:
    """A session for `key` until `expires` (Unix seconds): NAME.EXPIRES.SIGNATURE."""
    return f"{key.name}.{expires}.{_sign(key.secret, 'console-session', key.name, str(expires))}"


def key_of_session(keys: list[ApiKey], token: str, now: float) -> ApiKey | None:
    """The key a session cookie stands for, if it is one of ours and has not expired."""
    try:
        name_part, expires_text, signature = token.rsplit(".", 2)
        expires = int(expires_text)
    except ValueError:
        return None
    if expires < now:
        return None
    found = None
    for key in keys:
        expected = _sign(key.secret, "console-session", key.name, expires_text)
        if key.name == name_part and hmac.compare_digest(expected, signature):
            found = key
    return found


def csrf_token(secret: bytes, session: str) -> str:
    """The CSRF token of a session (or, with no keys, of the process's secret)."""
    return _sign(secret, "console-csrf", session)
