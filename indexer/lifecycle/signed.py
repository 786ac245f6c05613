"""Signed lifecycle records: archive manifests, policy deletions, legal holds and releases.

A record is a JSON object. Its signature is Ed25519 with the receiver's key over::

    b"otel-audit.lifecycle.v1\\n" || RFC 8785 JSON of the record without "signature"

The record names its kind (``kind``) and the signing key (``key_id``), both covered by
the signature, so a record of one kind can never pass as another and the verifier picks
the public key by id from its keyring. Records hold only strings, integers, lists and
objects, so their canonical form is unambiguous.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

from otel_audit.integrity import (
    Ed25519PrivateKey,
    Keyring,
    canonical_json,
    key_id,
    sign,
    verify_signature,
)

__all__ = ["RECORD_DOMAIN", "SignedRecordError", "parse_record", "sign_record", "verify_record"]

RECORD_DOMAIN = b"otel-audit.lifecycle.v1\n"


class SignedRecordError(ValueError):
    """A lifecycle record is unreadable, unsigned, or its signature does not verify."""

    def __init__(self, message: str, kind: str = "bad_signature") -> None:
        super().__init__(message)
        self.kind = kind
        """``bad_signature``, ``unknown_key`` or ``malformed``."""


def _signed_bytes(record: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "signature"}
    return RECORD_DOMAIN + canonical_json(body)


def sign_record(record: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """``record`` with ``key_id`` and ``signature`` added."""
    body = {k: v for k, v in record.items() if k not in ("signature", "key_id")}
    body["key_id"] = key_id(private_key)
    signature = sign(private_key, _signed_bytes(body))
    return {**body, "signature": base64.b64encode(signature).decode("ascii")}


def verify_record(record: Mapping[str, Any], keyring: Keyring, kind: str) -> None:
    """Raise :class:`SignedRecordError` unless ``record`` is a ``kind`` record signed by a
    key of ``keyring``."""
    if not isinstance(record, Mapping):
        raise SignedRecordError("a lifecycle record must be a JSON object", "malformed")
    if record.get("kind") != kind:
        raise SignedRecordError(
            f"record kind is {record.get('kind')!r}, expected {kind!r}", "malformed"
        )
    kid = record.get("key_id")
    public = keyring.get(kid) if isinstance(kid, str) else None
    if public is None:
        raise SignedRecordError(
            f"signed by key {kid!r}, which is not in the keyring", "unknown_key"
        )
    raw = record.get("signature")
    try:
        signature = base64.b64decode(str(raw), validate=True)
    except (binascii.Error, ValueError):
        raise SignedRecordError("signature is not base64") from None
    try:
        message = _signed_bytes(record)
    except Exception as exc:  # a value JCS cannot write: not a record we signed
        raise SignedRecordError(f"record cannot be canonicalized: {exc}", "malformed") from None
    if not verify_signature(public, message, signature):
        raise SignedRecordError(f"the {kind} record's signature does not verify")


def parse_record(data: bytes | None, what: str) -> dict[str, Any]:
    """Parse a stored record's JSON; raises :class:`SignedRecordError` (``malformed``)."""
    if data is None:
        raise SignedRecordError(f"{what} is missing", "missing")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SignedRecordError(f"{what} is not JSON: {exc}", "malformed") from None
    if not isinstance(value, dict):
        raise SignedRecordError(f"{what} is not a JSON object", "malformed")
    return value
