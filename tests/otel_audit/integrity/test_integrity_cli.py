"""``otel-audit keys generate`` and ``otel-audit verify-proof`` through the real CLI entry."""

from __future__ import annotations

import base64
import copy
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from otel_audit.cli import main
from otel_audit.integrity import (
    GENESIS_HASH,
    generate_private_key,
    inclusion_proof,
    leaf_hash_of_document,
    load_private_key,
    make_bundle,
    make_checkpoint,
    root_hash,
    sign_checkpoint,
)
from otel_audit.integrity.keys import Ed25519PrivateKey


def _bundle(docs: list[dict[str, Any]], index: int, key: Ed25519PrivateKey) -> dict[str, Any]:
    leaves = [leaf_hash_of_document(d) for d in docs]
    cp = make_checkpoint(
        origin="receiver-0",
        tree_size=len(leaves),
        root_hash=root_hash(leaves),
        sequence=0,
        previous_hash=GENESIS_HASH,
    )
    signed = sign_checkpoint(cp, key)
    out: dict[str, Any] = make_bundle(
        docs[index], index, inclusion_proof(leaves, index), signed
    ).to_json_dict()
    return out


@pytest.fixture
def keydir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "keys"
    assert main(["keys", "generate", "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["key_id"]) == 16
    assert Path(info["private_key"]).parent == out
    return out


@pytest.fixture
def docs(event_document: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i in range(6):
        d = copy.deepcopy(event_document)
        d["event"]["id"] = f"event-{i}"
        out.append(d)
    return out


def _write(tmp_path: Path, bundle: dict[str, Any]) -> str:
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(bundle))
    return str(path)


def test_keys_generate_writes_files_and_refuses_overwrite(
    keydir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private = keydir / "signing-key.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    before = private.read_bytes()
    assert main(["keys", "generate", "--out", str(keydir)]) == 2
    assert "exists" in capsys.readouterr().err
    assert private.read_bytes() == before
    assert main(["keys", "generate", "--out", str(keydir), "--force"]) == 0
    text = capsys.readouterr().out
    assert "key id:" in text and "signing-key.pub.pem" in text
    assert private.read_bytes() != before


def test_verify_proof_ok(
    tmp_path: Path, keydir: Path, docs: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    key = load_private_key(keydir / "signing-key.pem")
    path = _write(tmp_path, _bundle(docs, 3, key))
    pub = str(keydir / "signing-key.pub.pem")
    assert main(["verify-proof", path, "--public-key", pub]) == 0
    assert "OK: event event-3 is leaf 3 of 6" in capsys.readouterr().out
    assert main(["verify-proof", path, "--public-key", str(keydir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["reasons"] == []
    assert main(["verify-proof", path, "--public-key", pub, "--origin", "receiver-9"]) == 1
    assert "origin_mismatch" in capsys.readouterr().out


def _failing_reasons(
    tmp_path: Path, keydir: Path, bundle: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> list[str]:
    path = _write(tmp_path, bundle)
    rc = main(["verify-proof", path, "--public-key", str(keydir), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert result["ok"] is False
    return [r["code"] for r in result["reasons"]]


def test_verify_proof_event_changed(
    tmp_path: Path, keydir: Path, docs: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _bundle(docs, 2, load_private_key(keydir / "signing-key.pem"))
    bundle["event"]["audit"]["actor"]["id"] = "someone-else"
    assert _failing_reasons(tmp_path, keydir, bundle, capsys) == ["event_modified"]
    # Plain-text output names the reason too.
    path = _write(tmp_path, bundle)
    assert main(["verify-proof", path, "--public-key", str(keydir)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "event_modified" in out


def test_verify_proof_path_flipped(
    tmp_path: Path, keydir: Path, docs: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _bundle(docs, 2, load_private_key(keydir / "signing-key.pem"))
    raw = bytearray(base64.b64decode(bundle["audit_path"][1]))
    raw[0] ^= 0x80
    bundle["audit_path"][1] = base64.b64encode(bytes(raw)).decode()
    assert _failing_reasons(tmp_path, keydir, bundle, capsys) == ["inclusion_failed"]


def test_verify_proof_other_key(
    tmp_path: Path, keydir: Path, docs: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _bundle(docs, 2, generate_private_key())
    assert _failing_reasons(tmp_path, keydir, bundle, capsys) == ["unknown_key"]
    trusted = _bundle(docs, 2, load_private_key(keydir / "signing-key.pem"))
    bundle["checkpoint"]["key_id"] = trusted["checkpoint"]["key_id"]
    assert _failing_reasons(tmp_path, keydir, bundle, capsys) == ["bad_signature"]


def test_verify_proof_malformed_and_usage_errors(
    tmp_path: Path, keydir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "otel-audit.inclusion-proof.v1", "format": 1}')
    assert main(["verify-proof", str(bad), "--public-key", str(keydir), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["reasons"][0]["code"] == "malformed_bundle"
    assert "duplicate key" in result["reasons"][0]["message"]
    assert main(["verify-proof", str(tmp_path / "none.json"), "--public-key", str(keydir)]) == 2
    assert "cannot read" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["verify-proof", str(bad), "--public-key", str(empty), "--json"]) == 2
    assert "no public keys" in json.loads(capsys.readouterr().out)["error"]
