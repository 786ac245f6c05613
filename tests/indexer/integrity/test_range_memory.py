"""A range verify holds what its range needs, not the history.

Counted, not timed: which block records a ``--from/--to`` verify reads whole from the real
Elasticsearch, how many block records the pure core keeps alive while it reads the rest,
and that a record whose sort fields lie about its signed checkpoint is reported.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from indexer.indices import BLOCKS_INDEX, event_index
from indexer.integrity.blocks import KIND_BLOCK, PER_EVENT_FIELDS, BlockRecord, merge_time_range
from indexer.integrity.checkpoint_store import DirectoryCheckpointStore
from indexer.integrity.classify import FindingKind, Inputs, classify
from indexer.integrity.verify import VerifyOptions, verify
from indexer.templates import registered_templates
from otel_audit.document import build_document, format_ns
from otel_audit.integrity import (
    GENESIS_HASH,
    CompactRange,
    Keyring,
    generate_private_key,
    leaf_hash_of_document,
    make_checkpoint,
    sign_checkpoint,
)
from otel_audit.record import LogRecordData

KEY = generate_private_key()
CHAIN = "range-chain"
BLOCKS = 24
PER_BLOCK = 5
T0_NS = 1_764_000_000_000_000_000
MINUTE_NS = 60_000_000_000


def _event(block: int, i: int) -> tuple[str, dict[str, Any]]:
    n = block * PER_BLOCK + i
    ts = T0_NS + block * MINUTE_NS + i * 1_000_000_000
    record = LogRecordData(
        attributes={
            "audit.action": "invoice.update",
            "audit.category": "data_change",
            "audit.outcome": "success",
            "audit.actor.id": f"user-{n % 7}",
            "audit.actor.type": "user",
            "audit.event.id": f"01900000-0000-7000-8000-{n:012x}",
        },
        resource={"service.name": "billing"},
        time_unix_nano=ts,
        body=f"invoice inv-{n} updated",
    )
    return event_index(ts), build_document(record, received_ns=ts + 1_000_000)


def _sealed_store(
    store: DirectoryCheckpointStore,
) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """``BLOCKS`` sealed blocks, one a minute: block documents and ``(index, doc)`` events."""
    blocks: list[dict[str, Any]] = []
    events: list[tuple[str, dict[str, Any]]] = []
    chain = CompactRange()
    previous = GENESIS_HASH
    for seq in range(BLOCKS):
        docs = [_event(seq, i) for i in range(PER_BLOCK)]
        events += docs
        leaves = tuple(leaf_hash_of_document(d) for _, d in docs)
        first, frontier = chain.state()
        chain.extend(list(leaves))
        cp = sign_checkpoint(
            make_checkpoint(
                origin=CHAIN,
                tree_size=chain.size,
                root_hash=chain.root(),
                sequence=seq,
                previous_hash=previous,
                timestamp_ms=(T0_NS + seq * MINUTE_NS) // 1_000_000 + 10_000,
            ),
            KEY,
        )
        previous = cp.digest()
        rec = BlockRecord(
            kind=KIND_BLOCK,
            checkpoint=cp,
            first_leaf=first,
            event_ids=tuple(d["event"]["id"] for _, d in docs),
            event_indices=tuple(i for i, _ in docs),
            leaf_hashes=leaves,
            frontier=frontier,
            time_range=merge_time_range([d["@timestamp"] for _, d in docs]),
        )
        blocks.append(rec.to_document())
        store.append(cp)
    return blocks, events


def _range(first_block: int, last_block: int) -> tuple[str, str]:
    lo = format_ns(T0_NS + first_block * MINUTE_NS)
    hi = format_ns(T0_NS + last_block * MINUTE_NS + 30_000_000_000)
    return lo, hi


class CountingClient:
    """The real client, counting what is asked of ``audit-blocks``."""

    def __init__(self, es: Elasticsearch) -> None:
        self._es = es
        self.whole: list[str] = []
        self.block_searches: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._es, name)

    def search(self, **body: Any) -> Any:
        self.block_searches.append(body)
        return self._es.search(**body)

    def mget(self, **kw: Any) -> Any:
        if kw.get("index") == BLOCKS_INDEX:
            self.whole += kw["ids"]
        return self._es.mget(**kw)


@pytest.mark.integration
def test_range_verify_reads_whole_only_the_blocks_of_its_range(
    clean_es: Elasticsearch, tmp_path: Path
) -> None:
    es = clean_es
    for name, body in registered_templates().items():
        es.indices.put_index_template(name=name, **body)
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    blocks, events = _sealed_store(store)
    ops: list[dict[str, Any]] = []
    for index, doc in events:
        ops += [{"create": {"_index": index, "_id": doc["event"]["id"]}}, doc]
    for doc in blocks:
        ops += [{"create": {"_index": BLOCKS_INDEX, "_id": f"{CHAIN}:{doc['sequence']:020d}"}}, doc]
    resp = es.bulk(operations=ops, refresh=True)
    assert not resp["errors"], resp["items"][:1]

    counting = CountingClient(es)
    lo, hi = _range(10, 11)
    report = verify(
        counting,  # type: ignore[arg-type]
        Keyring([KEY.public_key()]),
        store,
        VerifyOptions(
            chain_id=CHAIN,
            time_from=lo,
            time_to=hi,
            stale_after_s=0,
            grace_s=0,
            slices=1,
            processes=False,
        ),
    )
    assert report.ok, report.findings
    assert report.events_checked == 2 * PER_BLOCK
    assert report.blocks_checked == BLOCKS  # every signature and link, without the leaves
    # Whole: the two blocks of the range and nothing else.
    assert counting.whole == [f"{CHAIN}:{s:020d}" for s in (10, 11)]
    # The others are listed without their per-event fields.
    listing = [b for b in counting.block_searches if b.get("pit") and "sort" in b]
    assert listing and all(b["_source"] == {"excludes": list(PER_EVENT_FIELDS)} for b in listing)


def _docs_counting_live(
    blocks: list[dict[str, Any]], alive: list[int]
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The block documents one by one; before each, how many parsed records are alive."""
    for doc in blocks:
        gc.collect()
        alive.append(sum(isinstance(o, BlockRecord) for o in gc.get_objects()))
        yield f"{doc['chain_id']}:{doc['sequence']:020d}", doc


