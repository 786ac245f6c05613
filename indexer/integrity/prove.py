"""``otel-audit prove EVENT_ID``: an offline inclusion proof bundle for one stored event.

Finds the block that sealed the event (found through the ``id_keys`` of ``audit-blocks``), reads the
chain's leaf hashes up to that block, computes the RFC 9162 audit path for the event's
leaf under that block's signed checkpoint, and packs event, leaf index, path and
checkpoint into a bundle (``otel_audit.integrity.bundle``) that ``otel-audit
verify-proof`` checks with nothing but the public key.
"""

from __future__ import annotations

from elasticsearch import Elasticsearch

from indexer.integrity.blocks import BlockRecord, holding_query, iter_block_docs
from otel_audit.integrity import ProofBundle, inclusion_proof, make_bundle

__all__ = ["ProveError", "prove"]


class ProveError(Exception):
    """The proof cannot be made (event unknown, not sealed, chain incomplete)."""


def _find_block(es: Elasticsearch, event_id: str) -> BlockRecord:
    for _doc_id, source in iter_block_docs(es, holding_query([event_id])):
        ids = source.get("event_ids")
        if isinstance(ids, list) and event_id in ids:
            return BlockRecord.from_document(source)
    raise ProveError(f"event {event_id} is not in any sealed block (not stored, or not sealed yet)")


def _chain_leaves(es: Elasticsearch, block: BlockRecord) -> list[bytes]:
    leaves: list[bytes] = []
    query = {
        "bool": {
            "filter": [
                {"term": {"chain_id": block.chain_id}},
                {"range": {"sequence": {"lte": block.sequence}}},
            ]
        }
    }
    for _doc_id, source in iter_block_docs(es, query):
        rec = BlockRecord.from_document(source)
        if rec.first_leaf != len(leaves):
            raise ProveError(
                f"chain {block.chain_id} has a gap before block {rec.sequence}: "
                f"expected leaf {len(leaves)}, block starts at {rec.first_leaf}"
            )
        leaves.extend(rec.leaf_hashes)
    if len(leaves) != block.checkpoint.tree_size:
        raise ProveError(
            f"chain {block.chain_id} holds {len(leaves)} leaves up to block {block.sequence}, "
            f"its checkpoint says {block.checkpoint.tree_size}"
        )
    return leaves


def prove(es: Elasticsearch, event_id: str) -> ProofBundle:
    """The inclusion proof bundle of ``event_id``; raises :class:`ProveError`."""
    block = _find_block(es, event_id)
    pos = block.event_ids.index(event_id)
    index = block.event_indices[pos]
    got = es.options(ignore_status=404).get(index=index, id=event_id)
    if not got.body.get("found"):
        raise ProveError(f"event {event_id} is sealed in block {block.sequence} but not in {index}")
    leaves = _chain_leaves(es, block)
    leaf_index = block.first_leaf + pos
    path = inclusion_proof(leaves, leaf_index, block.checkpoint.tree_size)
    return make_bundle(
        got.body["_source"],
        leaf_index,
        path,
        block.checkpoint,
        leaf_hash=block.leaf_hashes[pos],
    )
