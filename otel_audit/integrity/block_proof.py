"""An inclusion proof from the one block record that sealed the event.

Reading every leaf of a chain up to the event's block takes seconds on a chain of
millions of events, and one block record holds enough: its ``frontier`` is the compact
range of the leaves before it (one subtree root per set bit of ``first_leaf``) and its
``leaf_hashes`` are the leaves after. ``otel-audit prove`` and the console both build
their bundles here.

Why that suffices: in the RFC 9162 audit path of a leaf ``i >= F`` (``F = first_leaf``)
every sibling lies either wholly at or after ``F`` (hashed from the block's leaves), or
wholly before ``F``, or across ``F``. A sibling wholly before ``F`` is the left child of
an ancestor of ``i`` that contains ``F``: the subtree ``[(m - 1) * 2^j, m * 2^j)`` with
``m = F >> j`` odd, which is exactly the frontier's subtree for bit ``j`` of ``F``. A
sibling across ``F`` splits into such frontier subtrees and block leaves the same way.

Nothing here is trusted: the frontier and leaf hashes are unsigned fields an
Elasticsearch administrator could edit, and a path built from edited ones does not lead
to the signed root, which ``otel-audit prove`` checks before it writes a bundle and the
browser (and ``otel-audit verify-proof``) check on receipt.
"""

from __future__ import annotations

from collections.abc import Sequence

from otel_audit.integrity.errors import ProofError
from otel_audit.integrity.merkle import node_hash, root_hash

__all__ = ["audit_path_from_block"]


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _frontier_nodes(first_leaf: int, frontier: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
    """The frontier's subtrees by (start, end): largest first, one per set bit."""
    if len(frontier) != first_leaf.bit_count():
        raise ProofError(
            f"a frontier before leaf {first_leaf} has {first_leaf.bit_count()} hashes, "
            f"the block holds {len(frontier)}"
        )
    nodes: dict[tuple[int, int], bytes] = {}
    start = 0
    bits = [b for b in range(first_leaf.bit_length() - 1, -1, -1) if first_leaf >> b & 1]
    for bit, h in zip(bits, frontier, strict=True):
        nodes[(start, start + (1 << bit))] = h
        start += 1 << bit
    return nodes


def audit_path_from_block(
    first_leaf: int, frontier: Sequence[bytes], leaf_hashes: Sequence[bytes], index: int
) -> list[bytes]:
    """The RFC 9162 audit path of leaf ``index`` in the tree of ``first_leaf +
    len(leaf_hashes)`` leaves, from a block's frontier and leaves.

    Equal to ``otel_audit.integrity.inclusion_proof(all_leaves, index, size)``; raises
    :class:`ProofError` when ``index`` is not one of the block's leaves or the frontier
    has the wrong shape.
    """
    size = first_leaf + len(leaf_hashes)
    if not first_leaf <= index < size:
        raise ProofError(f"leaf {index} is not in the block's leaves [{first_leaf}, {size})")
    before = _frontier_nodes(first_leaf, frontier)

    def subtree(start: int, end: int) -> bytes:
        if start >= first_leaf:
            return root_hash(leaf_hashes[start - first_leaf : end - first_leaf])
        if end <= first_leaf:
            found = before.get((start, end))
            if found is None:  # unreachable for a well-formed tree; never guess
                raise ProofError(f"subtree [{start}, {end}) is not in the block's frontier")
            return found
        k = _split(end - start)
        return node_hash(subtree(start, start + k), subtree(start + k, end))

    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    path.reverse()
    return path
