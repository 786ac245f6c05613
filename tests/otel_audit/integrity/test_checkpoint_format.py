"""Signed checkpoints: exact body bytes, strict JSON, signature status, chain links."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from otel_audit.integrity import (
    GENESIS_HASH,
    Checkpoint,
    CheckpointFormatError,
    CheckpointStatus,
    Ed25519PrivateKey,
    Keyring,
    chain_link_problems,
    decode_hash,
    encode_hash,
    encode_hashes,
    key_id,
    make_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)

ROOT = bytes(range(32))


def _cp(key: Ed25519PrivateKey, **kw: Any) -> Checkpoint:
    fields: dict[str, Any] = {
        "origin": "audit.example.com/receiver-0",
        "tree_size": 1048576,
        "root_hash": ROOT,
        "sequence": 41,
        "previous_hash": b"\xee" * 32,
        "timestamp_ms": 1764238530123,
    }
    fields.update(kw)
    return sign_checkpoint(make_checkpoint(**fields), key)


def test_body_is_the_documented_note(signing_key: Ed25519PrivateKey) -> None:
    cp = _cp(signing_key)
    assert cp.body() == (
        b"audit.example.com/receiver-0\n"
        b"1048576\n"
        b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
        b"format otel-audit.checkpoint.v1\n"
        b"sequence 41\n"
        b"previous 7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u4=\n"
        b"timestamp_ms 1764238530123\n"
    )
    # What is signed is exactly the body: any Ed25519 implementation can check it.
    raw = signing_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    Ed25519PublicKey.from_public_bytes(raw).verify(cp.signature, cp.body())
    assert cp.key_id == key_id(signing_key)


def test_json_roundtrip_and_verify(
    signing_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    cp = _cp(signing_key)
    again = Checkpoint.from_json_dict(cp.to_json_dict())
    assert again == cp
    ring = Keyring([signing_key.public_key()])
    assert verify_checkpoint(again, ring) is CheckpointStatus.OK
    assert verify_checkpoint(_cp(other_key), ring) is CheckpointStatus.UNKNOWN_KEY
    # Signed by another key but claiming the trusted key id.
    forged = Checkpoint.from_json_dict({**_cp(other_key).to_json_dict(), "key_id": cp.key_id})
    assert verify_checkpoint(forged, ring) is CheckpointStatus.BAD_SIGNATURE


@pytest.mark.parametrize(
    "change",
    [
        {"tree_size": 1048575},
        {"sequence": 42},
        {"timestamp_ms": 1764238530124},
        {"origin": "audit.example.com/receiver-1"},
        {"root_hash": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh4="},
        {"previous_hash": "7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u8="},
    ],
)
def test_any_changed_field_breaks_the_signature(
    signing_key: Ed25519PrivateKey, change: dict[str, Any]
) -> None:
    data = {**_cp(signing_key).to_json_dict(), **change}
    ring = Keyring([signing_key.public_key()])
    assert (
        verify_checkpoint(Checkpoint.from_json_dict(data), ring) is CheckpointStatus.BAD_SIGNATURE
    )


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("signature"), "missing \\['signature'\\]"),
        (lambda d: d.update(extra=1), "unexpected \\['extra'\\]"),
        (lambda d: d.update(format="otel-audit.checkpoint.v2"), "format"),
        (lambda d: d.update(tree_size="5"), "tree_size must be an integer"),
        (lambda d: d.update(tree_size=True), "tree_size must be an integer"),
        (lambda d: d.update(tree_size=-1), "out of range"),
        (lambda d: d.update(sequence=2**63), "out of range"),
        (lambda d: d.update(root_hash="AAEC"), "base64 of 32 bytes"),
        (lambda d: d.update(root_hash="!!!"), "not valid base64"),
        (lambda d: d.update(root_hash="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9="), "32 bytes"),
        (lambda d: d.update(root_hash=None), "base64 string"),
        (lambda d: d.update(signature="AAAA"), "64 bytes"),
        (lambda d: d.update(origin="has space"), "origin"),
        (lambda d: d.update(origin="line\nbreak"), "origin"),
        (lambda d: d.update(origin=""), "origin"),
        (lambda d: d.update(origin="é"), "origin"),
        (lambda d: d.update(key_id="ABCDEF0123456789"), "key_id"),
        (lambda d: d.update(key_id=7), "key_id"),
    ],
)
def test_strict_parsing(signing_key: Ed25519PrivateKey, mutate: Any, match: str) -> None:
    data = copy.deepcopy(_cp(signing_key).to_json_dict())
    mutate(data)
    with pytest.raises(CheckpointFormatError, match=match):
        Checkpoint.from_json_dict(data)


@pytest.mark.parametrize("value", [None, [], "x", 3])
def test_non_object_checkpoint(value: Any) -> None:
    with pytest.raises(CheckpointFormatError, match="must be an object"):
        Checkpoint.from_json_dict(value)


def test_make_checkpoint_validates() -> None:
    with pytest.raises(CheckpointFormatError, match="root_hash"):
        make_checkpoint(
            origin="o", tree_size=1, root_hash=b"x", sequence=0, previous_hash=GENESIS_HASH
        )
    cp = make_checkpoint(
        origin="o", tree_size=1, root_hash=ROOT, sequence=0, previous_hash=GENESIS_HASH
    )
    assert cp.timestamp_ms > 1_700_000_000_000
    assert cp.signature == b""


def test_chain_links(signing_key: Ed25519PrivateKey) -> None:
    first = _cp(signing_key, sequence=0, previous_hash=GENESIS_HASH, tree_size=10)
    second = _cp(signing_key, sequence=1, previous_hash=first.digest(), tree_size=25)
    assert chain_link_problems(None, first) == []
    assert chain_link_problems(first, second) == []
    assert chain_link_problems(None, second)  # not a chain start
    skipped = _cp(signing_key, sequence=2, previous_hash=first.digest(), tree_size=25)
    assert any("does not follow" in p for p in chain_link_problems(first, skipped))
    unlinked = _cp(signing_key, sequence=1, previous_hash=b"\x01" * 32, tree_size=25)
    assert any("does not chain" in p for p in chain_link_problems(first, unlinked))
    shrunk = _cp(signing_key, sequence=1, previous_hash=first.digest(), tree_size=9)
    assert any("shrank" in p for p in chain_link_problems(first, shrunk))
    other = _cp(signing_key, sequence=1, previous_hash=first.digest(), origin="x")
    assert any("origin changed" in p for p in chain_link_problems(first, other))


def test_encode_hashes_encodes_each_as_encode_hash_does() -> None:
    values = [bytes(range(i, i + 32)) for i in range(0, 200, 7)] + [b"", b"\xff" * 31]
    assert encode_hashes(values) == [encode_hash(v) for v in values]
    assert [decode_hash(h, "h") for h in encode_hashes(values[:-2])] == values[:-2]
    assert encode_hashes(iter([])) == []
