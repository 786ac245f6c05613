"""The change feed of the scheduled verify (``indexer.integrity.changes``) against the real
Elasticsearch: every write since the mark is read, whatever the document says about its
own date; a delete or rewrite at or below the mark, a replaced, vanished or unaliased
index, or a changed ``audit-blocks`` record calls for a full verify; and a store where
nothing changed costs the same few requests whatever its size."""

from __future__ import annotations

import pytest
from elasticsearch import Elasticsearch

from indexer.indices import BLOCKS_INDEX, EVENTS_ALIAS
from indexer.integrity.changes import (
    Changes,
    IndexMark,
    ShardMark,
    Watermark,
    escalations,
    read_changes,
)
from otel_audit.integrity import leaf_hash_of_document

OLD = "audit-events-2026.01.01"


def _doc(n: int, day: str = "2026-01-01") -> dict[str, object]:
    return {"@timestamp": f"{day}T00:00:{n % 60:02d}Z", "event": {"id": f"e{n}"}, "n": n}


def _store(es: Elasticsearch, docs: int = 20) -> None:
    es.indices.create(
        index=OLD,
        settings={"number_of_shards": 2, "number_of_replicas": 0},
        aliases={EVENTS_ALIAS: {}},
    )
    es.indices.create(index=BLOCKS_INDEX, settings={"number_of_replicas": 0})
    for i in range(docs):
        es.index(index=OLD, id=f"e{i}", document=_doc(i), op_type="create")
    es.index(index=BLOCKS_INDEX, id="b0", document={"sequence": 0}, op_type="create")
    es.indices.refresh(index=f"{OLD},{BLOCKS_INDEX}")


def _ids(changes: Changes) -> list[str]:
    return sorted(i for page in changes.pages for i in page[0])


@pytest.mark.integration
def test_nothing_changed_reads_nothing(clean_es: Elasticsearch) -> None:
    es = clean_es
    _store(es, 50)
    first = read_changes(es, None)
    assert first.fetched == 0 and not first.escalate
    marks = first.watermark.indices
    assert set(marks) == {OLD, BLOCKS_INDEX}
    assert sum(s.docs for s in marks[OLD].shards) == 50
    assert len(marks[OLD].shards) == 2
    assert first.watermark.alias == frozenset({OLD})

    again = read_changes(es, first.watermark)
    assert again.fetched == 0 and again.pages == [] and again.escalate == []
    # Index settings, the alias, one multi-search over every shard.
    assert again.requests == 3
    assert again.watermark == first.watermark


@pytest.mark.integration
def test_new_documents_and_a_back_dated_index_are_read(clean_es: Elasticsearch) -> None:
    es = clean_es
    _store(es)
    mark = read_changes(es, None).watermark
    es.index(index=OLD, id="e100", document=_doc(100), op_type="create")
    # Back-dated, in a daily index of its own, outside the read alias.
    forged = _doc(7, day="2025-01-02")
    es.index(index="audit-events-2025.01.02", id="forged", document=forged, op_type="create")
    es.index(index=BLOCKS_INDEX, id="b1", document={"sequence": 1}, op_type="create")
    es.indices.refresh(index="audit-events-*," + BLOCKS_INDEX)

    changes = read_changes(es, mark)
    assert changes.escalate == []
    assert _ids(changes) == ["e100", "forged"]
    by_id = {
        eid: (index, leaf)
        for ids, indices, leaves in changes.pages
        for eid, index, leaf in zip(ids, indices, leaves, strict=True)
    }
    assert by_id["forged"] == ("audit-events-2025.01.02", leaf_hash_of_document(forged))
    # Recorded, the next read finds nothing new.
    assert read_changes(es, changes.watermark).fetched == 0


@pytest.mark.integration
def test_many_changes_are_read_in_pages_each_once(clean_es: Elasticsearch) -> None:
    es = clean_es
    _store(es, 4)
    mark = read_changes(es, None).watermark
    for i in range(100, 125):
        es.index(index=OLD, id=f"e{i}", document=_doc(i), op_type="create")
    es.indices.refresh(index=OLD)
    changes = read_changes(es, mark, page_size=3)
    assert _ids(changes) == sorted(f"e{i}" for i in range(100, 125))
    assert changes.requests > 3
    # With a reason for a full verify, no document is read (the full verify reads them).
    es.delete(index=OLD, id="e0", refresh=True)
    escalated = read_changes(es, mark, page_size=3)
    assert escalated.escalate and escalated.fetched == 0


@pytest.mark.integration
def test_an_edit_below_the_mark_calls_for_a_full_verify(
    clean_es: Elasticsearch,
) -> None:
    es = clean_es
    _store(es)
    mark = read_changes(es, None).watermark
    es.index(index=OLD, id="e3", document={**_doc(3), "n": -1}, refresh=True)
    changes = read_changes(es, mark)
    assert changes.fetched == 0, "the full verify reads it"
    assert len(changes.escalate) == 1
    assert OLD in changes.escalate[0] and "deleted or rewritten" in changes.escalate[0]


