"""RFC 9162 Merkle tree hashing, proofs and an append-only compact range.

Leaf hash ``SHA-256(0x00 || data)``, interior node ``SHA-256(0x01 || left || right)``,
the empty tree hashes to ``SHA-256("")``. Trees are left-balanced (RFC 9162 section 2.1),
so the root of the first ``n`` leaves never changes when more leaves are appended: this
is what lets block N's root cover every event of blocks 0..N.

Hashes are plain 32-byte ``bytes`` and the hot loops call ``hashlib`` directly; there is
no per-node object. Verification functions raise :class:`ProofError` (and nothing else)
for any input, however hostile: wrong types, negative or huge sizes, short or long
hashes, too many or too few proof elements.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence

from otel_audit.integrity.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "CompactRange",
    "consistency_path",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""Root hash of the tree with no leaves."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size accepted, as in RFC 9162 (sizes are uint64 there)."""

# A proof for a tree of at most 2**64 - 1 leaves has at most 64 hashes (65 for a
# consistency proof whose first element is the seed); more is rejected before hashing.
_MAX_PROOF_LEN = 65

_sha256 = hashlib.sha256
FastExtend = Callable[[int, list[bytes], list[bytes]], tuple[list[bytes], int]]
"""``(size, hashes, leaves) -> (new hashes, leaves taken)``: an accelerated
:meth:`CompactRange.extend` (the receiver hands in its native one); it may stop early and
leave the rest of the leaves to the reference loop."""
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Hash one leaf: ``SHA-256(0x00 || data)``."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two children into their parent: ``SHA-256(0x01 || left || right)``."""
    return _sha256(_NODE + left + right).digest()


def _range_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH of ``leaf_hashes[start:end]``, pairing level by level.

    Pairing adjacent nodes and carrying an odd last node up unchanged builds exactly the
    left-balanced RFC 9162 tree, without recursion and with one list per level.
    """
    if start >= end:
        return EMPTY_ROOT
    level = list(leaf_hashes[start:end])
    sha = _sha256
    while len(level) > 1:
        it = iter(level)
        paired = [sha(_NODE + a + b).digest() for a, b in zip(it, it, strict=False)]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle Tree Hash (MTH) over a list of leaf hashes.

    This is the fast batch form for a verifier that holds all leaf hashes; use
    :class:`CompactRange` to stream leaves without keeping them.
    """
    return _range_root(leaf_hashes, 0, len(leaf_hashes))


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(value: object, name: str) -> int:
    if type(value) is not int:
        raise ProofError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0 or value > MAX_TREE_SIZE:
        raise ProofError(f"{name} {value} is outside 0..2**64-1")
    return value


