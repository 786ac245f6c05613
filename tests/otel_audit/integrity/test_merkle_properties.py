"""Property tests for the Merkle tree: proofs verify, any tampering is rejected."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audit.integrity import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH written straight from its recursive definition, as the oracle."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


def test_known_hashes() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert root_hash([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT


def test_roots_match_oracle_for_every_size_up_to_130() -> None:
    leaves = _leaves(130)
    cr = CompactRange()
    for n in range(131):
        expected = _mth(leaves[:n])
        assert root_hash(leaves[:n]) == expected
        assert cr.root() == expected, n
        if n < 130:
            cr.append(leaves[n])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_inclusion_proofs_verify_and_tampering_fails(n: int, data: Any) -> None:
    leaves = _leaves(n)
    root = _mth(leaves)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(leaves, index)
    verify_inclusion(leaves[index], index, n, proof, root)

    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[k] = _flip(bad[k], bit)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, n, bad, root)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, n, proof[:-1], root)
        if len(proof) > 1:
            with pytest.raises(ProofError):
                verify_inclusion(leaves[index], index, n, proof[::-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(
            _flip(leaves[index], data.draw(st.integers(0, 255))), index, n, proof, root
        )
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, n, proof, _flip(root, 3))
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, n, [*proof, leaves[0]], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, n, [leaves[0], *proof], root)
    other = data.draw(st.integers(0, n).filter(lambda i: i != index))
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], other, n, proof, root)
    # The path does not bind the tree size on its own (size 33 and 34 share the shape of
    # leaf 0's path); the signed checkpoint binds size to root. A size that changes the
    # path's shape must fail.
    other_size = data.draw(st.integers(1, 2 * n + 2).filter(lambda s: s != n))
    if index >= other_size or len(inclusion_proof(_leaves(other_size), index)) != len(proof):
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, other_size, proof, root)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_consistency_proofs_verify_and_tampering_fails(n: int, data: Any) -> None:
    leaves = _leaves(n)
    m = data.draw(st.integers(1, n))
    root1, root2 = _mth(leaves[:m]), _mth(leaves)
    proof = consistency_proof(leaves, m)
    verify_consistency(m, n, proof, root1, root2)

    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[k] = _flip(bad[k], data.draw(st.integers(0, 255)))
        with pytest.raises(ProofError):
            verify_consistency(m, n, bad, root1, root2)
        with pytest.raises(ProofError):
            verify_consistency(m, n, proof[:-1], root1, root2)
    with pytest.raises(ProofError):
        verify_consistency(m, n, [*proof, root1], root1, root2)
    with pytest.raises(ProofError):
        verify_consistency(m, n, [root1, *proof], root1, root2)
    if m != n:
        with pytest.raises(ProofError):
            verify_consistency(m, n, proof, _flip(root1, 7), root2)
        with pytest.raises(ProofError):
            verify_consistency(m, n, proof, root1, _flip(root2, 9))
        with pytest.raises(ProofError):
            verify_consistency(n, m, proof, root2, root1)
        # A proof made for one pair of sizes never passes for another.
        other_m = data.draw(st.integers(1, n).filter(lambda s: s != m))
        with pytest.raises(ProofError):
            verify_consistency(other_m, n, proof, _mth(leaves[:other_m]), root2)
    # A tree whose old part was rewritten is not consistent with the old root.
    forged = list(leaves)
    forged[data.draw(st.integers(0, m - 1))] = leaf_hash(b"forged")
    with pytest.raises(ProofError):
        verify_consistency(m, n, consistency_proof(forged, m), root1, _mth(forged))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=200), st.data())
def test_compact_range_equals_batch_root_for_every_prefix(items: list[bytes], data: Any) -> None:
    leaves = [leaf_hash(x) for x in items]
    cr = CompactRange()
    for i, h in enumerate(leaves):
        cr.append(h)
        assert cr.root() == root_hash(leaves[: i + 1])
    assert cr.size == len(leaves)
    # Persisted state resumes to the same root, and keeps agreeing after more leaves.
    size, hashes = cr.state()
    resumed = CompactRange.from_state(size, list(hashes))
    extra = [leaf_hash(b"x%d" % i) for i in range(data.draw(st.integers(0, 20)))]
    resumed.extend(extra)
    assert resumed.root() == root_hash(leaves + extra)
    assert cr.root() == root_hash(leaves)  # the original is untouched


def test_compact_range_state_is_validated() -> None:
    with pytest.raises(ProofError, match="has 2 hashes"):
        CompactRange.from_state(3, [b"\x00" * 32])
    with pytest.raises(ProofError):
        CompactRange.from_state(-1, [])
    with pytest.raises(ProofError):
        CompactRange.from_state(1, [b"short"])
    with pytest.raises(ProofError):
        CompactRange().append(b"short")


def test_proof_generation_rejects_bad_arguments() -> None:
    leaves = _leaves(5)
    with pytest.raises(ProofError):
        inclusion_proof(leaves, 5)
    with pytest.raises(ProofError):
        inclusion_proof(leaves, 0, 6)
    with pytest.raises(ProofError):
        consistency_proof(leaves, 0)
    with pytest.raises(ProofError):
        consistency_proof(leaves, 4, 3)
    assert consistency_proof(leaves, 5) == []
    assert inclusion_proof(leaves[:1], 0) == []


def test_proofs_for_a_prefix_of_a_longer_list() -> None:
    leaves = _leaves(40)
    for size in (1, 7, 16, 33):
        root = _mth(leaves[:size])
        for i in range(size):
            verify_inclusion(leaves[i], i, size, inclusion_proof(leaves, i, size), root)
        for m in range(1, size + 1):
            verify_consistency(m, size, consistency_proof(leaves, m, size), _mth(leaves[:m]), root)


HOSTILE: list[Any] = [
    None,
    "",
    "abc",
    b"",
    b"\x00" * 31,
    b"\x00" * 33,
    1,
    -1,
    True,
    2**64,
    2**200,
    1.5,
    [],
    [b"\x00" * 32] * 100,
    [None],
    ["a" * 32],
    {"a": 1},
    object(),
]


@settings(max_examples=300, deadline=None)
@given(
    leaf=st.sampled_from([*HOSTILE, b"\x01" * 32]),
    index=st.sampled_from([*HOSTILE, 0, 3, 2**64 - 1]),
    size=st.sampled_from([*HOSTILE, 1, 4, 2**64 - 1]),
    proof=st.sampled_from([*HOSTILE, [b"\x02" * 32], (b"\x02" * 32, b"\x03" * 32)]),
    root=st.sampled_from([*HOSTILE, b"\x04" * 32]),
)
def test_hostile_input_only_raises_proof_error(
    leaf: Any, index: Any, size: Any, proof: Any, root: Any
) -> None:
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, root)
    with pytest.raises(ProofError):
        verify_consistency(index, size, proof, leaf, root)
    with contextlib.suppress(ProofError):
        root_from_inclusion_proof(leaf, index, size, proof)


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(-5, 2**65),
    size=st.integers(-5, 2**65),
    proof=st.lists(st.binary(min_size=0, max_size=40), max_size=70),
    leaf=st.binary(min_size=0, max_size=40),
    root=st.binary(min_size=0, max_size=40),
)
def test_random_proofs_never_verify_or_crash(
    index: int, size: int, proof: list[bytes], leaf: bytes, root: bytes
) -> None:
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, root)
    with pytest.raises(ProofError):
        verify_consistency(index, size, proof, leaf, root)


def test_large_tree_edges() -> None:
    # A leaf at the far end of a 2**64-1 tree needs 64 hashes; 63 or 65 are rejected.
    size = 2**64 - 1
    path = [bytes([i]) * 32 for i in range(63)]
    root = root_from_inclusion_proof(b"\x07" * 32, size - 1, size, path)
    verify_inclusion(b"\x07" * 32, size - 1, size, path, root)
    with pytest.raises(ProofError):
        verify_inclusion(b"\x07" * 32, size - 1, size, path[:-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(b"\x07" * 32, size - 1, size, [*path, path[0]], root)
