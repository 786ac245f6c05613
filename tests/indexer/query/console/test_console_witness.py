"""The chain page's JSON for witnesses and the scheduled verify, from real signed notes.

Checkpoints and notes are written as the sealer and ``witness submit`` write them (the
checkpoint store, ``checkpoint_note``, a witness :class:`Signer`), then read back through
:class:`WitnessView` and :func:`shape_chains`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from indexer.integrity.checkpoint_store import DirectoryCheckpointStore
from indexer.query.console.chains import shape_chains
from indexer.query.console.witnesses import WitnessView
from otel_audit.integrity import Keyring
from otel_audit.integrity.checkpoint import checkpoint_note, make_checkpoint, sign_checkpoint
from otel_audit.integrity.keys import generate_private_key
from otel_audit.integrity.note import CosignatureVerifier, NoteSignature, Signer, parse_note

CHAIN = "chain-a"
LOG_KEY = generate_private_key()
W1 = Signer("witness.example/one", generate_private_key(), cosigner=True)
W2 = Signer("witness.example/two", generate_private_key(), cosigner=True)
NOW = 1_790_000_000


def _verifier(signer: Signer) -> CosignatureVerifier:
    v = signer.verifier
    assert isinstance(v, CosignatureVerifier)
    return v


def _store(root: Path, sequences: int) -> list[Any]:
    store = DirectoryCheckpointStore(root)
    out = []
    for seq in range(sequences):
        cp = sign_checkpoint(
            make_checkpoint(
                origin=CHAIN,
                tree_size=10 * (seq + 1),
                root_hash=bytes([seq]) * 32,
                sequence=seq,
                previous_hash=bytes(32),
            ),
            LOG_KEY,
        )
        store.append(cp)
        out.append(cp)
    return out


def _cosign(root: Path, cp: Any, *sigs: NoteSignature) -> None:
    note = checkpoint_note(cp, LOG_KEY.public_key(), sigs)
    (root / CHAIN / f"{cp.sequence:020d}.note").write_bytes(note)


def _text(cp: Any) -> str:
    return parse_note(checkpoint_note(cp, LOG_KEY.public_key())).text


def _view(root: Path, *witnesses: Signer) -> WitnessView:
    return WitnessView(root, Keyring([LOG_KEY.public_key()]), [_verifier(w) for w in witnesses])


def test_the_newest_cosigned_note_is_checked_against_the_configured_keys(tmp_path: Path) -> None:
    cps = _store(tmp_path, 4)
    _cosign(tmp_path, cps[1], W1.sign(_text(cps[1]), NOW - 60))
    _cosign(tmp_path, cps[2], W1.sign(_text(cps[2]), NOW), W2.sign(_text(cps[2]), NOW + 1))
    got = _view(tmp_path, W1)(CHAIN)
    assert got["configured"] == [{"name": W1.name, "key_id": W1.verifier.key_id.hex()}]
    assert (got["newest_sequence"], got["sequence"], got["tree_size"]) == (3, 2, 30)
    assert got["problem"] is None
    assert got["cosignatures"] == [
        {"name": W1.name, "key_id": W1.verifier.key_id.hex(), "timestamp": NOW, "status": "valid"},
        # No key configured for this witness: listed, with what it claims, unchecked.
        {
            "name": W2.name,
            "key_id": W2.verifier.key_id.hex(),
            "timestamp": NOW + 1,
            "status": "unchecked",
        },
    ]


def test_a_forged_cosignature_is_invalid(tmp_path: Path) -> None:
    cps = _store(tmp_path, 2)
    good = W1.sign(_text(cps[1]), NOW)
    # Same name, key id and timestamp, but signed over another checkpoint's text.
    forged = dataclasses.replace(good, signature=W1.sign(_text(cps[0]), NOW).signature)
    _cosign(tmp_path, cps[1], forged)
    [line] = _view(tmp_path, W1)(CHAIN)["cosignatures"]
    assert (line["status"], line["timestamp"]) == ("invalid", NOW)


def test_a_note_for_another_checkpoint_is_refused(tmp_path: Path) -> None:
    cps = _store(tmp_path, 2)
    other = dataclasses.replace(cps[0], sequence=1)  # sequence 1's file, sequence 0's tree
    other = sign_checkpoint(other, LOG_KEY)
    _cosign(tmp_path, other, W1.sign(_text(other), NOW))
    got = _view(tmp_path, W1)(CHAIN)
    assert got["cosignatures"] == []
    assert "is not the stored checkpoint 1" in got["problem"]


def test_no_note_and_no_directory_are_said_so(tmp_path: Path) -> None:
    _store(tmp_path, 1)
    assert _view(tmp_path)(CHAIN)["problem"] == "no cosigned note stored for this chain"
    missing = _view(tmp_path)("chain-b")
    assert (missing["newest_sequence"], missing["cosignatures"]) == (None, [])
    assert _view(tmp_path)("..")["problem"] == "chain id is not a directory name"


def _raw(chain: str) -> dict[str, Any]:
    src = {"chain_id": chain, "sequence": 3, "kind": "block", "tree_size": 40}
    newest = {"hits": {"hits": [{"_source": src}]}}
    bucket = {"key": chain, "doc_count": 4, "newest": newest, "blocks": {"doc_count": 4}}
    return {"aggregations": {"chains": {"buckets": [bucket]}}}


def test_chains_json_carries_the_witness_view_and_the_scheduled_verify(tmp_path: Path) -> None:
    cps = _store(tmp_path, 1)
    _cosign(tmp_path, cps[0], W1.sign(_text(cps[0]), NOW))
    status = {"completed_ms": 5, "duration_s": 0.5, "findings": {"modified": 2}, "stale": False}
    body = shape_chains(
        _raw(CHAIN),
        now_ms=int(time.time() * 1000),
        stale_after_s=300,
        scheduled_verify=status,
        witness=_view(tmp_path, W1),
    )
    [chain] = body["chains"]
    assert [s["status"] for s in chain["witness"]["cosignatures"]] == ["valid"]
    assert body["scheduled_verify"] == status


def test_chains_json_says_not_configured_with_null() -> None:
    body = shape_chains(_raw(CHAIN), now_ms=0, stale_after_s=300)
    assert body["chains"][0]["witness"] is None
    assert body["scheduled_verify"] is None
