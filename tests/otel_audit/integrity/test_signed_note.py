"""C2SP signed notes, checkpoint notes, cosignatures and frontier consistency proofs."""

from __future__ import annotations

import base64
import hashlib

import pytest

from otel_audit.integrity import (
    CheckpointFormatError,
    Keyring,
    generate_private_key,
    make_checkpoint,
    sign_checkpoint,
)
from otel_audit.integrity.checkpoint import checkpoint_from_note, checkpoint_note
from otel_audit.integrity.consistency import (
    consistency_proof_from_frontier,
    format_proof_lines,
    parse_proof_lines,
)
from otel_audit.integrity.errors import ProofError
from otel_audit.integrity.keys import public_key_bytes
from otel_audit.integrity.merkle import CompactRange, consistency_proof, leaf_hash
from otel_audit.integrity.note import (
    CosignatureVerifier,
    NoteError,
    NoteVerificationError,
    Signer,
    Verifier,
    open_note,
    parse_note,
    parse_vkey,
)

# The example of c2sp.org/signed-note: this vkey verifies this note.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZ"
    "XsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_the_specification_example_verifies() -> None:
    verifier = parse_vkey(SPEC_VKEY)
    note, sigs = open_note(SPEC_NOTE.encode(), [verifier])
    assert note.text == "This is an example message.\n"
    assert [s.name for s in sigs] == ["example.com/foo"]
    assert verifier.vkey() == SPEC_VKEY


def test_a_changed_text_fails_and_unknown_keys_are_ignored() -> None:
    verifier = parse_vkey(SPEC_VKEY)
    with pytest.raises(NoteVerificationError, match="does not verify"):
        open_note(SPEC_NOTE.replace("example message", "exemplary message"), [verifier])
    other = Verifier("example.com/other", generate_private_key().public_key())
    with pytest.raises(NoteVerificationError, match="no signature from a trusted key"):
        open_note(SPEC_NOTE, [other])


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("text\n", "no blank line"),
        ("text\n\n", "no signature lines"),
        ("text\n\n- name AAAAAAA=\n", "em dash"),
        ("te\x01xt\n\n\u2014 n AAAAAAA=\n", "control character"),
        ("text\n\n\u2014 a+b AAAAAAA=\n", "without spaces"),
        ("text\n\n\u2014 n AAAA\n", "too short"),
        ("text\n\n\u2014 n !!!\n", "not valid base64"),
    ],
)
def test_malformed_notes_are_refused_with_the_reason(data: str, problem: str) -> None:
    with pytest.raises(NoteError, match=problem):
        parse_note(data)


def test_key_ids_follow_the_specification() -> None:
    key = generate_private_key()
    pub = public_key_bytes(key.public_key())
    for sig_type, cls in ((0x01, Verifier), (0x04, CosignatureVerifier)):
        v = cls("log.example/a", key.public_key())
        expected = hashlib.sha256(b"log.example/a\n" + bytes([sig_type]) + pub).digest()[:4]
        assert v.key_id == expected
        assert type(parse_vkey(v.vkey())) is cls


def test_a_cosignature_signs_header_time_and_text() -> None:
    key = generate_private_key()
    witness = Signer("witness.example/w1", key, cosigner=True)
    text = "log.example\n5\n" + base64.b64encode(bytes(32)).decode() + "\n"
    sig = witness.sign(text, 1_700_000_000)
    assert sig.signature[:8] == (1_700_000_000).to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1700000000\n" + text.encode()
    key.public_key().verify(sig.signature[8:], message)
    verifier = witness.verifier
    assert isinstance(verifier, CosignatureVerifier)
    assert verifier.timestamp(text, sig) == 1_700_000_000
    assert verifier.timestamp(text.replace("5", "6"), sig) is None
    # Same key as a plain note key: a different key id, so not mistaken for it.
    assert not Verifier("witness.example/w1", key.public_key()).matches(sig)


def _signed_checkpoint(size: int = 3):
    key = generate_private_key()
    leaves = [leaf_hash(bytes([i])) for i in range(size)]
    cr = CompactRange()
    cr.extend(leaves)
    cp = make_checkpoint(
        origin="audit.example/r0",
        tree_size=size,
        root_hash=cr.root(),
        sequence=2,
        previous_hash=bytes(32),
        timestamp_ms=1_764_238_530_123,
    )
    return key, sign_checkpoint(cp, key)


def test_a_checkpoint_note_round_trips_and_names_the_origin() -> None:
    key, cp = _signed_checkpoint()
    data = checkpoint_note(cp, key.public_key())
    text, _, sig_line = data.decode().rpartition("\n\n")
    assert text + "\n" == cp.body().decode()
    assert sig_line.startswith("\u2014 audit.example/r0 ")
    ring = Keyring([key.public_key()])
    back, note = checkpoint_from_note(data, ring)
    assert back == cp
    assert note.text == cp.body().decode()


def test_a_checkpoint_note_with_another_key_or_edited_text_is_refused() -> None:
    key, cp = _signed_checkpoint()
    data = checkpoint_note(cp, key.public_key())
    with pytest.raises(NoteVerificationError):
        checkpoint_from_note(data, Keyring([generate_private_key().public_key()]))
    edited = data.replace(b"\n3\n", b"\n4\n", 1)
    with pytest.raises(NoteVerificationError, match="does not verify"):
        checkpoint_from_note(edited, Keyring([key.public_key()]))
    with pytest.raises(CheckpointFormatError, match="did not sign"):
        checkpoint_note(cp, generate_private_key().public_key())


def test_frontier_proofs_equal_full_proofs() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(70)]
    for old in range(1, 70):
        cr = CompactRange()
        cr.extend(leaves[:old])
        frontier = list(cr.state()[1])
        for new in range(old, 71, 7 if old > 9 else 1):
            expected = consistency_proof(leaves, old, new)
            got = consistency_proof_from_frontier(old, frontier, leaves[old:new])
            assert got == expected, (old, new)
    with pytest.raises(ProofError, match="empty tree"):
        consistency_proof_from_frontier(0, [], leaves)
    with pytest.raises(ProofError, match="has 2 hashes"):
        consistency_proof_from_frontier(3, [bytes(32)], leaves)


def test_proof_lines_round_trip_and_reject_junk() -> None:
    proof = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    assert parse_proof_lines(format_proof_lines(proof)) == proof
    with pytest.raises(ProofError, match="line 2 is not base64"):
        parse_proof_lines(format_proof_lines([bytes(32)]) + "!!\n")
