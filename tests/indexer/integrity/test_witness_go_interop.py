"""Checkpoint notes and witness cosignatures checked by an independent implementation.

``tests/interop/note`` is a Go program: it opens the note with Go's
``golang.org/x/mod/sumdb/note`` and checks cosignatures by the C2SP
``tlog-cosignature/v1`` rules with Go's own Ed25519 and SHA-256. It is built once per
source change into ``~/.cache/otel-audit/interop-note`` (the module comes from the Go
module proxy).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from indexer.integrity.witness import Witness
from otel_audit.integrity import Keyring, generate_private_key, make_checkpoint, sign_checkpoint
from otel_audit.integrity.checkpoint import checkpoint_note, log_verifiers
from otel_audit.integrity.merkle import CompactRange, leaf_hash
from otel_audit.integrity.note import parse_note

_SRC = Path(__file__).resolve().parents[2] / "interop" / "note"
_CACHE = Path.home() / ".cache" / "otel-audit" / "interop-note"


@pytest.fixture(scope="module")
def notecheck() -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.fail("the interop test needs Go on PATH (see the top-level README)")
    digest = hashlib.sha256()
    for name in ("main.go", "go.mod", "go.sum"):
        digest.update((_SRC / name).read_bytes())
    binary = _CACHE / digest.hexdigest()[:16] / "notecheck"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [go, "build", "-o", str(binary), "."],
            cwd=_SRC,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, f"go build failed:\n{proc.stdout}{proc.stderr}"
    return binary


def _run(binary: Path, note: Path, *args: str) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [str(binary), *args, str(note)], capture_output=True, text=True, timeout=60, check=False
    )
    return proc.returncode, json.loads(proc.stdout)


def _checkpoint(key, size: int):  # type: ignore[no-untyped-def]
    cr = CompactRange()
    cr.extend([leaf_hash(i.to_bytes(4, "big")) for i in range(size)])
    cp = make_checkpoint(
        origin="audit.example/receiver-0",
        tree_size=size,
        root_hash=cr.root(),
        sequence=0,
        previous_hash=bytes(32),
    )
    return sign_checkpoint(cp, key)


def test_go_sumdb_note_verifies_checkpoints_and_cosignatures(
    notecheck: Path, tmp_path: Path
) -> None:
    log_key = generate_private_key()
    cp = _checkpoint(log_key, 5)
    ring = Keyring([log_key.public_key()])
    log_vkey = log_verifiers(cp.origin, ring)[0].vkey()
    witness = Witness(
        "witness.example/w1", generate_private_key(), {cp.origin: ring}, tmp_path / "w.json"
    )
    note = checkpoint_note(cp, log_key.public_key())
    answer = witness.add_checkpoint(b"old 0\n\n" + note)
    assert answer.status == 200, answer.body
    cosigned = note + answer.body
    path = tmp_path / "cp.note"
    path.write_bytes(cosigned)

    rc, out = _run(notecheck, path, "-vkey", log_vkey, "-witness", witness.vkey)
    assert rc == 0, out
    assert out["text"] == cp.body().decode()
    assert out["signers"] == [cp.origin]
    cosigs = out["cosigned"]
    assert isinstance(cosigs, list) and cosigs[0]["name"] == "witness.example/w1"
    assert cosigs[0]["timestamp"] > 1_700_000_000

    # The log's signature alone, as Go's checksum database clients read checkpoints.
    path.write_bytes(note)
    rc, out = _run(notecheck, path, "-vkey", log_vkey)
    assert rc == 0, out

    # A changed tree size breaks the log signature for Go as well.
    path.write_bytes(cosigned.replace(b"\n5\n", b"\n6\n", 1))
    rc, out = _run(notecheck, path, "-vkey", log_vkey)
    assert rc == 1 and "sumdb/note" in str(out["error"])

    # A cosignature whose timestamp was changed does not verify by the C2SP rules.
    parsed = parse_note(cosigned)
    wsig = parsed.signatures[1]
    forged = type(wsig)(wsig.name, wsig.key_id, (1).to_bytes(8, "big") + wsig.signature[8:])
    path.write_bytes(note + forged.line().encode())
    rc, out = _run(notecheck, path, "-vkey", log_vkey, "-witness", witness.vkey)
    assert rc == 1 and "does not verify" in str(out["error"])

    # Without any cosignature, a required witness is missing.
    path.write_bytes(note)
    rc, out = _run(notecheck, path, "-vkey", log_vkey, "-witness", witness.vkey)
    assert rc == 1 and "no cosignature" in str(out["error"])
