"""Every transparency-dev/merkle proof vector in tests/data/merkle, good and tampered."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from otel_audit.integrity import ProofError, verify_consistency, verify_inclusion

DATA = Path(__file__).resolve().parents[2] / "data" / "merkle"
INCLUSION = sorted((DATA / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((DATA / "consistency").rglob("*.json"))

# Stricter than the reference: its equal-sizes check compares roots without looking at
# their length, so two equal 12-byte "roots" pass there. Our roots are SHA-256 outputs;
# anything else is malformed and rejected.
STRICTER = {"consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"}


def _load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    return case


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def _id(path: Path) -> str:
    return str(path.relative_to(DATA))


def test_all_vector_files_present() -> None:
    assert len(INCLUSION) == 98
    assert len(CONSISTENCY) == 98
    assert (DATA / "LICENSE").read_text().startswith("\n                                 Apache")
    assert "417fb0c314750d94e53942e9f92e79b6d35915db" in (DATA / "README.md").read_text()


@pytest.mark.parametrize("path", INCLUSION, ids=_id)
def test_inclusion_vector(path: Path) -> None:
    case = _load(path)
    proof = [_b(p) for p in case["proof"] or []]
    args = (_b(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_id)
def test_consistency_vector(path: Path) -> None:
    case = _load(path)
    proof = [_b(p) for p in case["proof"] or []]
    args = (case["size1"], case["size2"], proof, _b(case["root1"]), _b(case["root2"]))
    if case["wantErr"] or _id(path) in STRICTER:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_stricter_case_is_rejected_only_for_hash_length() -> None:
    (name,) = STRICTER
    case = _load(DATA / name)
    assert case["wantErr"] is False
    with pytest.raises(ProofError, match="12 bytes"):
        verify_consistency(case["size1"], case["size2"], [], _b(case["root1"]), _b(case["root2"]))
    # The same shape with real 32-byte roots is accepted.
    root = bytes(range(32))
    verify_consistency(1, 1, [], root, root)
