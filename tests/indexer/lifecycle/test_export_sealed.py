"""The exporter's table of sealed positions gives what the per-pair reference gave: the
positions each block keeps as ``others``, the per-block counts and the manifest's leaf
ranges, also when an event id is sealed at two positions or a block mixes days."""

from __future__ import annotations

import pytest

from indexer.integrity.blocks import KIND_BLOCK, BlockRecord
from indexer.lifecycle.archive import compact_block, leaf_ranges
from indexer.lifecycle.export import _decode_hashes, _Sealed
from otel_audit.integrity import Checkpoint, encode_hash, leaf_hash

pytestmark = [pytest.mark.lifecycle]

DAY = "audit-events-2026.01.02"
OTHER = "audit-events-2026.01.03"


def _block(chain: str, first: int, rows: list[tuple[str, str]]) -> BlockRecord:
    hashes = tuple(leaf_hash(f"{chain}:{first + i}".encode()) for i in range(len(rows)))
    cp = Checkpoint(chain, first + len(rows), bytes(32), first, bytes(32), 0)
    return BlockRecord(
        kind=KIND_BLOCK,
        checkpoint=cp,
        first_leaf=first,
        event_ids=tuple(e for e, _ in rows),
        event_indices=tuple(i for _, i in rows),
        leaf_hashes=hashes,
        frontier=(),
    )


def _reference(blocks: list[BlockRecord]) -> tuple[list[list[int]], dict[str, list[list[int]]]]:
    """What the exporter computed before: the last position of each id is archived."""
    sealed: dict[str, tuple[str, int]] = {}
    for rec in blocks:
        for pos, (eid, idx) in enumerate(zip(rec.event_ids, rec.event_indices, strict=True)):
            if idx == DAY:
                sealed[eid] = (rec.chain_id, rec.first_leaf + pos)
    here = set(sealed.values())
    others = [
        [p for p in range(len(rec.event_ids)) if (rec.chain_id, rec.first_leaf + p) not in here]
        for rec in blocks
    ]
    return others, leaf_ranges(sealed.values())


@pytest.mark.parametrize(
    "blocks",
    [
        [_block("a", 0, [(f"e{i}", DAY) for i in range(6)])],
        [
            _block("a", 0, [("x", OTHER), ("e1", DAY), ("e2", DAY), ("y", OTHER)]),
            _block("a", 4, [("e3", DAY), ("z", OTHER), ("e4", DAY)]),
            _block("b", 10, [("f1", DAY), ("f2", DAY)]),
        ],
        # One id sealed twice: only its last position is this day's archived event.
        [
            _block("a", 0, [("e1", DAY), ("dup", DAY), ("e2", DAY)]),
            _block("a", 3, [("dup", DAY), ("e3", DAY)]),
        ],
    ],
    ids=["one-block", "mixed-days", "id-sealed-twice"],
)
def test_sealed_positions_match_the_reference(blocks: list[BlockRecord]) -> None:
    sealed = _Sealed(blocks, DAY)
    ids = [
        eid
        for rec in blocks
        for eid, idx in zip(rec.event_ids, rec.event_indices, strict=True)
        if idx == DAY
    ]
    _, keep = sealed.take(list(dict.fromkeys(ids)))
    assert keep is None and not sealed.left
    others, ranges = _reference(blocks)
    assert sealed.others() == others
    assert sealed.ranges(others) == ranges
    for rec, skip in zip(blocks, others, strict=True):
        doc = compact_block(rec, skip)
        assert doc["others"]["positions"] == skip
        assert doc["others"]["leaf_hashes"] == [encode_hash(rec.leaf_hashes[p]) for p in skip]
        assert doc["leaf_count"] == len(rec.event_ids)
        assert "event_ids" not in doc and "leaf_hashes" not in doc


def test_an_id_read_twice_or_unknown_is_not_sealed() -> None:
    sealed = _Sealed([_block("a", 0, [("e1", DAY), ("e2", DAY)])], DAY)
    found, keep = sealed.take(["e1", "nope", "e1", "e2"])
    assert keep == [0, 3] and found == [0, 1]


def test_bulk_hash_decoding_is_as_strict_as_one_at_a_time() -> None:
    hashes = [leaf_hash(bytes([i])) for i in range(5)]
    texts = [encode_hash(h) for h in hashes]
    assert _decode_hashes(texts) == tuple(hashes)
    assert _decode_hashes([]) == ()
    for bad in (
        texts[0][:42] + "B=",  # not the canonical encoding: its last bits are not zero
        texts[0][:43] + "A",  # no padding
        "=" + texts[0][1:],  # padding in the middle
        texts[0][:40] + "!!!=",  # not base64
        texts[0] + "=",  # too long
        "\u00e9" * 43 + "=",  # not ASCII
    ):
        assert _decode_hashes([*texts[:2], bad, *texts[2:]]) is None, bad


def _covered(ranges: dict[str, list[list[int]]]) -> set[tuple[str, int]]:
    return {(c, leaf) for c, spans in ranges.items() for lo, hi in spans for leaf in range(lo, hi)}


def test_a_forked_chain_is_decided_position_by_position() -> None:
    """Two blocks of one chain give leaves 2 and 3 to different events (a chain id reused
    by two receivers, or a restored stale state): each position is this day's or not by
    its own event, and the manifest's ranges cover exactly the positions archived here."""
    first = _block("a", 0, [("e1", DAY), ("e2", DAY), ("e3", DAY), ("e4", DAY)])
    fork = _block("a", 2, [("f1", OTHER), ("f2", DAY)])
    sealed = _Sealed([first, fork], DAY)
    found, keep = sealed.take(["e1", "e2", "e3", "e4", "f2"])
    assert keep is None and found == [0, 1, 2, 3, 5] and not sealed.left
    others = sealed.others()
    assert others == [[], [0]]  # f1 is another day's event, though leaf 2 is archived here
    ranges = sealed.ranges(others)
    assert _covered(ranges) == {("a", 0), ("a", 1), ("a", 2), ("a", 3)}
    assert all(lo < hi for rs in ranges.values() for lo, hi in rs)
    doc = compact_block(fork, others[1])
    assert doc["others"]["positions"] == [0]
    assert doc["others"]["leaf_hashes"] == [encode_hash(fork.leaf_hashes[0])]
