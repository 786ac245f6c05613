"""``otel-audit prove EVENT_ID``: an offline inclusion proof bundle for one stored event.

Finds the block that sealed the event (through the ``id_keys`` of ``audit-blocks``),
computes the RFC 9162 audit path of the event's leaf under that block's signed checkpoint
from that one record (its ``frontier`` and ``leaf_hashes``:
:mod:`otel_audit.integrity.block_proof`), checks that the path leads to the signed root,
and packs event, leaf index, path and checkpoint into a bundle
(``otel_audit.integrity.bundle``) that ``otel-audit verify-proof`` checks with nothing but
the public key. Earlier block records of the chain are not read: the proof of a recent
event costs the same on a chain of millions, and still works once older records have
been archived or lost.
"""

from __future__ import annotations

from elasticsearch import Elasticsearch

from indexer.integrity.blocks import BlockRecord, holding_query, iter_block_docs
from otel_audit.integrity import (
    IntegrityError,
    ProofBundle,
    make_bundle,
    root_from_inclusion_proof,
)
from otel_audit.integrity.block_proof import audit_path_from_block

__all__ = ["ProveError", "prove"]


class ProveError(Exception):
    """The proof cannot be made (event unknown, not sealed, block record edited)."""


def _find_block(es: Elasticsearch, event_id: str) -> BlockRecord:
    for _doc_id, source in iter_block_docs(es, holding_query([event_id])):
        ids = source.get("event_ids")
        if isinstance(ids, list) and event_id in ids:
            try:
                return BlockRecord.from_document(source)
            except IntegrityError as exc:
                raise ProveError(
                    f"the block record holding {event_id} is malformed: {exc}"
                ) from None
    raise ProveError(f"event {event_id} is not in any sealed block (not stored, or not sealed yet)")


def prove(es: Elasticsearch, event_id: str) -> ProofBundle:
    """The inclusion proof bundle of ``event_id``; raises :class:`ProveError`."""
    block = _find_block(es, event_id)
    pos = block.event_ids.index(event_id)
    index = block.event_indices[pos]
    got = es.options(ignore_status=404).get(index=index, id=event_id)
    if not got.body.get("found"):
        raise ProveError(f"event {event_id} is sealed in block {block.sequence} but not in {index}")
    leaf_index = block.first_leaf + pos
    size = block.checkpoint.tree_size
    where = f"block {block.sequence} of chain {block.chain_id}"
    try:
        if block.first_leaf + len(block.leaf_hashes) != size:
            raise IntegrityError(
                f"{block.first_leaf} + {len(block.leaf_hashes)} leaves, checkpoint size {size}"
            )
        path = audit_path_from_block(
            block.first_leaf, block.frontier, block.leaf_hashes, leaf_index
        )
        root = root_from_inclusion_proof(block.leaf_hashes[pos], leaf_index, size, path)
    except IntegrityError as exc:
        raise ProveError(f"no proof from {where}: {exc}") from None
    if root != block.checkpoint.root_hash:
        raise ProveError(
            f"the frontier and leaf hashes of {where} do not lead to its signed root: "
            "the record was edited; run otel-audit verify"
        )
    return make_bundle(
        got.body["_source"], leaf_index, path, block.checkpoint, leaf_hash=block.leaf_hashes[pos]
    )