def _inputs(blocks: Any, store: DirectoryCheckpointStore, lo: str, hi: str) -> Inputs:
    def in_range(rec: BlockRecord) -> bool:
        tr = rec.time_range
        return tr is not None and not (tr[0] > hi or tr[1] < lo)

    return Inputs(
        block_docs=blocks,
        keyring=Keyring([KEY.public_key()]),
        external={CHAIN: store.read(CHAIN)},
        pages=[],
        lookup=lambda keys: [None] * len(keys),
        alias="audit-events",
        alias_indices=[],
        now_ms=0,
        scan_ms=0,
        seal_deadline_ms=0,
        stale_after_ms=0,
        chain_id=CHAIN,
        in_range=in_range,
    )


def test_the_core_keeps_only_the_records_of_the_range(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    blocks, _ = _sealed_store(store)
    lo, hi = _range(3, 4)
    gc.collect()
    before = sum(isinstance(o, BlockRecord) for o in gc.get_objects())
    alive: list[int] = []
    report = classify(_inputs(_docs_counting_live(blocks, alive), store, lo, hi))
    assert report.blocks_checked == BLOCKS
    assert report.chains[CHAIN]["trusted_blocks"] == BLOCKS
    # The range's two records plus the one being checked, however long the chain.
    assert max(alive) - before <= 3, alive
    # Their events are expected (and missing here: no events were given).
    assert report.counts() == {"missing": 2 * PER_BLOCK}


def test_a_record_whose_sort_fields_lie_is_reported(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    blocks, _ = _sealed_store(store)
    blocks[5]["sequence"] = 500  # Elasticsearch would sort it after block 23
    lo, hi = _range(0, 0)
    docs = [(f"{CHAIN}:{s:020d}", b) for s, b in enumerate(blocks)]
    docs.append(docs.pop(5))
    report = classify(_inputs(docs, store, lo, hi))
    bad = [f for f in report.findings if f.kind is FindingKind.BAD_SIGNATURE]
    assert len(bad) == 1 and "sequence fields do not match" in bad[0].message, report.findings
    assert bad[0].message.startswith(f"block record {CHAIN}:{5:020d}")
    # Its sequence is then a gap in the chain.
    assert any(f.kind is FindingKind.MISSING and f.sequence == 5 for f in report.findings)
