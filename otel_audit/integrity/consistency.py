"""Consistency proofs from a chain's frontier and the leaves added since, without the history.

An RFC 9162 consistency proof from ``old_size`` to ``new_size`` only needs two kinds of
nodes: complete subtrees left of ``old_size``, which are exactly the subtrees of the
compact range (the *frontier*) at ``old_size``, and subtrees right of it, which hash only
leaves added since. Every block record stores the frontier before its first leaf, so a
proof from any checkpoint to a newer one costs the leaves between them, not the chain.

Lines of a proof file (``otel-audit consistency --proof``) are base64 hashes, one per
line, as in the body of a C2SP ``tlog-witness`` ``add-checkpoint`` request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from otel_audit.integrity.errors import ProofError
from otel_audit.integrity.merkle import HASH_SIZE, consistency_path, root_hash

__all__ = ["consistency_proof_from_frontier", "format_proof_lines", "parse_proof_lines"]


def _frontier_nodes(old_size: int, frontier: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
    if len(frontier) != old_size.bit_count():
        raise ProofError(
            f"a frontier at size {old_size} has {old_size.bit_count()} hashes, got {len(frontier)}"
        )
    nodes: dict[tuple[int, int], bytes] = {}
    start = 0
    it = iter(frontier)
    for bit in range(old_size.bit_length() - 1, -1, -1):
        if old_size >> bit & 1:
            h = next(it)
            if len(h) != HASH_SIZE:
                raise ProofError(f"frontier hash has {len(h)} bytes, expected {HASH_SIZE}")
            nodes[(start, start + (1 << bit))] = h
            start += 1 << bit
    return nodes


def consistency_proof_from_frontier(
    old_size: int, frontier: Sequence[bytes], new_leaves: Sequence[bytes]
) -> list[bytes]:
    """The proof from ``old_size`` to ``old_size + len(new_leaves)``.

    ``frontier`` is :meth:`CompactRange.state` ``[1]`` at ``old_size`` (largest subtree
    first); ``new_leaves`` are the leaf hashes appended after it. Equal to
    :func:`otel_audit.integrity.merkle.consistency_proof` over the whole chain. Raises
    :class:`ProofError` for ``old_size == 0`` or a malformed frontier.
    """
    if old_size <= 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    left = _frontier_nodes(old_size, frontier)
    new_size = old_size + len(new_leaves)

    def node(start: int, end: int) -> bytes:
        if end <= old_size:
            try:
                return left[(start, end)]
            except KeyError:
                raise ProofError(f"subtree [{start}, {end}) is not in the frontier") from None
        if start >= old_size:
            return root_hash(new_leaves[start - old_size : end - old_size])
        raise ProofError(f"subtree [{start}, {end}) straddles the old size {old_size}")

    return consistency_path(old_size, new_size, node)


def format_proof_lines(proof: Sequence[bytes]) -> str:
    """One base64 hash per line, each ending in a newline."""
    return "".join(base64.b64encode(h).decode("ascii") + "\n" for h in proof)


def parse_proof_lines(text: str, source: str = "proof") -> list[bytes]:
    """Parse :func:`format_proof_lines` output (blank lines ignored); raises ProofError."""
    out: list[bytes] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            raw = base64.b64decode(line.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise ProofError(f"{source} line {number} is not base64") from exc
        if len(raw) != HASH_SIZE:
            raise ProofError(f"{source} line {number} holds {len(raw)} bytes, not {HASH_SIZE}")
        out.append(raw)
    if len(out) > 64:
        raise ProofError(f"{source} has {len(out)} hashes, more than any tree needs")
    return out
