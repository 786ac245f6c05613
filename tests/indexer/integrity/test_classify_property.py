"""Every single mutation of stored events or block records is detected by the pure verifier.

Cases: ``OTEL_AUDIT_FUZZ_CASES`` (default 1,000; ``make fuzz-integrity`` runs 100,000).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.integrity.blocks import KIND_BLOCK, BlockRecord
from otel_audit.integrity import (
    CompactRange,
    Keyring,
    generate_private_key,
    leaf_hash_of_document,
    make_checkpoint,
    sign_checkpoint,
)
from tests.support.integrity_model import CHAIN, T0_MS, Store, build, run

KEY = generate_private_key()
OTHER = generate_private_key()
RING = Keyring([KEY.public_key()])
CASES = int(os.environ.get("OTEL_AUDIT_FUZZ_CASES", "1000"))
COUNTED: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _case_count() -> Any:
    """Print how many mutated stores were checked (``make fuzz-integrity`` shows it)."""
    yield
    if COUNTED:
        by = {name: COUNTED.count(name) for name in sorted(set(COUNTED))}
        print(f"\nintegrity property cases: {len(COUNTED)} {by}")


@functools.cache
def base_store(sizes: tuple[int, ...]) -> Store:
    return build(KEY, sizes)


def _pick(data: st.DataObject, items: list[Any]) -> Any:
    return items[data.draw(st.integers(0, len(items) - 1))]


def _event(store: Store, data: st.DataObject) -> tuple[str, str, dict[str, Any]]:
    pairs = [(i, e) for i, docs in sorted(store.events.items()) for e in sorted(docs)]
    index, eid = _pick(data, pairs)
    return index, eid, store.events[index][eid]


def _block(store: Store, data: st.DataObject) -> tuple[str, dict[str, Any]]:
    doc_id = _pick(data, sorted(store.blocks))
    return doc_id, store.blocks[doc_id]


def _other_text(data: st.DataObject, old: object) -> str:
    text = data.draw(st.text(min_size=0, max_size=12))
    return text if text != old else f"{text}!"


def _hash_b64(data: st.DataObject, old: str) -> str:
    raw = bytearray(data.draw(st.binary(min_size=32, max_size=32)))
    if base64.b64encode(bytes(raw)).decode() == old:
        raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


# Each mutation edits the store in place, as an attacker with write access to
# Elasticsearch (not the signing key) could.


def m_event_field(s: Store, d: st.DataObject) -> None:
    _, _, doc = _event(s, d)
    path = _pick(d, [("message",), ("user", "id"), ("event", "action"), ("audit", "extra", "note")])
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = _other_text(d, target[path[-1]])


def m_event_timestamp(s: Store, d: st.DataObject) -> None:
    _, _, doc = _event(s, d)
    doc["@timestamp"] = doc["@timestamp"].replace("10:00", "11:00")


def m_event_ingested(s: Store, d: st.DataObject) -> None:
    _, _, doc = _event(s, d)
    doc["event"]["ingested"] = "2999-01-01T00:00:00.000000000Z"


def m_event_new_field(s: Store, d: st.DataObject) -> None:
    _, _, doc = _event(s, d)
    doc[_pick(d, ["integrity_note", "labels", "zz"])] = _other_text(d, None)


def m_event_delete(s: Store, d: st.DataObject) -> None:
    index, eid, _ = _event(s, d)
    del s.events[index][eid]


def m_event_insert(s: Store, d: st.DataObject) -> None:
    index, _, doc = _event(s, d)
    forged = {**doc, "event": {**doc["event"], "id": "forged-" + _other_text(d, "")}}
    forged["event"]["ingested"] = _pick(
        d, ["2999-01-01T00:00:00.000000000Z", "2025-11-01T10:00:00.000000000Z"]
    )
    s.events[index][forged["event"]["id"]] = forged


def m_event_move(s: Store, d: st.DataObject) -> None:
    index, eid, doc = _event(s, d)
    other = _pick(d, [i for i in sorted(s.events) if i != index] + ["audit-events-2030.01.01"])
    del s.events[index][eid]
    s.events.setdefault(other, {})[eid] = doc
    s.alias.add(other)


def m_event_swap(s: Store, d: st.DataObject) -> None:
    index, eid, doc = _event(s, d)
    pairs = [(i, e) for i, docs in sorted(s.events.items()) for e in sorted(docs) if e != eid]
    index2, eid2 = _pick(d, pairs)
    s.events[index][eid], s.events[index2][eid2] = s.events[index2][eid2], doc


def m_alias_removed(s: Store, d: st.DataObject) -> None:
    s.alias.discard(_pick(d, sorted(s.alias)))


def m_block_leaf_hash(s: Store, d: st.DataObject) -> None:
    _, b = _block(s, d)
    i = d.draw(st.integers(0, len(b["leaf_hashes"]) - 1))
    b["leaf_hashes"][i] = _hash_b64(d, b["leaf_hashes"][i])


def m_block_event_id(s: Store, d: st.DataObject) -> None:
    _, b = _block(s, d)
    i = d.draw(st.integers(0, len(b["event_ids"]) - 1))
    other = [e for e in b["event_ids"] if e != b["event_ids"][i]]
    b["event_ids"][i] = _pick(d, [*other, "forged-id", b["event_ids"][i] + "x"])


def m_block_event_index(s: Store, d: st.DataObject) -> None:
    _, b = _block(s, d)
    i = d.draw(st.integers(0, len(b["event_indices"]) - 1))
    b["event_indices"][i] = _other_text(d, b["event_indices"][i])


def m_block_drop_entry(s: Store, d: st.DataObject) -> None:
    _, b = _block(s, d)
    field = _pick(d, ["event_ids", "event_indices", "leaf_hashes", "frontier"])
    if not b[field]:
        b["first_leaf"] += 1
        return
    del b[field][d.draw(st.integers(0, len(b[field]) - 1))]


def m_block_first_leaf(s: Store, d: st.DataObject) -> None:
    _, b = _block(s, d)
    old = b["first_leaf"]
    b["first_leaf"] = _pick(d, [old + 1, old + 2, 10**6] + ([old - 1] if old else []))


def m_block_frontier(s: Store, d: st.DataObject) -> None:
    _, b = _block(s, d)
    if not b["frontier"]:
        b["frontier"] = [base64.b64encode(d.draw(st.binary(min_size=32, max_size=32))).decode()]
        return
    i = d.draw(st.integers(0, len(b["frontier"]) - 1))
    b["frontier"][i] = _hash_b64(d, b["frontier"][i])


def m_checkpoint_field(s: Store, d: st.DataObject) -> None:
    _, b = _block(s, d)
    cp = b["checkpoint"]
    name = _pick(d, ["tree_size", "sequence", "timestamp_ms", "root_hash", "previous_hash"])
    if name in ("root_hash", "previous_hash"):
        cp[name] = _hash_b64(d, cp[name])
    else:
        cp[name] = cp[name] + d.draw(st.integers(1, 5))


def m_signature(s: Store, d: st.DataObject) -> None:
    _, b = _block(s, d)
    sig = bytearray(base64.b64decode(b["checkpoint"]["signature"]))
    sig[d.draw(st.integers(0, 63))] ^= 1 << d.draw(st.integers(0, 7))
    b["checkpoint"]["signature"] = base64.b64encode(bytes(sig)).decode()


def m_resigned_other_key(s: Store, d: st.DataObject) -> None:
    """A block rebuilt around a modified event and signed by a key not in the keyring."""
    doc_id, b = _block(s, d)
    rec = BlockRecord.from_document(b)
    forged = sign_checkpoint(rec.checkpoint, OTHER)
    s.blocks[doc_id] = b | {"checkpoint": forged.to_json_dict(), "key_id": forged.key_id}


def m_block_deleted(s: Store, d: st.DataObject) -> None:
    doc_id, _ = _block(s, d)
    del s.blocks[doc_id]


def m_forged_block_appended(s: Store, d: st.DataObject) -> None:
    """A new block listing a forged event, signed by an untrusted key or not at all."""
    last = max(s.blocks.values(), key=lambda b: b["sequence"])
    rec = BlockRecord.from_document(last)
    index, _, doc = _event(s, d)
    forged = {**doc, "event": {**doc["event"], "id": "forged-in-block"}}
    s.events[index]["forged-in-block"] = forged
    cr = CompactRange.from_state(rec.first_leaf, rec.frontier)
    cr.extend(list(rec.leaf_hashes))
    first, frontier = cr.state()
    lh = leaf_hash_of_document(forged)
    cr.append(lh)
    cp = make_checkpoint(
        origin=CHAIN,
        tree_size=cr.size,
        root_hash=cr.root(),
        sequence=rec.sequence + 1,
        previous_hash=rec.checkpoint.digest(),
        timestamp_ms=rec.checkpoint.timestamp_ms + 1,
    )
    signed = sign_checkpoint(cp, OTHER)
    if d.draw(st.booleans()):
        # Unsigned: the trusted key's id with no valid signature.
        signed = dataclasses.replace(signed, key_id=rec.checkpoint.key_id, signature=bytes(64))
    new = BlockRecord(
        kind=KIND_BLOCK,
        checkpoint=signed,
        first_leaf=first,
        event_ids=("forged-in-block",),
        event_indices=(index,),
        leaf_hashes=(lh,),
        frontier=frontier,
        time_range=rec.time_range,
    )
    s.blocks[new.doc_id] = new.to_document()


def m_block_field_junk(s: Store, d: st.DataObject) -> None:
    _, b = _block(s, d)
    name = _pick(d, ["event_ids", "leaf_hashes", "checkpoint", "first_leaf", "kind"])
    b[name] = _pick(d, [v for v in (None, "junk", 7, [1, 2]) if v != b[name]])


MUTATIONS: list[Callable[[Store, st.DataObject], None]] = [
    m_event_field,
    m_event_timestamp,
    m_event_ingested,
    m_event_new_field,
    m_event_delete,
    m_event_insert,
    m_event_move,
    m_event_swap,
    m_alias_removed,
    m_block_leaf_hash,
    m_block_event_id,
    m_block_event_index,
    m_block_drop_entry,
    m_block_first_leaf,
    m_block_frontier,
    m_checkpoint_field,
    m_signature,
    m_resigned_other_key,
    m_block_deleted,
    m_forged_block_appended,
    m_block_field_junk,
]


@pytest.mark.parametrize("sizes", [(3,), (4, 5, 1), (1, 2, 3, 4)])
def test_clean_model_store_verifies_clean(sizes: tuple[int, ...]) -> None:
    report = run(base_store(sizes), RING)
    assert report.ok, report.to_json_dict()
    assert report.events_checked == sum(sizes)


def test_uncovered_event_is_pending_only_until_the_deadline() -> None:
    store = base_store((3, 2)).clone()
    index = sorted(store.events)[0]
    doc = next(iter(store.events[index].values()))
    forged = {**doc, "event": {**doc["event"], "id": "forged", "ingested": "2999-01-01T00:00:00Z"}}
    store.events[index]["forged"] = forged
    scan = T0_MS + 10_000
    before = run(store, RING, scan_ms=scan, now_ms=scan + 30_999, deadline_ms=31_000)
    assert before.counts() == {} and before.events_pending == 1
    after = run(store, RING, scan_ms=scan, now_ms=scan + 31_000, deadline_ms=31_000)
    assert after.counts() == {"inserted": 1}


def test_stale_by_the_verifier_clock() -> None:
    store = base_store((3, 2))
    newest = T0_MS + 1000
    fresh = run(store, RING, now_ms=newest + 90_000, stale_after_ms=90_000)
    assert fresh.ok and not fresh.stale
    old = run(store, RING, now_ms=newest + 90_001, stale_after_ms=90_000)
    assert not old.findings and set(old.stale) == {CHAIN}


def test_since_checks_only_what_was_added_and_that_it_extends_the_anchor() -> None:
    store = base_store((3, 4, 5))
    anchor = store.external[0]
    clean = run(store, RING, anchor=anchor)
    assert clean.ok and clean.events_checked == 9 and clean.blocks_checked == 2
    # Tampering after the anchor is found; before it, it is out of scope.
    later = store.clone()
    for docs in later.events.values():
        if "evt-000004" in docs:
            docs["evt-000004"]["message"] = "changed"
    assert run(later, RING, anchor=anchor).counts() == {"modified": 1}
    tampered = store.clone()
    block = tampered.blocks[sorted(tampered.blocks)[2]]
    block["leaf_hashes"][0] = base64.b64encode(bytes(32)).decode()
    assert run(tampered, RING, anchor=anchor).findings
    # A checkpoint of another history (split view, signed by the same key) is not extended.
    forked = dataclasses.replace(anchor, root_hash=bytes(32), signature=b"")
    forked = sign_checkpoint(forked, KEY)
    split = run(store, RING, anchor=forked)
    assert split.counts().get("bad_signature") == 1, split.to_json_dict()


@settings(
    max_examples=CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=CASES <= 1000,
)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple),
    which=st.integers(0, len(MUTATIONS) - 1),
    data=st.data(),
)
def test_every_single_mutation_is_detected(
    sizes: tuple[int, ...], which: int, data: st.DataObject
) -> None:
    store = base_store(sizes).clone()
    mutation = MUTATIONS[which]
    mutation(store, data)
    COUNTED.append(mutation.__name__)
    report = run(store, RING)
    assert report.findings, f"{mutation.__name__} went undetected: {report.to_json_dict()}"
