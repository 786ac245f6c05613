"""The directory checkpoint store writes each checkpoint also as a C2SP signed note."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from indexer.integrity.checkpoint_store import DirectoryCheckpointStore, open_checkpoint_store
from otel_audit.integrity import Keyring
from otel_audit.integrity.checkpoint import (
    checkpoint_from_note,
    make_checkpoint,
    sign_checkpoint,
)


def _checkpoint(key: Ed25519PrivateKey, sequence: int = 3):
    cp = make_checkpoint(
        origin="audit.example",
        tree_size=10,
        root_hash=b"\x01" * 32,
        sequence=sequence,
        previous_hash=b"\x02" * 32,
        timestamp_ms=1_700_000_000_000,
    )
    return sign_checkpoint(cp, key)


def test_note_beside_the_json_checkpoint_verifies(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    keyring = Keyring([key.public_key()])
    store = open_checkpoint_store(str(tmp_path), keyring)
    cp = _checkpoint(key)
    store.append(cp)
    note = tmp_path / cp.origin / f"{cp.sequence:020d}.note"
    parsed, signed = checkpoint_from_note(note.read_bytes(), keyring)
    assert parsed == cp
    assert len(signed.signatures) == 1
    assert list(store.read(cp.origin)) == [cp]  # the note is not read as a checkpoint


def test_existing_note_is_kept_and_unknown_keys_write_none(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    cp = _checkpoint(key)
    note = tmp_path / cp.origin / f"{cp.sequence:020d}.note"
    DirectoryCheckpointStore(tmp_path).append(cp)
    assert not note.exists()  # no public key known: JSON only
    note.write_bytes(b"cosigned already\n")
    DirectoryCheckpointStore(tmp_path, Keyring([key.public_key()])).append(cp)
    assert note.read_bytes() == b"cosigned already\n"