def _check_hash(value: object, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ProofError(f"{name} must be bytes, got {type(value).__name__}")
    raw = bytes(value)
    if len(raw) != HASH_SIZE:
        raise ProofError(f"{name} has {len(raw)} bytes, a SHA-256 hash has {HASH_SIZE}")
    return raw


def _check_proof(proof: object) -> list[bytes]:
    # A str or bytes would iterate as characters or ints: require a real list.
    if not isinstance(proof, list | tuple):
        raise ProofError(f"proof must be a list of hashes, got {type(proof).__name__}")
    if len(proof) > _MAX_PROOF_LEN:
        raise ProofError(f"proof has {len(proof)} hashes, more than any tree needs")
    return [_check_hash(p, f"proof[{i}]") for i, p in enumerate(proof)]


def inclusion_proof(
    leaf_hashes: Sequence[bytes], index: int, size: int | None = None
) -> list[bytes]:
    """Return the audit path for leaf ``index`` in the tree of the first ``size`` leaves.

    ``size`` defaults to ``len(leaf_hashes)``. The path is ordered from the leaf's
    sibling up to the child of the root, as RFC 9162 ``PATH``. Costs O(size) hashes.
    """
    size = len(leaf_hashes) if size is None else size
    _check_size(size, "size")
    _check_size(index, "index")
    if size > len(leaf_hashes):
        raise ProofError(f"size {size} exceeds the {len(leaf_hashes)} leaves given")
    if index >= size:
        raise ProofError(f"index {index} is not below size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(_range_root(leaf_hashes, start + k, end))
            end = start + k
        else:
            path.append(_range_root(leaf_hashes, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(
    leaf_hashes: Sequence[bytes], size1: int, size2: int | None = None
) -> list[bytes]:
    """Return the proof that the tree of ``size1`` leaves is a prefix of the one of ``size2``.

    ``size2`` defaults to ``len(leaf_hashes)``; requires ``0 < size1 <= size2``
    (RFC 9162 ``PROOF``; equal sizes give an empty proof). Costs O(size2) hashes.
    """
    size2 = len(leaf_hashes) if size2 is None else size2
    _check_size(size1, "size1")
    _check_size(size2, "size2")
    if size2 > len(leaf_hashes):
        raise ProofError(f"size2 {size2} exceeds the {len(leaf_hashes)} leaves given")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if size1 > size2:
        raise ProofError(f"size1 {size1} is greater than size2 {size2}")
    return consistency_path(size1, size2, lambda start, end: _range_root(leaf_hashes, start, end))


def consistency_path(size1: int, size2: int, node: Callable[[int, int], bytes]) -> list[bytes]:
    """RFC 9162 ``SUBPROOF`` from ``size1`` to ``size2`` (``0 < size1 <= size2``), with
    ``node(start, end)`` giving the hash of the complete subtree of leaves [start, end):
    from every leaf, or from a frontier and the leaves added since."""
    path: list[bytes] = []
    start, end, m, whole_old_tree = 0, size2, size1, True
    while True:
        n = end - start
        if m == n:
            # The old tree's own root is known to the verifier only at the top level.
            if not whole_old_tree:
                path.append(node(start, end))
            break
        k = _split(n)
        if m <= k:
            path.append(node(start + k, end))
            end = start + k
        else:
            path.append(node(start, start + k))
            start += k
            m -= k
            whole_old_tree = False
    path.reverse()
    return path


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Recompute the root implied by an inclusion proof (RFC 9162 section 2.1.3.2).

    Raises :class:`ProofError` when the proof cannot belong to a tree of that size.
    """
    index = _check_size(index, "index")
    size = _check_size(size, "size")
    if index >= size:
        raise ProofError(f"index {index} is not below tree size {size}")
    r = _check_hash(leaf_hash, "leaf hash")
    hashes = _check_proof(proof)
    sha = _sha256
    fn, sn = index, size - 1
    for p in hashes:
        if sn == 0:
            raise ProofError(f"proof has too many hashes for index {index} in size {size}")
        if fn & 1 or fn == sn:
            r = sha(_NODE + p + r).digest()
            while not (fn & 1) and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = sha(_NODE + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"proof has too few hashes for index {index} in size {size}")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` sits at ``index`` in the tree of ``size`` leaves with ``root``.

    Returns ``None`` on success; raises :class:`ProofError` naming the problem otherwise.
    """
    expected = _check_hash(root, "root")
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if not hmac.compare_digest(calculated, expected):
        raise ProofError("inclusion proof leads to a different root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (``size1``, ``root1``) is a prefix of (``size2``, ``root2``).

    Follows RFC 9162 section 2.1.4.2, except that ``size1 == 0`` is rejected: every tree
    extends the empty one, so such a "proof" would vouch for nothing. Returns ``None``
    on success; raises :class:`ProofError` otherwise.
    """
    size1 = _check_size(size1, "size1")
    size2 = _check_size(size2, "size2")
    r1 = _check_hash(root1, "root1")
    r2 = _check_hash(root2, "root2")
    hashes = _check_proof(proof)
    if size1 > size2:
        raise ProofError(f"size1 {size1} is greater than size2 {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if hashes:
            raise ProofError("sizes are equal, so the proof must be empty")
        if not hmac.compare_digest(r1, r2):
            raise ProofError("sizes are equal but the roots differ")
        return
    if not hashes:
        raise ProofError("proof is empty for different sizes")
    if size1 & (size1 - 1) == 0:
        # The old tree is one complete subtree of the new one: its root is the seed.
        hashes.insert(0, r1)
    sha = _sha256
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = hashes[0]
    for p in hashes[1:]:
        if sn == 0:
            raise ProofError(f"proof has too many hashes for sizes {size1} -> {size2}")
        if fn & 1 or fn == sn:
            fr = sha(_NODE + p + fr).digest()
            sr = sha(_NODE + p + sr).digest()
            while not (fn & 1) and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = sha(_NODE + sr + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"proof has too few hashes for sizes {size1} -> {size2}")
    # Evaluate both comparisons so timing does not tell which root failed.
    ok1 = hmac.compare_digest(fr, r1)
    ok2 = hmac.compare_digest(sr, r2)
    if not ok1:
        raise ProofError("consistency proof does not lead to root1")
    if not ok2:
        raise ProofError("consistency proof does not lead to root2")


class CompactRange:
    """The right edge of a growing Merkle tree: enough to append and get roots.

    Holds one hash per set bit of ``size`` (the roots of the complete subtrees that
    make up leaves ``[0, size)``, largest first), so memory is O(log size) however many
    leaves go in. ``root()`` equals :func:`root_hash` over every leaf appended so far.
    ``state()``/``from_state()`` persist it, so a long-lived chain resumes after a
    restart without reading its old leaves.

    ``fast_extend`` (optional) takes over :meth:`extend`; the loop here is the reference
    and appends whatever leaves it does not take.
    """

    __slots__ = ("_fast_extend", "_hashes", "_size")

    def __init__(self, *, fast_extend: FastExtend | None = None) -> None:
        self._size = 0
        self._hashes: list[bytes] = []
        self._fast_extend = fast_extend

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash (32 bytes, as from :func:`leaf_hash`)."""
        self.extend((leaf_hash,))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaf hashes in order; amortised one node hash per leaf."""
        leaves = leaf_hashes if isinstance(leaf_hashes, list) else list(leaf_hashes)
        fast = self._fast_extend
        if fast is not None and leaves:
            self._hashes, taken = fast(self._size, self._hashes, leaves)
            self._size += taken
            if taken == len(leaves):
                return
            leaves = leaves[taken:]
        sha = _sha256
        node = _NODE
        hashes = self._hashes
        size = self._size
        try:
            for h in leaves:
                if len(h) != HASH_SIZE:
                    raise ProofError(f"leaf hash has {len(h)} bytes, expected {HASH_SIZE}")
                n = size
                while n & 1:
                    h = sha(node + hashes.pop() + h).digest()
                    n >>= 1
                hashes.append(h)
                size += 1
        finally:
            # Leaves before a bad one stay appended: the state is always consistent.
            self._size = size

    def root(self) -> bytes:
        """Root hash of the tree of all leaves appended so far (MTH)."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        sha = _sha256
        r = hashes[-1]
        for h in reversed(hashes[:-1]):
            r = sha(_NODE + h + r).digest()
        return r

    def state(self) -> tuple[int, tuple[bytes, ...]]:
        """Return ``(size, subtree hashes)`` for persisting; see :meth:`from_state`."""
        return self._size, tuple(self._hashes)

    @classmethod
    def from_state(
        cls, size: int, hashes: Sequence[bytes], *, fast_extend: FastExtend | None = None
    ) -> CompactRange:
        """Rebuild from :meth:`state` output; raises :class:`ProofError` if inconsistent."""
        size = _check_size(size, "size")
        if not isinstance(hashes, list | tuple):
            raise ProofError("compact range hashes must be a list")
        if len(hashes) != size.bit_count():
            raise ProofError(
                f"a compact range of size {size} has {size.bit_count()} hashes, got {len(hashes)}"
            )
        cr = cls(fast_extend=fast_extend)
        cr._size = size
        cr._hashes = [_check_hash(h, f"hashes[{i}]") for i, h in enumerate(hashes)]
        return cr

    def copy(self) -> CompactRange:
        """Return an independent copy (to compute a tentative root without committing)."""
        cr = CompactRange(fast_extend=self._fast_extend)
        cr._size = self._size
        cr._hashes = list(self._hashes)
        return cr

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size})"
