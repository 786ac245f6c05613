"""Offline inclusion proof bundles: every tampering is caught with the right reason."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audit.integrity import (
    GENESIS_HASH,
    CheckpointFormatError,
    Ed25519PrivateKey,
    Keyring,
    ProofBundle,
    ReasonCode,
    generate_private_key,
    inclusion_proof,
    leaf_hash_of_document,
    load_bundle_json,
    make_bundle,
    make_checkpoint,
    root_hash,
    sign_checkpoint,
    verify_bundle,
)


def make_signed_bundle(
    docs: list[dict[str, Any]], index: int, key: Ed25519PrivateKey, origin: str = "receiver-0"
) -> dict[str, Any]:
    """Seal ``docs`` into one tree and return the JSON bundle for ``docs[index]``."""
    leaves = [leaf_hash_of_document(d) for d in docs]
    cp = make_checkpoint(
        origin=origin,
        tree_size=len(leaves),
        root_hash=root_hash(leaves),
        sequence=0,
        previous_hash=GENESIS_HASH,
        timestamp_ms=1764238530123,
    )
    bundle = make_bundle(
        docs[index], index, inclusion_proof(leaves, index), sign_checkpoint(cp, key)
    )
    return json.loads(json.dumps(bundle.to_json_dict()))  # type: ignore[no-any-return]


@pytest.fixture
def docs(event_document: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i in range(11):
        d = copy.deepcopy(event_document)
        d["event"]["id"] = f"event-{i}"
        out.append(d)
    return out


@pytest.fixture
def ring(signing_key: Ed25519PrivateKey) -> Keyring:
    return Keyring([signing_key.public_key()])


def _codes(result: Any) -> list[str]:
    return [r.code for r in result.reasons]


def test_valid_bundle(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring
) -> None:
    for index in (0, 5, 10):
        bundle = make_signed_bundle(docs, index, signing_key)
        result = verify_bundle(bundle, ring)
        assert result.ok, result.reasons
        assert result.event_id == f"event-{index}"
        assert (result.leaf_index, result.tree_size, result.origin) == (index, 11, "receiver-0")
        assert verify_bundle(ProofBundle.from_json_dict(bundle), ring, origin="receiver-0").ok
        assert result.to_json_dict()["checkpoint_status"] == "ok"


def test_integrity_field_may_change(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring
) -> None:
    bundle = make_signed_bundle(docs, 3, signing_key)
    bundle["event"]["integrity"] = {"anything": "goes"}
    assert verify_bundle(bundle, ring).ok


def test_modified_event(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring
) -> None:
    bundle = make_signed_bundle(docs, 4, signing_key)
    bundle["event"]["event"]["outcome"] = "failure"
    result = verify_bundle(bundle, ring)
    assert not result.ok
    assert _codes(result) == [ReasonCode.EVENT_MODIFIED]
    assert "changed after sealing" in result.reasons[0].message
    # Without the recorded leaf hash the same change is still caught.
    del bundle["leaf_hash"]
    assert _codes(verify_bundle(bundle, ring)) == [ReasonCode.INCLUSION_FAILED]


def test_modified_event_and_leaf_hash(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring
) -> None:
    bundle = make_signed_bundle(docs, 4, signing_key)
    bundle["event"]["user"]["id"] = "mallory"
    bundle["leaf_hash"] = base64.b64encode(leaf_hash_of_document(bundle["event"])).decode()
    assert _codes(verify_bundle(bundle, ring)) == [ReasonCode.INCLUSION_FAILED]


@pytest.mark.parametrize("position", [0, 1, 3])
def test_flipped_path_hash(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring, position: int
) -> None:
    bundle = make_signed_bundle(docs, 6, signing_key)
    raw = bytearray(base64.b64decode(bundle["audit_path"][position]))
    raw[5] ^= 0x10
    bundle["audit_path"][position] = base64.b64encode(bytes(raw)).decode()
    result = verify_bundle(bundle, ring)
    assert _codes(result) == [ReasonCode.INCLUSION_FAILED]
    assert "different root" in result.reasons[0].message


def test_wrong_index_and_size(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring
) -> None:
    bundle = make_signed_bundle(docs, 6, signing_key)
    assert _codes(verify_bundle({**bundle, "leaf_index": 7}, ring)) == [ReasonCode.INCLUSION_FAILED]
    assert _codes(verify_bundle({**bundle, "leaf_index": 11}, ring)) == [
        ReasonCode.INCLUSION_FAILED
    ]
    assert ReasonCode.SIZE_MISMATCH in _codes(verify_bundle({**bundle, "tree_size": 12}, ring))
    short = {**bundle, "audit_path": bundle["audit_path"][:-1]}
    assert _codes(verify_bundle(short, ring)) == [ReasonCode.INCLUSION_FAILED]


def test_checkpoint_by_another_key(
    docs: list[dict[str, Any]],
    other_key: Ed25519PrivateKey,
    signing_key: Ed25519PrivateKey,
    ring: Keyring,
) -> None:
    bundle = make_signed_bundle(docs, 2, other_key)
    result = verify_bundle(bundle, ring)
    assert _codes(result) == [ReasonCode.UNKNOWN_KEY]
    assert result.checkpoint_status == "unknown_key"
    # Same forgery but claiming the trusted key's id.
    trusted_id = make_signed_bundle(docs, 2, signing_key)["checkpoint"]["key_id"]
    bundle["checkpoint"]["key_id"] = trusted_id
    assert _codes(verify_bundle(bundle, ring)) == [ReasonCode.BAD_SIGNATURE]


def test_checkpoint_root_replaced(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring
) -> None:
    # An attacker who rebuilds the tree over a modified event cannot re-sign it.
    docs[2]["event"]["action"] = "invoice.delete"
    forged = make_signed_bundle(docs, 2, signing_key)
    genuine = make_signed_bundle([*docs[:2], docs[3]], 0, signing_key)
    forged["checkpoint"]["signature"] = genuine["checkpoint"]["signature"]
    assert _codes(verify_bundle(forged, ring)) == [ReasonCode.BAD_SIGNATURE]


def test_origin_pinning(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring
) -> None:
    bundle = make_signed_bundle(docs, 1, signing_key, origin="receiver-1")
    assert _codes(verify_bundle(bundle, ring, origin="receiver-0")) == [ReasonCode.ORIGIN_MISMATCH]


def test_event_outside_jcs(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring
) -> None:
    bundle = make_signed_bundle(docs, 1, signing_key)
    bundle["event"]["big"] = 2**60
    assert _codes(verify_bundle(bundle, ring)) == [ReasonCode.EVENT_NOT_CANONICAL]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("checkpoint"),
        lambda b: b.update(format="otel-audit.inclusion-proof.v0"),
        lambda b: b.update(event=["not", "object"]),
        lambda b: b.update(leaf_index=-1),
        lambda b: b.update(leaf_index=1.0),
        lambda b: b.update(audit_path="AAAA"),
        lambda b: b.update(audit_path=["AAAA"]),
        lambda b: b.update(audit_path=[None]),
        lambda b: b.update(audit_path=[b["audit_path"][0]] * 65),
        lambda b: b.update(leaf_hash="AAAA"),
        lambda b: b.update(leaf_hash=None),
        lambda b: b.update(surprise=True),
        lambda b: b["checkpoint"].update(tree_size="11"),
    ],
)
def test_malformed_bundles(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring, mutate: Any
) -> None:
    bundle = make_signed_bundle(docs, 1, signing_key)
    mutate(bundle)
    result = verify_bundle(bundle, ring)
    assert not result.ok and _codes(result) == [ReasonCode.MALFORMED]


@pytest.mark.parametrize("value", [None, 1, "x", [], [1]])
def test_non_object_bundles(value: Any, ring: Keyring) -> None:
    assert _codes(verify_bundle(value, ring)) == [ReasonCode.MALFORMED]


def test_load_bundle_json_is_strict() -> None:
    assert load_bundle_json(b'{"a": 1}') == {"a": 1}
    for text, match in [
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"a": NaN}', "NaN"),
        (b"[1]", "JSON object"),
        (b"\xff", "not valid JSON"),
        (b"[" * 100000, "not valid JSON"),
    ]:
        with pytest.raises(CheckpointFormatError, match=match):
            load_bundle_json(text)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
json_any = st.recursive(
    json_leaf,
    lambda c: st.one_of(
        st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c, max_size=3)
    ),
    max_leaves=8,
)


_HOSTILE_KEY = generate_private_key()
_HOSTILE_BASE: dict[str, Any] = {}


def _hostile_base() -> dict[str, Any]:
    if not _HOSTILE_BASE:
        docs = [{"event": {"id": f"e{i}"}, "n": i} for i in range(3)]
        _HOSTILE_BASE.update(make_signed_bundle(docs, 1, _HOSTILE_KEY))
    return copy.deepcopy(_HOSTILE_BASE)


@settings(max_examples=150, deadline=None)
@given(
    field=st.sampled_from(
        ["event", "leaf_index", "tree_size", "audit_path", "checkpoint", "leaf_hash", "format"]
    ),
    sub=st.sampled_from(
        [None, "origin", "tree_size", "root_hash", "key_id", "signature", "previous_hash"]
    ),
    value=json_any,
)
def test_hostile_fields_never_raise(field: str, sub: str | None, value: Any) -> None:
    bundle = _hostile_base()
    ring = Keyring([_HOSTILE_KEY.public_key()])
    assert verify_bundle(bundle, ring).ok
    if sub is not None and field == "checkpoint":
        bundle["checkpoint"][sub] = value
    else:
        bundle[field] = value
    result = verify_bundle(bundle, ring)
    assert not result.ok
    assert result.reasons


def test_directly_built_bundle_with_wrong_types_never_raises(
    docs: list[dict[str, Any]], signing_key: Ed25519PrivateKey, ring: Keyring
) -> None:
    good = ProofBundle.from_json_dict(make_signed_bundle(docs, 1, signing_key))
    cp = good.checkpoint
    odd: list[Any] = [
        dataclasses.replace(good, audit_path=("AAAA",)),  # type: ignore[arg-type]
        dataclasses.replace(good, leaf_index="1"),  # type: ignore[arg-type]
        dataclasses.replace(good, event={"b": b"bytes"}),
        dataclasses.replace(good, checkpoint=dataclasses.replace(cp, key_id=["x"])),  # type: ignore[arg-type]
        dataclasses.replace(good, checkpoint=dataclasses.replace(cp, root_hash="r")),  # type: ignore[arg-type]
        dataclasses.replace(good, checkpoint=dataclasses.replace(cp, signature=None)),  # type: ignore[arg-type]
    ]
    for bundle in odd:
        result = verify_bundle(bundle, ring)
        assert not result.ok and result.reasons
