"""Customer data encrypted in Temporal: a payload codec that seals every payload the project
writes (workflow inputs, signals, activity arguments and results, queries, memo) with AES-256-GCM
before it leaves the process, the way Temporal's own `encryption` sample does.

Keys come as `key-id=base64-key` pairs, comma-separated (`JOURNEYS_ENCRYPTION_KEYS`), or one pair
a line in a key file (`journeys up` makes one). The first key encrypts; every key decrypts, so a
key is rotated by putting a new one first and keeping the old ones until no history needs them.
The key id travels in the payload's metadata. A payload that is not encrypted (a history from
before encryption was turned on) passes through, so old histories still replay.

Search attributes are not payloads: they stay plaintext, and hold ids only (journey, customer id,
order id, version), never contact data.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class EncryptionKeyError(ValueError):
    """A key setting that cannot be used; the message names what is wrong (never the key)."""


def parse_keys(text: str) -> dict[str, bytes]:
    """`id=base64,id2=base64` (or one pair a line) as {id: key}, in order; each key 32 bytes."""
    keys: dict[str, bytes] = {}
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        key_id, separator, encoded = item.partition("=")
        key_id = key_id.strip()
        if not separator or not key_id:
            raise EncryptionKeyError("each encryption key is `key-id=base64-key`")
        try:
            key = base64.b64decode(encoded.strip() + "=" * (-len(encoded.strip()) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionKeyError(f"encryption key {key_id!r} is not base64") from None
        if len(key) != 32:
            raise EncryptionKeyError(f"encryption key {key_id!r} has {len(key)} bytes; AES-256 needs 32")
        keys[key_id] = key
    return keys


def new_key_line(key_id: str) -> str:
    """A fresh random key as a `key-id=base64` line."""
    return f"{key_id}={base64.b64encode(os.urandom(32)).decode()}"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole payload (metadata and data), with the current key; decrypts
    with whichever key the payload names."""

    def __init__(self, keys: Mapping[str, bytes]):
        if not keys:
            raise EncryptionKeyError("no encryption key given")
        self.current = next(iter(keys))
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    async def encode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.open(p) for p in payloads]

    def seal(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: self.current.encode()}, data=nonce + sealed)

    def open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was on
        key_id = payload.metadata.get(KEY_ID, b"").decode()
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(self._ciphers)
            raise EncryptionKeyError(
                f"a payload is encrypted with key {key_id!r}, which is not configured (keys: {known})"
            )
        return Payload.FromString(cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None))


class MissingKeyCodec(PayloadCodec):
    """With no key configured: payloads go out as they are, and an encrypted one that comes back
    fails with one line naming its key and where keys were looked for (`looked`), instead of the
    converter's `KeyError: 'Unknown payload encoding binary/encrypted'`."""

    def __init__(self, looked: str):
        self.looked = looked

    async def encode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Iterable[Payload]) -> list[Payload]:
        payloads = list(payloads)
        for payload in payloads:
            if payload.metadata.get("encoding") == ENCODING:
                key_id = payload.metadata.get(KEY_ID, b"").decode()
                raise EncryptionKeyError(
                    f"a payload is encrypted with key {key_id!r}, which is not configured ({self.looked})"
                )
        return payloads


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The project's converter: pydantic, sealed with `codec` when there is one."""
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)


def load_keys(setting: str | None, key_file: Path | None) -> dict[str, bytes]:
    """The keys from the setting, else from the key file when it exists, else none."""
    if setting:
        return parse_keys(setting)
    if key_file is not None and key_file.exists():
        return parse_keys(key_file.read_text(encoding="utf-8"))
    return {}


def ensure_key_file(path: Path) -> Path:
    """Create `path` with a new key unless it exists (owner-only): `journeys up`'s first start."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write("# Journeys payload encryption keys: back this file up; histories cannot be read without it.\n")
            out.write(new_key_line("k1") + "\n")
    return path