@pytest.mark.integration
def test_a_delete_below_the_mark_calls_for_a_full_verify(clean_es: Elasticsearch) -> None:
    es = clean_es
    _store(es)
    mark = read_changes(es, None).watermark
    es.delete(index=OLD, id="e5", refresh=True)
    changes = read_changes(es, mark)
    assert changes.fetched == 0
    assert len(changes.escalate) == 1 and "deleted or rewritten" in changes.escalate[0]


@pytest.mark.integration
def test_a_delete_hidden_by_a_new_document_is_still_seen(clean_es: Elasticsearch) -> None:
    es = clean_es
    _store(es)
    mark = read_changes(es, None).watermark
    es.delete(index=OLD, id="e5")
    es.index(index=OLD, id="e5b", document=_doc(5), op_type="create", refresh=True)
    assert es.count(index=OLD)["count"] == 20
    changes = read_changes(es, mark)
    assert changes.escalate, "the total count is unchanged, but not the count below the mark"


@pytest.mark.integration
def test_a_replaced_vanished_or_unaliased_index_calls_for_a_full_verify(
    clean_es: Elasticsearch,
) -> None:
    es = clean_es
    _store(es)
    es.indices.create(index="audit-events-2026.01.02", aliases={EVENTS_ALIAS: {}})
    mark = read_changes(es, None).watermark
    es.indices.delete(index=OLD)
    vanished = read_changes(es, mark)
    assert vanished.escalate == [f"index {OLD} vanished", f"index {OLD} left the read alias "
                                 f"{EVENTS_ALIAS}"]  # fmt: skip

    es.indices.create(index=OLD, aliases={EVENTS_ALIAS: {}})
    es.index(index=OLD, id="e1", document=_doc(1), refresh=True)
    replaced = read_changes(es, mark)
    assert len(replaced.escalate) == 1 and "was replaced" in replaced.escalate[0]
    # A full verify reads it: not read here as well.
    assert replaced.fetched == 0
    # Its mark counts it from the start.
    assert sum(s.docs for s in replaced.watermark.indices[OLD].shards) == 1

    es.indices.delete_alias(index="audit-events-2026.01.02", name=EVENTS_ALIAS)
    unaliased = read_changes(es, replaced.watermark)
    assert unaliased.escalate == ["index audit-events-2026.01.02 left the read alias audit-events"]


@pytest.mark.integration
def test_a_changed_block_record_calls_for_a_full_verify(clean_es: Elasticsearch) -> None:
    es = clean_es
    _store(es)
    mark = read_changes(es, None).watermark
    es.index(index=BLOCKS_INDEX, id="b0", document={"sequence": 9}, refresh=True)
    changes = read_changes(es, mark)
    assert changes.fetched == 0, "block records are not events"
    assert len(changes.escalate) == 1 and BLOCKS_INDEX in changes.escalate[0]


def test_escalations_are_pure_and_name_each_reason() -> None:
    before = Watermark(
        {
            "a": IndexMark("u1", (ShardMark(9, 10), ShardMark(-1, 0))),
            "b": IndexMark("u2", (ShardMark(4, 5),)),
            "c": IndexMark("u3", (ShardMark(0, 1),)),
        },
        frozenset({"a", "b"}),
    )
    layout = {"a": ("u1", 2), "b": ("u2-new", 1), "d": ("u4", 1)}
    reasons = escalations(before, layout, frozenset({"a", "d"}), {("a", 0): 9, ("a", 1): 0})
    assert reasons == [
        "index a shard 0: 9 documents at or below _seq_no 9, 10 recorded (deleted or rewritten)",
        "index b was replaced (uuid u2 -> u2-new, 1 -> 1 shards)",
        "index c vanished",
        "index b left the read alias audit-events",
    ]
    same = {"a": ("u1", 2), "b": ("u2", 1), "c": ("u3", 1)}
    counts = {("a", 0): 10, ("a", 1): 0, ("b", 0): 5, ("c", 0): 1}
    assert escalations(before, same, frozenset({"a", "b"}), counts) == []


def test_watermark_json_round_trip_and_malformed() -> None:
    mark = Watermark({"a": IndexMark("u", (ShardMark(3, 4), ShardMark(-1, 0)))}, frozenset({"a"}))
    assert Watermark.from_json_dict(mark.to_json_dict()) == mark
    with pytest.raises(ValueError, match="malformed watermark"):
        Watermark.from_json_dict({"indices": {"a": {"uuid": "u", "shards": [[1]]}}, "alias": []})
