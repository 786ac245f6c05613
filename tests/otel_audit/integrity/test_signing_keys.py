"""Ed25519 key files, key ids, keyrings and signature checks."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1
from cryptography.hazmat.primitives.asymmetric.ec import generate_private_key as ec_key

from otel_audit.integrity import (
    PRIVATE_KEY_FILENAME,
    PUBLIC_KEY_FILENAME,
    Ed25519PrivateKey,
    KeyFormatError,
    Keyring,
    generate_private_key,
    key_id,
    load_private_key,
    load_private_key_from_env,
    load_public_key,
    parse_private_key,
    parse_public_key,
    public_key_bytes,
    sign,
    verify_signature,
    write_key_pair,
)


def test_write_key_pair_modes_and_roundtrip(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    files = write_key_pair(signing_key, tmp_path / "keys")
    assert files.private_key_path.name == PRIVATE_KEY_FILENAME
    assert files.public_key_path.name == PUBLIC_KEY_FILENAME
    assert stat.S_IMODE(files.private_key_path.stat().st_mode) == 0o600
    assert files.private_key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert files.public_key_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    loaded = load_private_key(files.private_key_path)
    assert key_id(loaded) == key_id(signing_key) == files.key_id
    assert key_id(load_public_key(files.public_key_path)) == files.key_id
    assert not list((tmp_path / "keys").glob("*.tmp"))


def test_write_key_pair_refuses_to_overwrite(tmp_path: Path) -> None:
    first = write_key_pair(generate_private_key(), tmp_path)
    with pytest.raises(FileExistsError):
        write_key_pair(generate_private_key(), tmp_path)
    assert key_id(load_private_key(first.private_key_path)) == first.key_id
    second = write_key_pair(generate_private_key(), tmp_path, force=True)
    assert second.key_id != first.key_id
    assert key_id(load_private_key(second.private_key_path)) == second.key_id


def test_key_id_is_documented_derivation(signing_key: Ed25519PrivateKey) -> None:
    raw = public_key_bytes(signing_key.public_key())
    assert len(raw) == 32
    assert key_id(signing_key) == hashlib.sha256(raw).digest()[:8].hex()
    assert len(key_id(signing_key)) == 16


def test_load_private_key_from_env_pem_and_base64(signing_key: Ed25519PrivateKey) -> None:
    pem = signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    seed = signing_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for value in (pem, base64.b64encode(seed).decode() + "\n"):
        key = load_private_key_from_env("K", environ={"K": value})
        assert key_id(key) == key_id(signing_key)
    with pytest.raises(KeyFormatError, match="K is not set"):
        load_private_key_from_env("K", environ={})


def test_public_key_from_base64_raw(signing_key: Ed25519PrivateKey) -> None:
    raw = public_key_bytes(signing_key.public_key())
    assert key_id(parse_public_key(base64.b64encode(raw))) == key_id(signing_key)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "neither PEM nor base64|must be 32 bytes"),
        ("not base64 !!", "neither PEM nor base64"),
        (base64.b64encode(b"x" * 31).decode(), "must be 32 bytes"),
        ("-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n", "not a usable PEM"),
    ],
)
def test_malformed_public_keys(text: str, match: str) -> None:
    with pytest.raises(KeyFormatError, match=match):
        parse_public_key(text, "key.pem")


def test_wrong_key_types_are_named(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    ec = ec_key(SECP256R1())
    ec_pub = ec.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ec_priv = ec.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFormatError, match="not Ed25519"):
        parse_public_key(ec_pub)
    with pytest.raises(KeyFormatError, match="not Ed25519"):
        parse_private_key(ec_priv)
    files = write_key_pair(signing_key, tmp_path)
    with pytest.raises(KeyFormatError, match="private key; give the public key"):
        load_public_key(files.private_key_path)
    with pytest.raises(KeyFormatError, match="cannot read"):
        load_private_key(tmp_path / "missing.pem")
    encrypted = signing_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(KeyFormatError, match="unencrypted"):
        parse_private_key(encrypted)


def test_sign_and_verify_never_raise(
    signing_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    public = signing_key.public_key()
    sig = sign(signing_key, b"message")
    assert verify_signature(public, b"message", sig)
    assert not verify_signature(public, b"messagE", sig)
    assert not verify_signature(other_key.public_key(), b"message", sig)
    assert not verify_signature(public, b"message", sig[:-1])
    assert not verify_signature(public, b"message", sig + b"\x00")
    assert not verify_signature(public, b"message", b"\x00" * 64)
    assert not verify_signature(public, b"message", "x" * 64)  # type: ignore[arg-type]
    assert not verify_signature(public, "message", sig)  # type: ignore[arg-type]
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify_signature(public, b"message", flipped)


def test_keyring_from_files_and_directories(
    tmp_path: Path, signing_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    old = write_key_pair(other_key, tmp_path / "old")
    new = write_key_pair(signing_key, tmp_path / "new")
    ring_dir = tmp_path / "ring"
    ring_dir.mkdir()
    (ring_dir / "2024.pem").write_bytes(old.public_key_path.read_bytes())
    (ring_dir / "notes.txt").write_text("ignored")
    ring = Keyring.from_paths([ring_dir, new.public_key_path])
    assert set(ring) == {old.key_id, new.key_id}
    assert old.key_id in ring and len(ring) == 2
    # The directory written by `keys generate` works: its private key is skipped.
    assert Keyring.from_paths([tmp_path / "new"]).key_ids() == [new.key_id]
    (ring_dir / "broken.pem").write_text(
        "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(KeyFormatError, match=r"broken\.pem"):
        Keyring.from_paths([ring_dir])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyFormatError, match="no public keys"):
        Keyring.from_paths([empty])
    with pytest.raises(KeyFormatError):
        Keyring().add("not a key")  # type: ignore[arg-type]
