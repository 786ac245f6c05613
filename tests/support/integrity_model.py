"""A sealed store held in memory, built the way the sealer builds one, for the pure verifier.

:func:`build` seals events into signed block records exactly as ``receiver/sealing``
does (compact range, frontier, chained checkpoints); :func:`run` hands the result to
:func:`indexer.integrity.classify.classify`, with events hashed by the same
:func:`indexer.integrity.leaf_scan.hash_hits` the Elasticsearch scan uses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from indexer.integrity.blocks import KIND_BLOCK, BlockRecord, merge_time_range
from indexer.integrity.classify import Inputs, VerifyReport, classify
from indexer.integrity.leaf_scan import hash_hits
from otel_audit.integrity import (
    GENESIS_HASH,
    Checkpoint,
    CompactRange,
    Ed25519PrivateKey,
    IntegrityError,
    Keyring,
    leaf_hash_of_document,
    make_checkpoint,
    sign_checkpoint,
)

CHAIN = "model-chain"
ALIAS = "audit-events"
T0_MS = 1_764_000_000_000


def event_doc(n: int) -> dict[str, Any]:
    day = 1 + n % 3
    return {
        "@timestamp": f"2025-11-0{day}T10:00:{n % 60:02d}.000000000Z",
        "event": {"id": f"evt-{n:06d}", "action": "invoice.update", "outcome": "success"},
        "user": {"id": f"user-{n % 7}"},
        "message": f"invoice inv-{n} updated",
        "audit": {"extra": {"amount": n * 3, "note": "x" * (n % 5)}},
    }


def index_of(doc: dict[str, Any]) -> str:
    return "audit-events-2025.11.0" + doc["@timestamp"][9]


@dataclass
class Store:
    """Events by index, block documents by ``_id``, external checkpoints, alias members."""

    events: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    external: list[Checkpoint] = field(default_factory=list)
    alias: set[str] = field(default_factory=set)

    def clone(self) -> Store:
        return Store(
            copy.deepcopy(self.events),
            copy.deepcopy(self.blocks),
            list(self.external),
            set(self.alias),
        )


def build(key: Ed25519PrivateKey, block_sizes: Sequence[int], *, start: int = 0) -> Store:
    store = Store()
    cr = CompactRange()
    previous = GENESIS_HASH
    n = start
    for seq, size in enumerate(block_sizes):
        docs = [event_doc(n + i) for i in range(size)]
        n += size
        for d in docs:
            store.events.setdefault(index_of(d), {})[d["event"]["id"]] = d
        leaves = tuple(leaf_hash_of_document(d) for d in docs)
        first, frontier = cr.state()
        cr.extend(list(leaves))
        cp = sign_checkpoint(
            make_checkpoint(
                origin=CHAIN,
                tree_size=cr.size,
                root_hash=cr.root(),
                sequence=seq,
                previous_hash=previous,
                timestamp_ms=T0_MS + seq * 1000,
            ),
            key,
        )
        previous = cp.digest()
        rec = BlockRecord(
            kind=KIND_BLOCK,
            checkpoint=cp,
            first_leaf=first,
            event_ids=tuple(d["event"]["id"] for d in docs),
            event_indices=tuple(index_of(d) for d in docs),
            leaf_hashes=leaves,
            frontier=frontier,
            time_range=merge_time_range([d["@timestamp"] for d in docs]),
        )
        store.blocks[rec.doc_id] = rec.to_document()
        store.external.append(cp)
    store.alias = set(store.events)
    return store


def run(
    store: Store,
    keyring: Keyring,
    *,
    now_ms: int | None = None,
    scan_ms: int | None = None,
    deadline_ms: int = 31_000,
    stale_after_ms: int = 0,
    page: int = 7,
    anchor: Checkpoint | None = None,
    realtime_block: Callable[[str, int], Checkpoint | None] | None = None,
) -> VerifyReport:
    """Verify the model store with the pure core, as ``verify`` does over Elasticsearch.

    With ``anchor`` (``verify --since``), only events not sealed at or before it are read.
    """
    old: set[str] = set()
    if anchor is not None:
        for b in store.blocks.values():
            if isinstance(b.get("sequence"), int) and b["sequence"] <= anchor.sequence:
                old.update(e for e in b.get("event_ids", []) if isinstance(e, str))
    hits = [
        {"_index": index, "_id": eid, "_source": doc}
        for index, docs in sorted(store.events.items())
        for eid, doc in docs.items()
        if eid not in old
    ]
    pages = [hash_hits(hits[i : i + page]) for i in range(0, len(hits), page)]

    def lookup(keys: Sequence[tuple[str, str]]) -> list[bytes | str | None]:
        out: list[bytes | str | None] = []
        for index, eid in keys:
            doc = store.events.get(index, {}).get(eid)
            if doc is None:
                out.append(None)
                continue
            try:
                out.append(leaf_hash_of_document(doc))
            except IntegrityError as exc:
                out.append(str(exc))
        return out

    scan = T0_MS + 3_600_000 if scan_ms is None else scan_ms
    return classify(
        Inputs(
            block_docs=sorted(store.blocks.items()),
            keyring=keyring,
            external={CHAIN: list(store.external)},
            pages=pages,
            lookup=lookup,
            alias=ALIAS,
            alias_indices=sorted(store.alias),
            now_ms=scan + deadline_ms if now_ms is None else now_ms,
            scan_ms=scan,
            seal_deadline_ms=deadline_ms,
            stale_after_ms=stale_after_ms,
            anchor=anchor,
            in_range=None if anchor is None else (lambda r: r.sequence > anchor.sequence),
            realtime_block=realtime_block,
        )
    )
